import { spawn, spawnSync } from 'node:child_process';
import { accessSync, closeSync, constants, readFileSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import { Option, type Command } from 'commander';
import { defaultEtcdBinary, stopEtcd } from '../dcs/etcd-server.js';
import { KeelError } from '../errors.js';
import { checkPostgresBinaries } from '../postgres/binaries.js';
import { terminatePostmaster } from '../postgres/postmaster.js';
import { resolveRunAs } from '../postgres/programs.js';
import { LocalCluster } from '../supervisor/local-cluster.js';
import { connectionStrings, dashboardUrl, LocalLayout, maxLocalNodes, type ClusterFile, placeholderSecrets } from '../providers/local-layout.js';
import { isGuardProcess, keelBin } from '../providers/local.js';
import { createLogger, silentLogger } from '../util/log.js';
import { isAlive, readPidFile, terminate, terminateIfNamed } from '../util/process.js';
import { defaultDir } from './target.js';
import { openLogFile } from '../util/log-file.js';

interface UpOptions {
  dir: string;
  nodes?: string;
  portBase?: string;
  detach?: boolean;
  sync?: boolean;
  async?: boolean;
  supervise?: boolean;
  timeout: string;
}

function integerOption(value: string, flag: string, min: number, max: number): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new KeelError('KEEL_USAGE', `${flag} must be a whole number from ${min} to ${max} (got ${JSON.stringify(value)})`);
  }
  return n;
}

function clusterFileFrom(options: UpOptions, layout: LocalLayout): ClusterFile {
  if (options.sync && options.async) {
    throw new KeelError('KEEL_USAGE', '--sync and --async contradict each other', { hint: 'synchronous replication is the default; give --async alone to opt out' });
  }
  const wanted: ClusterFile = {
    v: 1,
    cluster: 'keel',
    nodes: integerOption(options.nodes ?? '3', '--nodes', 1, maxLocalNodes),
    portBase: integerOption(options.portBase ?? '6400', '--port-base', 1024, 65436),
    synchronousMode: options.async ? 'off' : 'on',
  };
  if (!layout.exists()) return wanted;
  // The same directory is the same cluster: its ports and size stay as they were made.
  const stored = layout.readCluster();
  const differs = (options.nodes !== undefined && wanted.nodes !== stored.nodes) || (options.portBase !== undefined && wanted.portBase !== stored.portBase);
  if (differs) {
    throw new KeelError('KEEL_USAGE', `${layout.dir} holds a cluster of ${stored.nodes} nodes on port base ${stored.portBase}`, {
      hint: 'run `keel up` without --nodes/--port-base to restart it, or use another --dir for a new cluster',
    });
  }
  return stored;
}

function summary(layout: LocalLayout, cluster: ClusterFile, leader: string): string {
  const dsn = connectionStrings(layout, cluster);
  return [
    `Keel cluster "${cluster.cluster}" is up: ${cluster.nodes} node(s), leader ${leader}, PostGIS in database "app".`,
    `  read-write: ${dsn.rw}`,
    `  read-only:  ${dsn.ro}`,
    `  pooled rw:  ${dsn.pooled} (PgBouncer, transaction pooling)`,
    `  password:   export PGPASSFILE=${layout.pgpassFile}`,
    `  try:        PGPASSFILE=${layout.pgpassFile} psql "${dsn.rw}" -c 'SELECT postgis_full_version()'`,
    `  status:     npx keel status --dir ${layout.dir}`,
    `  dashboard:  ${dashboardUrl(cluster)} (the CA is ${layout.caFiles.cert}; actions need the token in ${layout.dashboardTokenFile})`,
    `  stop:       Ctrl-C, or npx keel down --dir ${layout.dir}`,
    '',
  ].join('\n');
}

/** PostgreSQL runs as another user when Keel is root: that user must be able to enter DIR. */
function checkEnterable(dir: string, runAs: ReturnType<typeof resolveRunAs>): void {
  if (runAs === null) return;
  const result = spawnSync('test', ['-x', dir], { uid: runAs.uid, gid: runAs.gid, cwd: '/' });
  if (result.status !== 0) {
    throw new KeelError('KEEL_DIR_UNUSABLE', `OS user ${runAs.user} cannot enter ${dir} (a parent directory is closed to it)`);
  }
}

async function up(options: UpOptions): Promise<void> {
  const layout = new LocalLayout(options.dir);
  const timeoutMs = integerOption(options.timeout, '--timeout', 10, 3600) * 1000;
  const file = clusterFileFrom(options, layout);
  checkPostgresBinaries('/usr/lib/postgresql/15/bin');
  try {
    accessSync(defaultEtcdBinary, constants.X_OK);
  } catch {
    throw new KeelError('KEEL_BINARY_MISSING', `etcd is not installed (${defaultEtcdBinary})`);
  }
  const supervisorPid = readPidFile(layout.supervisorPidFile);
  if (supervisorPid !== null && isAlive(supervisorPid) && supervisorPid !== process.pid) {
    throw new KeelError('KEEL_ALREADY_RUNNING', `a cluster already runs from ${layout.dir} (supervisor PID ${supervisorPid})`);
  }
  const probe = new LocalCluster(layout, file, placeholderSecrets, silentLogger());
  await probe.checkPorts();
  const { cluster, secrets } = await layout.create(file);
  checkEnterable(layout.dir, resolveRunAs(layout.nodeConfig(cluster, secrets, 0)));

  if (options.detach && !options.supervise) {
    const log = openLogFile(layout.supervisorLog);
    const child = spawn(process.execPath, [keelBin, 'up', '--dir', layout.dir, '--supervise'], { detached: true, stdio: ['ignore', log, log] });
    closeSync(log);
    child.unref();
    const local = new LocalCluster(layout, cluster, secrets, silentLogger());
    let exited = false;
    child.once('exit', () => (exited = true));
    const ready = local.waitReady(timeoutMs);
    const died = new Promise<never>((_, reject) => {
      const timer = setInterval(() => {
        if (!exited) return;
        clearInterval(timer);
        const tail = readFileSync(layout.supervisorLog, 'utf8').trimEnd().split('\n').slice(-5).join('\n');
        reject(new KeelError('KEEL_TIMEOUT', `the cluster supervisor stopped during start:\n${tail}`));
      }, 200);
      void ready.finally(() => clearInterval(timer)).catch(() => undefined);
    });
    const view = await Promise.race([ready, died]);
    process.stdout.write(summary(layout, cluster, view.leader!.value.name));
    return;
  }

  const logger = createLogger({ component: 'supervisor', dir: layout.dir });
  const local = new LocalCluster(layout, cluster, secrets, logger, { controller: true, dashboard: true });
  await writeFile(layout.supervisorPidFile, `${process.pid}\n`);
  let stopping: Promise<void> | null = null;
  const stop = () => (stopping ??= local.stop().finally(() => rm(layout.supervisorPidFile, { force: true })));
  const stopped = new Promise<void>((resolve) => {
    const onSignal = () => {
      if (!options.supervise) process.stdout.write('\nstopping: replicas, then the leader, then etcd...\n');
      void stop().finally(resolve);
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });
  try {
    if (!options.supervise) process.stdout.write(`starting etcd and ${cluster.nodes} node(s) in ${layout.dir} ...\n`);
    await local.start();
    const view = await local.waitReady(timeoutMs);
    if (options.supervise) logger.info({ leader: view.leader!.value.name }, 'cluster ready');
    else process.stdout.write(summary(layout, cluster, view.leader!.value.name));
  } catch (err) {
    // Nothing half-done: what started is stopped again before the error is shown.
    await stop();
    throw err;
  }
  await stopped;
}

async function down(options: { dir: string }): Promise<void> {
  const layout = new LocalLayout(options.dir);
  // a directory that holds no cluster is a usage error before anything is stopped
  layout.readCluster();
  const supervisor = readPidFile(layout.supervisorPidFile);
  if (supervisor !== null && isAlive(supervisor)) await terminate(supervisor, 180_000);
  // Whatever a killed supervisor left behind, stopped by the PIDs it recorded; the controller first, or it replaces what stops.
  const dashboard = readPidFile(layout.dashboardPidFile);
  if (dashboard !== null) await terminateIfNamed(dashboard, ['dashboard'], 10_000);
  await rm(layout.dashboardPidFile, { force: true });
  const controller = readPidFile(layout.controllerPidFile);
  if (controller !== null) await terminate(controller, 10_000);
  await rm(layout.controllerPidFile, { force: true });
  const router = readPidFile(layout.routerPidFile);
  if (router !== null) await terminate(router, 10_000);
  await rm(layout.routerPidFile, { force: true });
  for (const name of layout.nodeNames()) {
    const agent = readPidFile(layout.agentPidFile(name));
    if (agent !== null) await terminate(agent, 60_000);
    // SIGINT is PostgreSQL's fast shutdown; sent only to a PID /proc shows to be this data directory's postmaster
    const postmaster = await terminatePostmaster(layout.dataDir(name), { signal: 'SIGINT', graceMs: 60_000 });
    if (postmaster.kind === 'refused' || postmaster.kind === 'unverifiable') process.stderr.write(`${name}: ${postmaster.why}: not signalled\n`);
    if (postmaster.kind === 'survived') process.stderr.write(`${name}: postmaster ${postmaster.pid} survived SIGKILL\n`);
    await rm(layout.agentPidFile(name), { force: true });
    // the guard goes last: PostgreSQL is down, nothing is left for it to fence
    const guard = readPidFile(layout.guardPidFile(name));
    if (guard !== null && isGuardProcess(guard, layout.nodeConfigFile(name))) await terminate(guard, 10_000);
    await rm(layout.guardPidFile(name), { force: true });
  }
  const etcd = readPidFile(layout.etcdPidFile);
  if (etcd !== null && isAlive(etcd)) await stopEtcd(etcd, 10_000);
  await rm(layout.etcdPidFile, { force: true });
  await rm(layout.supervisorPidFile, { force: true });
  process.stdout.write(`stopped the cluster in ${layout.dir}; its data stays there (keel up --dir ${options.dir} starts it again)\n`);
}

export function registerUp(program: Command): void {
  program
    .command('up')
    .description('start a local cluster: an embedded etcd and N PostgreSQL + PostGIS nodes')
    .option('--dir <dir>', 'where the cluster keeps its data and logs', defaultDir)
    .option('--nodes <n>', 'number of PostgreSQL nodes (default 3)')
    .option('--port-base <p>', 'every port lies in [P, P+99] (default 6400)')
    .option('--sync', 'synchronous replication (the default): a failover loses no acknowledged write while a standby is left')
    .option('--async', 'asynchronous replication: faster commits, but a failover can lose the last acknowledged writes')
    .option('--detach', 'return once the cluster is ready; stop it with `keel down`')
    .option('--timeout <seconds>', 'how long to wait for the cluster to be ready', '180')
    .addOption(new Option('--supervise').hideHelp())
    .action(up);
}

export function registerDown(program: Command): void {
  program
    .command('down')
    .description('stop a local cluster started with `keel up --detach`; its data stays')
    .option('--dir <dir>', 'the cluster directory', defaultDir)
    .action(down);
}
