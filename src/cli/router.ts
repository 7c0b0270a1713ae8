import { resolve } from 'node:path';
import { Option, type Command } from 'commander';
import type { Registry } from 'prom-client';
import { nameSchema } from '../model/names.js';
import type { EtcdCredentials } from '../dcs/etcd-client.js';
import { EtcdDcs } from '../dcs/etcd.js';
import { defaultRouterId, RouterPresence } from '../router/presence.js';
import { reloadEtcdOnHangUp } from './hangup.js';
import { KeelError } from '../errors.js';
import { parseByteSize } from '../model/size.js';
import { RouterControl } from '../router/control.js';
import { defaultRouteOptions } from '../router/route.js';
import { defaultHaproxyBinary } from '../router/engines/haproxy.js';
import type { EngineOptions, ListenAddress } from '../router/engines/types.js';
import { engineFlags, startEngine, type EngineFlag } from './router-engine.js';
import { systemClock } from '../util/clock.js';
import { createLogger, type Logger } from '../util/log.js';
import { serveMetrics, type JsonRoutes, type MetricsListen, type MetricsServer } from '../util/metrics.js';
import { RouterMetrics } from '../router/metrics.js';
import { etcdCredentialsFromFlags } from './target.js';
import { addPoolOptions, holdReporter, poolSettings, startPool, withPool, type PoolFlags, type PoolSettings, type RunningPool } from './router-pool.js';

interface RouterFlags extends PoolFlags {
  etcd: string;
  cluster: string;
  etcdCacert?: string;
  etcdCert?: string;
  etcdKey?: string;
  rw: string;
  ro: string;
  engine: EngineFlag;
  roMaxLag: string;
  roFallback: boolean;
  waitTimeout: string;
  connectTimeout: string;
  firstBytesTimeout: string;
  maxConnections: string;
  haproxy: string;
  metrics?: string;
  metricsCert?: string;
  metricsKey?: string;
}

export interface RouterSettings {
  endpoints: string[];
  cluster: string;
  /** the router's own client certificate (its etcd user reads, and writes only its own routers/<id> key) */
  credentials: EtcdCredentials;
  /** auto: HAProxy where its binary is installed, builtin elsewhere */
  engine: EngineFlag;
  engineOptions: EngineOptions;
  roMaxLagBytes: number;
  roFallbackToLeader: boolean;
  haproxyBinary: string;
  /** where GET /metrics and /status listen; null for nowhere */
  metrics: MetricsListen | null;
  /** the pooled rw endpoint (PgBouncer); null without --pool */
  pool: PoolSettings | null;
}

/** `host:port`, the host possibly in brackets (IPv6). */
export function parseListenAddress(text: string, flag: string): ListenAddress {
  const match = /^(?:\[([^\]]+)\]|([^:\s]+)):(\d{1,5})$/.exec(text);
  const port = Number(match?.[3]);
  if (match === null || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new KeelError('KEEL_USAGE', `${flag} ${JSON.stringify(text)} is not host:port`, { hint: `e.g. ${flag} 127.0.0.1:6402` });
  }
  return { host: (match[1] ?? match[2])!, port };
}

/** Bytes, with PostgreSQL's units (kB, MB, GB: powers of 1024). */
function parseBytes(text: string, flag: string): number {
  const bytes = parseByteSize(text);
  if (bytes === null) {
    throw new KeelError('KEEL_USAGE', `${flag} ${JSON.stringify(text)} is not a size`, { hint: `e.g. ${flag} 16MB or ${flag} 1048576` });
  }
  return bytes;
}

export function parseSeconds(text: string, flag: string, min: number, max: number): number {
  const seconds = Number(text);
  if (text.trim() === '' || !Number.isFinite(seconds) || seconds < min || seconds > max) {
    throw new KeelError('KEEL_USAGE', `${flag} must be a number of seconds from ${min} to ${max} (got ${JSON.stringify(text)})`);
  }
  return seconds;
}

/** A whole number from min to max, for a flag. */
function parseCount(text: string, flag: string, min: number, max: number): number {
  const n = Number(text);
  if (!/^\s*\d+\s*$/.test(text) || n < min || n > max) {
    throw new KeelError('KEEL_USAGE', `${flag} must be a whole number from ${min} to ${max} (got ${JSON.stringify(text)})`);
  }
  return n;
}

export function routerSettings(flags: RouterFlags, env: NodeJS.ProcessEnv = process.env): RouterSettings {
  const endpoints = flags.etcd.split(',');
  for (const endpoint of endpoints) {
    if (!/^https?:\/\/[^/\s]+$/.test(endpoint)) {
      throw new KeelError('KEEL_USAGE', `--etcd ${endpoint} is not a URL`, { hint: 'e.g. --etcd http://127.0.0.1:2379' });
    }
  }
  if (!nameSchema.safeParse(flags.cluster).success) {
    throw new KeelError('KEEL_USAGE', `--cluster ${JSON.stringify(flags.cluster)} is not a cluster name`, { hint: 'lower-case letters, digits and _' });
  }
  const rw = parseListenAddress(flags.rw, '--rw');
  const ro = parseListenAddress(flags.ro, '--ro');
  if (rw.host === ro.host && rw.port === ro.port) throw new KeelError('KEEL_USAGE', '--rw and --ro must be different addresses');
  return {
    endpoints,
    cluster: flags.cluster,
    credentials: etcdCredentialsFromFlags(flags, env),
    engine: flags.engine,
    engineOptions: {
      rw,
      ro,
      waitTimeoutMs: Math.round(parseSeconds(flags.waitTimeout, '--wait-timeout', 0, 3600) * 1000),
      connectTimeoutMs: Math.round(parseSeconds(flags.connectTimeout, '--connect-timeout', 0.1, 60) * 1000),
      firstBytesTimeoutMs: Math.round(parseSeconds(flags.firstBytesTimeout, '--first-bytes-timeout', 0.1, 3600) * 1000),
      maxConnections: parseCount(flags.maxConnections, '--max-connections', 1, 1_000_000),
    },
    roMaxLagBytes: parseBytes(flags.roMaxLag, '--ro-max-lag'),
    roFallbackToLeader: flags.roFallback,
    haproxyBinary: flags.haproxy,
    metrics: metricsListen(flags),
    pool: poolSettings(flags),
  };
}

/** --metrics host:port, with --metrics-cert and --metrics-key for HTTPS. */
export function metricsListen(flags: { metrics?: string; metricsCert?: string; metricsKey?: string }): MetricsListen | null {
  if ((flags.metricsCert === undefined) !== (flags.metricsKey === undefined)) {
    throw new KeelError('KEEL_USAGE', '--metrics-cert and --metrics-key go together', { hint: 'the server certificate and key /metrics is served with over HTTPS' });
  }
  if (flags.metrics === undefined) {
    if (flags.metricsCert !== undefined) throw new KeelError('KEEL_USAGE', '--metrics-cert needs --metrics host:port');
    return null;
  }
  const address = parseListenAddress(flags.metrics, '--metrics');
  return { ...address, ...(flags.metricsCert === undefined || flags.metricsKey === undefined ? {} : { tls: { cert: resolve(flags.metricsCert), key: resolve(flags.metricsKey) } }) };
}

/** Listens for /metrics (and the JSON routes); a port in use is KEEL_PORT_IN_USE, unreadable TLS files KEEL_TLS_FAILED. */
export async function startMetricsServer(registries: Registry[], listen: MetricsListen, json: JsonRoutes, logger: Logger): Promise<MetricsServer> {
  let server: MetricsServer;
  try {
    server = await serveMetrics(registries, listen, json);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const where = `${listen.host}:${listen.port}`;
    if (code === 'EADDRINUSE') throw new KeelError('KEEL_PORT_IN_USE', `/metrics cannot listen on ${where}: the port is in use`, { hint: 'give --metrics another host:port' });
    if (code === 'ENOENT' || code === 'EACCES') throw new KeelError('KEEL_TLS_FAILED', `/metrics cannot read its certificate or key: ${(err as Error).message}`);
    throw new KeelError('KEEL_CONFIG_INVALID', `/metrics cannot listen on ${where}: ${(err as Error).message}`, { hint: 'give --metrics an address of this host' });
  }
  process.on('SIGHUP', () => {
    try {
      if (server.reloadTls()) logger.info({ signal: 'SIGHUP' }, '/metrics certificate read again');
    } catch (err) {
      logger.error({ signal: 'SIGHUP', err: (err as Error).message }, "kept /metrics' certificate in use");
    }
  });
  logger.info({ metrics: `${server.scheme}://${server.address}/metrics` }, 'metrics listening');
  return server;
}

async function runRouter(flags: RouterFlags): Promise<void> {
  const settings = routerSettings(flags);
  let engineDied: (detail: string) => void = () => undefined;
  const died = new Promise<string>((resolve) => (engineDied = resolve));
  const started = await startEngine(
    { requested: settings.engine, haproxyBinary: settings.haproxyBinary, engineOptions: settings.engineOptions, onExit: (detail) => engineDied(detail) },
    createLogger({ component: 'router', cluster: settings.cluster }),
  );
  const { engine } = started;
  const logger = createLogger({ component: 'router', cluster: settings.cluster, engine: engine.name });
  let pool: RunningPool | null = null;
  if (settings.pool !== null) {
    pool = await startPool(settings.pool, settings.engineOptions, logger, (detail) => engineDied(`pool: ${detail}`)).catch(async (err: unknown) => {
      await engine.stop();
      throw err;
    });
  }
  const dcs = new EtcdDcs({ endpoints: settings.endpoints, cluster: settings.cluster, requestTimeoutMs: 2000, logger, credentials: settings.credentials });
  reloadEtcdOnHangUp(dcs, logger, settings.credentials?.tls !== undefined);
  const { rw, ro } = settings.engineOptions;
  const presence = new RouterPresence(dcs, defaultRouterId(rw.port), systemClock, logger);
  const control = new RouterControl(dcs, withPool(engine, pool), systemClock, logger, {
    route: { roMaxLagBytes: settings.roMaxLagBytes, roFallbackToLeader: settings.roFallbackToLeader },
    rereadMs: 2000,
    freshnessCheckMs: 250,
    onApplied: holdReporter(pool, (holding) => void presence.report(holding)),
  });
  logger.info({ rw: `${rw.host}:${rw.port}`, ro: `${ro.host}:${ro.port}`, etcd: settings.endpoints, pid: process.pid }, 'router listening');
  const stopSignal = new Promise<string>((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });
  await control.start();
  void presence.start();
  let metricsServer: MetricsServer | null = null;
  if (settings.metrics !== null) {
    const metrics = new RouterMetrics(engine, control, settings.cluster, started.why);
    metricsServer = await startMetricsServer([metrics.registry], settings.metrics, { '/status': async () => ({ ...(await metrics.status()), pool: pool?.endpoint.status() ?? null }) }, logger).catch(async (err: unknown) => {
      await control.stop();
      await presence.stop();
      await pool?.stop();
      await engine.stop();
      await dcs.close();
      throw err;
    });
  }
  const why = await Promise.race([stopSignal, died.then((detail) => `engine: ${detail}`)]);
  logger.info({ why }, 'router stopping');
  await metricsServer?.close();
  // listeners and connections go first; etcd may be slow to say goodbye
  const controlStopped = control.stop();
  await pool?.stop();
  await engine.stop();
  await controlStopped;
  await presence.stop();
  await dcs.close();
  if (why.startsWith('engine')) throw new KeelError('KEEL_ROUTER_ENGINE_FAILED', why);
  logger.info('router stopped');
}

export function registerRouter(program: Command): void {
  const command = program
    .command('router')
    .description('one read-write and one read-only endpoint that follow the leader published in etcd')
    .requiredOption('--etcd <url>', 'etcd endpoint(s), comma-separated')
    .requiredOption('--cluster <name>', 'cluster name')
    .option('--etcd-cacert <file>', "the CA of etcd's certificate (https endpoints)")
    .option('--etcd-cert <file>', "the router's client certificate: its CN is the router's etcd user, which reads and writes only its own routers/<id> key")
    .option('--etcd-key <file>', "the router's client key (a user and password, if any, come from KEEL_ETCD_USER and KEEL_ETCD_PASSWORD)")
    .requiredOption('--rw <host:port>', 'where the read-write endpoint listens')
    .requiredOption('--ro <host:port>', 'where the read-only endpoint listens')
    .addOption(new Option('--engine <engine>', 'data plane: auto takes HAProxy where it is installed, builtin elsewhere').choices([...engineFlags]).default('auto'))
    .option('--ro-max-lag <bytes>', 'replicas further behind the leader serve no reads (kB, MB, GB accepted)', `${defaultRouteOptions.roMaxLagBytes / 1024 / 1024}MB`)
    .option('--no-ro-fallback', 'do not send reads to the leader when no replica qualifies')
    .option('--wait-timeout <seconds>', 'how long a new connection waits for a backend (no leader, switchover) before it is closed', '30')
    .option('--connect-timeout <seconds>', 'how long connecting to a backend may take', '3')
    .option('--first-bytes-timeout <seconds>', "how long a new client may take to send its first message (startup or SSLRequest) before it is closed", '10')
    .option('--max-connections <n>', 'connections each endpoint (rw, ro) holds at most; new ones beyond are closed at once', '1000')
    .option('--haproxy <path>', 'the HAProxy binary, with --engine haproxy or auto', defaultHaproxyBinary)
    .option('--metrics <host:port>', 'serve GET /metrics (Prometheus) and GET /status (routes and connections, JSON) there')
    .option('--metrics-cert <file>', 'with --metrics: serve HTTPS with this certificate')
    .option('--metrics-key <file>', 'with --metrics: the key of --metrics-cert');
  addPoolOptions(command).action(runRouter);
}
