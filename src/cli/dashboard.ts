/**
 * `keel dashboard`: the cluster's web page. With --dir (what `keel up` runs)
 * everything comes from the local cluster: HTTPS on P+5 with its web pair,
 * the operator's etcd pair, the router's /status on P+4, the operator's
 * client certificate as a way to sign in, and a token derived from the
 * cluster's key, written to DIR/dashboard-token (0600). Elsewhere each comes
 * from a flag; without --tls-cert and --tls-key it does not start.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { EtcdDcs } from '../dcs/etcd.js';
import { startDashboard, type DashboardTlsFiles } from '../dashboard/server.js';
import { dashboardTokenFromKey } from '../dashboard/session.js';
import { KeelError } from '../errors.js';
import { dashboardUrl, etcdUsers, portOffsets, type LocalLayout } from '../providers/local-layout.js';
import { systemClock } from '../util/clock.js';
import { createLogger } from '../util/log.js';
import { writeFileNoFollow } from '../util/safe-file.js';
import { localLimits, unknownLimits } from './controller.js';
import { reloadEtcdOnHangUp } from './hangup.js';
import { parseListenAddress } from './router.js';
import { etcdCredentialsFromFlags, resolveTarget, withTargetOptions, type TargetOptions } from './target.js';

interface DashboardFlags extends TargetOptions {
  listen?: string;
  tlsCert?: string;
  tlsKey?: string;
  clientCa?: string;
  operatorCn?: string;
  tokenFile?: string;
  router?: string;
  routerCa?: string;
}

interface Settings {
  cluster: string;
  endpoints: string[];
  credentials: ReturnType<typeof etcdCredentialsFromFlags>;
  listen: { host: string; port: number };
  tls: DashboardTlsFiles;
  operatorCommonName: string | null;
  token: string | undefined;
  router: { url: string; ca: Buffer | null } | null;
  local: boolean;
  layout: LocalLayout | null;
}

function readText(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new KeelError('KEEL_CONFIG_UNREADABLE', `cannot read ${what} ${path}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
  }
}

function readToken(path: string): string {
  const token = readText(path, 'the token file').trim();
  if (token.length < 32) throw new KeelError('KEEL_CONFIG_INVALID', `the token in ${path} is shorter than 32 characters`, { hint: 'e.g. openssl rand -base64 32 > token' });
  return token;
}

function settingsOf(flags: DashboardFlags): Settings {
  const target = resolveTarget(flags);
  void target.dcs.close();
  const layout = target.layout;
  if (layout !== null) {
    const given = (['tlsCert', 'tlsKey', 'clientCa', 'operatorCn', 'tokenFile', 'router', 'routerCa'] as const).filter((name) => flags[name] !== undefined);
    if (given.length > 0) throw new KeelError('KEEL_USAGE', `--${given[0]!.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)} goes with --etcd: a local cluster (--dir) has its own`, { hint: 'leave it out, or name the cluster with --etcd and --cluster' });
    const file = layout.readCluster();
    const url = new URL(dashboardUrl(file));
    const custom = flags.listen === undefined ? null : parseListenAddress(flags.listen, '--listen');
    return {
      cluster: file.cluster,
      endpoints: [layout.etcdEndpoint(file)],
      credentials: { tls: layout.clientTls('operator') },
      listen: custom ?? { host: url.hostname, port: Number(url.port) },
      tls: { cert: layout.webServerFiles.cert, key: layout.webServerFiles.key, clientCa: layout.caFiles.cert },
      operatorCommonName: etcdUsers(file.cluster).operator,
      token: dashboardTokenFromKey(layout.readSecrets().apiToken),
      router: { url: `https://127.0.0.1:${file.portBase + portOffsets.routerApi}`, ca: readFileSync(layout.caFiles.cert) },
      local: true,
      layout,
    };
  }
  if (flags.listen === undefined) throw new KeelError('KEEL_USAGE', '--listen host:port is needed with --etcd', { hint: 'e.g. --listen 127.0.0.1:6405' });
  if (flags.tlsCert === undefined || flags.tlsKey === undefined) {
    throw new KeelError('KEEL_USAGE', 'the dashboard serves HTTPS only: give --tls-cert and --tls-key', { hint: 'a server certificate for the address browsers use, issued by a CA they trust' });
  }
  return {
    cluster: target.cluster,
    endpoints: flags.etcd!.split(','),
    credentials: etcdCredentialsFromFlags(flags, process.env),
    listen: parseListenAddress(flags.listen, '--listen'),
    tls: { cert: resolve(flags.tlsCert), key: resolve(flags.tlsKey), clientCa: flags.clientCa === undefined ? null : resolve(flags.clientCa) },
    operatorCommonName: flags.clientCa === undefined ? null : (flags.operatorCn ?? etcdUsers(target.cluster).operator),
    token: flags.tokenFile === undefined ? undefined : readToken(flags.tokenFile),
    router: flags.router === undefined ? null : { url: flags.router, ca: flags.routerCa === undefined ? null : Buffer.from(readText(flags.routerCa, 'the router CA')) },
    local: false,
    layout: null,
  };
}

async function run(flags: DashboardFlags): Promise<void> {
  const settings = settingsOf(flags);
  if (flags.router !== undefined && !/^https?:\/\/[^/\s]+\/?$/.test(flags.router)) throw new KeelError('KEEL_USAGE', `--router ${flags.router} is not a URL`, { hint: 'the router\'s --metrics address, e.g. https://10.0.0.5:6404' });
  const logger = createLogger({ component: 'dashboard', cluster: settings.cluster });
  if (settings.layout !== null && settings.token !== undefined) {
    await writeFileNoFollow(settings.layout.dashboardTokenFile, `${settings.token}\n`, 0o600, null);
  }
  if (settings.token === undefined && settings.operatorCommonName === null) logger.warn('no --token-file and no --client-ca: the page shows the cluster, and nobody can act through it');
  const dcs = new EtcdDcs({ endpoints: settings.endpoints, cluster: settings.cluster, requestTimeoutMs: 2000, logger, credentials: settings.credentials });
  reloadEtcdOnHangUp(dcs, logger, settings.credentials.tls !== undefined);
  const dashboard = await startDashboard(
    {
      cluster: settings.cluster,
      dcs,
      token: settings.token,
      operatorCommonName: settings.operatorCommonName,
      limits: settings.local ? localLimits : unknownLimits,
      router: settings.router,
      backups: null,
      clock: systemClock,
      logger,
    },
    settings.listen,
    settings.tls,
  ).catch(async (err: unknown) => {
    await dcs.close();
    throw err;
  });
  process.on('SIGHUP', () => {
    try {
      dashboard.reloadTls();
      logger.info({ signal: 'SIGHUP' }, 'the dashboard certificate read again: new connections use it');
    } catch (err) {
      logger.error({ signal: 'SIGHUP', err: (err as Error).message }, 'kept the dashboard certificate in use');
    }
  });
  logger.info({ url: dashboard.url, pid: process.pid }, 'dashboard listening');
  await new Promise<void>((done) => {
    process.once('SIGTERM', done);
    process.once('SIGINT', done);
  });
  logger.info('dashboard stopping');
  await dashboard.close();
  await dcs.close();
}

export function registerDashboard(program: Command): void {
  withTargetOptions(program.command('dashboard').description("the cluster's web page: members by zone, router, controller, events live; switchover, scale and config from the page"))
    .option('--listen <host:port>', 'where to serve HTTPS (with --dir: 127.0.0.1:P+5)')
    .option('--tls-cert <file>', 'the server certificate (with --dir: DIR/tls/web.crt)')
    .option('--tls-key <file>', 'its key')
    .option('--client-ca <file>', "ask browsers for a client certificate of this CA: the operator's signs in")
    .option('--operator-cn <name>', "the CN of the operator's certificate (default CLUSTER-operator)")
    .option('--token-file <file>', 'the token that signs in and acts (32 characters or more; with --dir: DIR/dashboard-token, made for you)')
    .option('--router <url>', "a router's --metrics address, whose /status shows its connections")
    .option('--router-ca <file>', "the CA of the router's certificate")
    .action(run);
}
