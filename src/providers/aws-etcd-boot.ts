/**
 * The part of an etcd member's boot that writes files and talks to etcd, run
 * by its user data (aws-etcd-userdata.ts) once the secrets are in a root-only
 * staging directory:
 *
 *   node /opt/keel/dist/providers/aws-etcd-boot.js etcd|controller \
 *        --options /etc/keel/aws-etcd.json --staging DIR [--root PREFIX]
 *
 * `etcd` writes etcd's CA and pair (the key 0600, the etcd user's) and
 * /etc/default/etcd, after deciding (aws-etcd-member.ts) whether the member
 * starts a new cluster or joins the one that runs, re-adding itself first if
 * it was replaced. `controller` waits until the member has a quorum, sets up
 * etcd's users and roles (any member may, one suffices), and writes what
 * keel-controller.service reads: keel-aws.yml, aws-launch.json, the CA and
 * the controller's etcd client pair (the key 0600 root), controller.env.
 */
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import type { TlsFiles } from '../config/schema.js';
import { KeelError, describeError } from '../errors.js';
import { createLogger, type Logger } from '../util/log.js';
import { isMainModule } from '../util/main-module.js';
import { systemUser } from '../util/os-user.js';
import { isAlive, readPidFile } from '../util/process.js';
import { ensureDirNoFollow } from '../util/safe-dir.js';
import { writeFileNoFollow, type FileOwner } from '../util/safe-file.js';
import { changeMembership, observeRunningCluster, setUpEtcdAuthWithRetries, waitForQuorum } from './aws-etcd-cluster.js';
import { clientUrlOf, decideEtcdJoin, etcdEnvironmentFile, etcdSettings, initialCluster, peerUrlOf, type EtcdJoin } from './aws-etcd-member.js';
import { awsEtcdPaths, etcdClientEndpoints, parseAwsEtcdMemberOptions, type AwsEtcdMember, type EtcdSecretKey } from './aws-etcd-userdata.js';
import { etcdUsers } from './local-layout.js';

export interface AwsEtcdBootRequest {
  optionsFile: string;
  stagingDir: string;
  /** a prefix for every path (the test harness); '' on an instance */
  root: string;
  /** the OS user etcd runs as; null: the files stay root's (a test host runs etcd as root) */
  etcdOwner: FileOwner | null;
  logger: Logger;
}

const rootOwner: FileOwner = { uid: 0, gid: 0 };
const asRoot = (): FileOwner | null => (process.getuid?.() === 0 ? rootOwner : null);

async function readStaged(dir: string, key: EtcdSecretKey): Promise<string> {
  try {
    return await readFile(join(dir, key), 'utf8');
  } catch (err) {
    throw new KeelError('KEEL_CONFIG_INVALID', `the boot fetched no ${key} (${(err as NodeJS.ErrnoException).code ?? 'error'})`, {
      hint: 'check that its SSM parameter exists and that the instance role may read it',
    });
  }
}

/** A certificate that goes with its key, and names `address` or has `commonName`: refused early, with what is wrong. */
export function checkPair(what: string, certPem: string, keyPem: string, expect: { address?: string; commonName?: string }): void {
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(certPem);
  } catch (err) {
    throw new KeelError('KEEL_TLS_FAILED', `${what}.crt is not a certificate: ${describeError(err)}`);
  }
  if (expect.address !== undefined && cert.checkIP(expect.address) === undefined) {
    throw new KeelError('KEEL_TLS_FAILED', `${what}.crt does not name this member's address ${expect.address} (its names: ${cert.subjectAltName ?? 'none'})`, {
      hint: "issue the member's certificate for its fixed address and store it in its SSM parameter",
    });
  }
  if (expect.commonName !== undefined && !cert.subject.split('\n').includes(`CN=${expect.commonName}`)) {
    throw new KeelError('KEEL_TLS_FAILED', `${what}.crt is not for ${expect.commonName} (its subject: ${cert.subject.replace(/\n/g, ', ')})`, {
      hint: "etcd takes a client's user from its certificate's CN: issue it with that name",
    });
  }
  if (!cert.checkPrivateKey(createPrivateKey(keyPem))) throw new KeelError('KEEL_TLS_FAILED', `${what}.key is not the key of ${what}.crt`);
}

async function loadRequest(request: AwsEtcdBootRequest): Promise<{ options: AwsEtcdMember; staged: (key: EtcdSecretKey) => Promise<string> }> {
  const options = parseAwsEtcdMemberOptions(JSON.parse(await readFile(request.optionsFile, 'utf8')));
  return { options, staged: (key) => readStaged(request.stagingDir, key) };
}

/** etcd's CA and pair as the member's own files (its TLS for the checks and changes below too). */
function etcdTlsFiles(root: string): TlsFiles {
  const dir = `${root}${awsEtcdPaths.etcdTlsDir}`;
  return { ca: `${dir}/ca.crt`, cert: `${dir}/server.crt`, key: `${dir}/server.key` };
}

const oneLine = (text: string): string => text.replace(/\r?\n$/, '');

/** Writes etcd's pair and /etc/default/etcd, changing the cluster's membership first for a replaced member. */
export async function configureEtcdMember(request: AwsEtcdBootRequest): Promise<EtcdJoin> {
  const { root } = request;
  const { options, staged } = await loadRequest(request);
  const [ca, cert, key, rootPassword] = await Promise.all([staged('ca.crt'), staged('server.crt'), staged('server.key'), staged('etcd-root-password')]);
  checkPair('server', cert, key, { address: options.member.address });

  const tls = etcdTlsFiles(root);
  await ensureDirNoFollow(`${root}${awsEtcdPaths.configDir}`, 0o755, asRoot());
  await ensureDirNoFollow(`${root}${awsEtcdPaths.etcdTlsDir}`, 0o755, asRoot());
  await writeFileNoFollow(tls.ca, ca, 0o644, asRoot());
  await writeFileNoFollow(tls.cert, cert, 0o644, asRoot());
  await writeFileNoFollow(tls.key, key, 0o600, request.etcdOwner);
  const dataDir = `${root}${awsEtcdPaths.dataDir}`;
  await ensureDirNoFollow(dirname(dataDir), 0o700, request.etcdOwner);
  await ensureDirNoFollow(dataDir, 0o700, request.etcdOwner);

  const self = { name: options.member.name, peerUrl: peerUrlOf(options.member.address) };
  const hasData = existsSync(join(dataDir, 'member'));
  const others = options.members.filter((m) => m.name !== self.name).map((m) => clientUrlOf(m.address));
  const running = hasData ? null : await observeRunningCluster(others, tls, oneLine(rootPassword));
  const decision = decideEtcdJoin({ self, hasData, running: running?.members ?? null });
  request.logger.info({ state: decision.state }, `etcd member ${self.name}: ${decision.reason}`);
  let members = running?.members ?? null;
  if (running !== null && (decision.removeId !== null || decision.add)) {
    members = await changeMembership(running.endpoint, tls, oneLine(rootPassword), decision, self.peerUrl);
  }

  const settings = etcdSettings({
    name: self.name,
    cluster: options.cluster,
    address: options.member.address,
    dataDir,
    tls,
    initialCluster: initialCluster(self.name, options.members, decision.state === 'new' ? null : members),
    state: decision.state,
  });
  const header = `etcd member ${self.name} of Keel cluster ${options.cluster}: written at boot by aws-etcd-boot.js (no secret)\n${decision.reason}`;
  await ensureDirNoFollow(dirname(`${root}${awsEtcdPaths.etcdEnv}`), 0o755, asRoot());
  await writeFileNoFollow(`${root}${awsEtcdPaths.etcdEnv}`, etcdEnvironmentFile(settings, header), 0o644, asRoot());
  return decision;
}

/** Once the member has a quorum: etcd's users and roles, then the controller's files. Returns how many auth steps it took. */
export async function prepareController(request: AwsEtcdBootRequest, waitMs: number): Promise<number> {
  const { root } = request;
  const { options, staged } = await loadRequest(request);
  const [controllerCert, controllerKey, rootPassword] = await Promise.all([staged('controller.crt'), staged('controller.key'), staged('etcd-root-password')]);
  const users = etcdUsers(options.cluster);
  checkPair('controller', controllerCert, controllerKey, { commonName: users.controller });

  const tls = etcdTlsFiles(root);
  const own = clientUrlOf(options.member.address);
  // a test host's etcd is a process of the boot's: if it died, waiting on is pointless (a unit is restarted by systemd)
  const pid = readPidFile(`${root}${awsEtcdPaths.etcdPidFile}`);
  const exited = (): string | null => (pid !== null && !isAlive(pid) ? `exited (pid ${pid}); see ${root}${awsEtcdPaths.etcdLog}` : null);
  await waitForQuorum(own, tls, waitMs, exited);
  // through this member alone: it has just shown a quorum, where another may still be starting
  const steps = await setUpEtcdAuthWithRetries({ endpoints: [own], cluster: options.cluster, users, rootPassword: oneLine(rootPassword), tls, logger: request.logger });

  const owner = asRoot();
  const tlsDir = `${root}${awsEtcdPaths.tlsDir}`;
  await ensureDirNoFollow(tlsDir, 0o755, owner);
  await writeFileNoFollow(`${tlsDir}/ca.crt`, await readFile(tls.ca), 0o644, owner);
  await writeFileNoFollow(`${tlsDir}/controller.crt`, controllerCert, 0o644, owner);
  // root's: keel-controller.service hands it to its dynamic user through LoadCredential
  await writeFileNoFollow(`${tlsDir}/controller.key`, controllerKey, 0o600, owner);
  await writeFileNoFollow(`${root}${awsEtcdPaths.deployment}`, options.deploymentYaml, 0o644, owner);
  await writeFileNoFollow(`${root}${awsEtcdPaths.launch}`, `${JSON.stringify(options.controllerLaunch, null, 2)}\n`, 0o644, owner);
  const env = [`KEEL_ETCD=${etcdClientEndpoints(options).join(',')}`, `KEEL_CLUSTER=${options.cluster}`, `KEEL_CONTROLLER_NAME=${options.member.name}`, ''];
  await writeFileNoFollow(`${root}${awsEtcdPaths.controllerEnv}`, env.join('\n'), 0o644, owner);
  return steps;
}

async function etcdOwner(root: string): Promise<FileOwner | null> {
  // a test host runs etcd as a root process; an instance as the etcd user of Debian's etcd-server
  if (root !== '') return null;
  const owner = await systemUser('etcd');
  if (owner === null) throw new KeelError('KEEL_BINARY_MISSING', 'there is no etcd OS user: is etcd-server installed?');
  return owner;
}

async function main(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { options: { type: 'string' }, staging: { type: 'string' }, root: { type: 'string', default: '' }, 'wait-seconds': { type: 'string', default: '1800' } },
    strict: true,
  });
  const step = positionals[0];
  const waitSeconds = Number(values['wait-seconds']);
  if ((step !== 'etcd' && step !== 'controller') || positionals.length !== 1 || !values.options || !values.staging || !(waitSeconds > 0)) {
    throw new KeelError('KEEL_USAGE', 'aws-etcd-boot.js needs etcd|controller --options FILE --staging DIR [--root PREFIX] [--wait-seconds N]');
  }
  const root = values.root ?? '';
  const request: AwsEtcdBootRequest = {
    optionsFile: values.options,
    stagingDir: values.staging,
    root,
    etcdOwner: await etcdOwner(root),
    logger: createLogger({ component: 'etcd-boot' }),
  };
  if (step === 'etcd') {
    const join = await configureEtcdMember(request);
    process.stderr.write(`keel-boot: wrote ${root}${awsEtcdPaths.etcdEnv} (initial cluster state ${join.state})\n`);
  } else {
    const steps = await prepareController(request, waitSeconds * 1000);
    process.stderr.write(`keel-boot: etcd auth in place (${steps} step${steps === 1 ? '' : 's'} here); wrote the controller's files\n`);
  }
}

if (isMainModule(import.meta.url)) {
  main(process.argv.slice(2)).catch((err: unknown) => {
    process.stderr.write(err instanceof KeelError ? `${err.render()}\n` : `${describeError(err)}\n`);
    process.exitCode = err instanceof KeelError ? err.exitStatus : 1;
  });
}
