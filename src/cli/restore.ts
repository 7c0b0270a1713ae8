/**
 * `keel restore`: a new local cluster from the repository of another (or a
 * repository alone), recovered to a time, a WAL position or the end of the
 * archive. The source is only read. Bad input (a target no backup reaches,
 * another cluster's repository, no key, a directory that holds a cluster)
 * gets its KEEL_* error before anything is made; a failure later removes what
 * was made.
 */
import { spawn, spawnSync } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import type { Command } from 'commander';
import { formatBytes } from '../backup/info.js';
import { recoverInto } from '../backup/recovery.js';
import { describeRepo, openRepository, type RepositorySource } from '../backup/repository.js';
import { chooseBackup, describeTarget, parseRestoreTarget } from '../backup/restore-target.js';
import type { BackupRepo } from '../config/backup.js';
import { loadNodeConfig } from '../config/load.js';
import { isKeelError, KeelError } from '../errors.js';
import { formatLsn } from '../model/lsn.js';
import { nameSchema } from '../model/names.js';
import { resolveRunAs } from '../postgres/programs.js';
import { LocalLayout, placeholderSecrets, type ClusterFile } from '../providers/local-layout.js';
import { keelBin } from '../providers/local.js';
import { LocalCluster, isReady } from '../supervisor/local-cluster.js';
import { sleep } from '../util/clock.js';
import { silentLogger } from '../util/log.js';
import { resolveTarget } from './target.js';

interface RestoreFlags {
  from?: string;
  repo?: string;
  keyFile?: string;
  stanza?: string;
  toTime?: string;
  toLsn?: string;
  latest?: boolean;
  dir?: string;
  portBase?: string;
  nodes?: string;
  name?: string;
  timeout: string;
}

/** What is restored: a repository, its key and stanza, and the cluster it belonged to when known. */
interface Source extends Omit<RepositorySource, 'runAs' | 'scratch'> {
  cluster: ClusterFile | null;
  dir: string | null;
}

function whole(value: string, flag: string, min: number, max: number): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < min || n > max) throw new KeelError('KEEL_USAGE', `${flag} must be a whole number from ${min} to ${max} (got ${JSON.stringify(value)})`);
  return n;
}

function keyFromFile(path: string): string {
  let key: string;
  try {
    key = readFileSync(path, 'utf8').trim();
  } catch (err) {
    throw new KeelError('KEEL_BACKUP_KEY_MISSING', `cannot read the key file ${path} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  if (key === '') throw new KeelError('KEEL_BACKUP_KEY_MISSING', `the key file ${path} is empty`);
  return key;
}

function sourceOf(flags: RestoreFlags): Source {
  const repoPath: BackupRepo | null = flags.repo === undefined ? null : { type: 'posix', path: resolve(flags.repo) };
  const givenKey = flags.keyFile === undefined ? null : keyFromFile(flags.keyFile);
  const keyFileSource = `the key in ${flags.keyFile}`;
  if (flags.from === undefined) {
    if (repoPath === null) throw new KeelError('KEEL_USAGE', 'give --from DIR (a cluster made by `keel up`) or --repo PATH (a repository alone)');
    return { repo: repoPath, cipherPass: givenKey, stanza: flags.stanza ?? null, owner: null, keySource: keyFileSource, cluster: null, dir: null };
  }
  const layout = new LocalLayout(flags.from);
  let cluster: ClusterFile;
  try {
    cluster = layout.readCluster();
  } catch (err) {
    throw new KeelError('KEEL_USAGE', isKeelError(err) ? err.message : `no Keel cluster in ${layout.dir}`);
  }
  // the repository the nodes archive to (their node.yml outlives their data), else the cluster's default one
  const configured = layout.nodeNames().map((name) => {
    try {
      return loadNodeConfig(layout.nodeConfigFile(name)).backup ?? null;
    } catch {
      return null;
    }
  }).find((b) => b !== null) ?? null;
  let key = givenKey;
  if (key === null) {
    const secrets = existsSync(layout.secretsFile) ? (JSON.parse(readFileSync(layout.secretsFile, 'utf8')) as Record<string, unknown>) : {};
    key = typeof secrets.backupCipher === 'string' ? secrets.backupCipher : null;
    if (key === null && configured?.cipher !== 'none') {
      throw new KeelError('KEEL_BACKUP_KEY_MISSING', `${layout.secretsFile} holds no backupCipher: the key of cluster ${cluster.cluster}'s repository is missing`);
    }
  }
  return {
    repo: repoPath ?? configured?.repo ?? { type: 'posix', path: layout.backupDir },
    cipherPass: configured?.cipher === 'none' ? null : key,
    stanza: flags.stanza ?? configured?.stanza ?? cluster.cluster,
    owner: `cluster ${cluster.cluster} (${layout.dir})`,
    keySource: givenKey === null ? `the key of cluster ${cluster.cluster} (${layout.secretsFile})` : keyFileSource,
    cluster,
    dir: layout.dir,
  };
}

/** NEW must hold no cluster, nor anything else: a restore never writes over files. */
function refuseTaken(layout: LocalLayout, source: Source): void {
  if (source.dir !== null && layout.dir === source.dir) throw new KeelError('KEEL_RESTORE_DIR_TAKEN', `--dir ${layout.dir} is the cluster restored from`);
  if (layout.exists()) throw new KeelError('KEEL_RESTORE_DIR_TAKEN', `${layout.dir} already holds a Keel cluster (${layout.readCluster().cluster})`);
  if (existsSync(layout.dir) && readdirSync(layout.dir).length > 0) throw new KeelError('KEEL_RESTORE_DIR_TAKEN', `${layout.dir} is not empty`);
}

function newName(flags: RestoreFlags, old: string): string {
  const name = flags.name ?? `${old.slice(0, 22)}_restored`;
  if (!nameSchema.safeParse(name).success) throw new KeelError('KEEL_USAGE', `--name ${JSON.stringify(name)}: ${nameSchema.safeParse(name).error!.issues[0]!.message}`);
  // its own etcd prefix: the restored system identifier never sits under the old cluster's keys
  if (name === old) throw new KeelError('KEEL_USAGE', `the restored cluster needs a name of its own, not ${old}'s`, { hint: 'give --name NAME, or leave it out for <old name>_restored' });
  return name;
}

/** PostgreSQL's OS user must be able to enter NEW, which is made in its nearest existing parent. */
function refuseUnreachable(dir: string, runAs: ReturnType<typeof resolveRunAs>): void {
  if (runAs === null) return;
  let existing = dir;
  while (!existsSync(existing)) existing = dirname(existing);
  const result = spawnSync('test', ['-x', existing], { uid: runAs.uid, gid: runAs.gid, cwd: '/' });
  if (result.status !== 0) throw new KeelError('KEEL_DIR_UNUSABLE', `OS user ${runAs.user} cannot enter ${existing}, where ${dir} would be made`);
}

/** `keel ARGS` beside this process (not blocking it: an interruption must be heard meanwhile). */
function keel(args: string[]): Promise<{ status: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [keelBin, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    const collect = (chunk: Buffer) => (output = (output + chunk.toString('utf8')).slice(-8192));
    child.stdout.on('data', collect);
    child.stderr.on('data', collect);
    child.on('error', (err) => resolve({ status: null, output: err.message }));
    child.on('close', (status) => resolve({ status, output }));
  });
}

/** Grows the new cluster to `nodes` through its spec (its controller creates them), and waits until they stream. */
async function grow(layout: LocalLayout, nodes: number, timeoutMs: number): Promise<void> {
  const target = resolveTarget({ dir: layout.dir });
  try {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const stored = await target.dcs.readSpec().catch(() => null);
      if (stored !== null && (stored.value.nodes === nodes || (await target.dcs.putSpec({ ...stored.value, nodes }, stored.modRevision)))) break;
      if (Date.now() > deadline) throw new KeelError('KEEL_TIMEOUT', 'the new cluster\'s controller wrote no spec in time');
      await sleep(300);
    }
    while (!isReady(await target.dcs.readCluster(), nodes)) {
      if (Date.now() > deadline) throw new KeelError('KEEL_TIMEOUT', `the new cluster did not reach ${nodes} streaming nodes in time`);
      await sleep(500);
    }
  } finally {
    await target.dcs.close();
  }
}

async function restore(flags: RestoreFlags): Promise<void> {
  const target = parseRestoreTarget(flags, Date.now());
  if (flags.dir === undefined) throw new KeelError('KEEL_USAGE', '--dir NEW is required: the directory of the new cluster');
  const timeoutMs = whole(flags.timeout, '--timeout', 10, 86_400) * 1000;
  const source = sourceOf(flags);
  const layout = new LocalLayout(flags.dir);
  refuseTaken(layout, source);
  const oldName = source.cluster?.cluster ?? source.stanza ?? 'keel';
  const defaultBase = source.cluster === null ? 6400 : source.cluster.portBase + (source.cluster.portBase + 100 <= 65436 ? 100 : -100);
  const file: ClusterFile = {
    v: 1,
    cluster: newName(flags, oldName),
    portBase: flags.portBase === undefined ? defaultBase : whole(flags.portBase, '--port-base', 1024, 65436),
    nodes: 1,
    synchronousMode: source.cluster?.synchronousMode ?? 'on',
  };
  const nodes = flags.nodes === undefined ? (source.cluster?.nodes ?? 3) : whole(flags.nodes, '--nodes', 1, 20);
  const runAs = resolveRunAs(layout.nodeConfig(file, placeholderSecrets, 0));
  refuseUnreachable(layout.dir, runAs);
  const scratch = mkdtempSync('/tmp/keel-restore-');
  if (runAs !== null) chownSync(scratch, runAs.uid, runAs.gid);
  // the scratch directory holds the old repository's key: it goes even when the restore is interrupted
  const interrupted = (signal: NodeJS.Signals) => {
    rmSync(scratch, { recursive: true, force: true });
    process.stderr.write(`keel restore: ${signal}: stopped; ${layout.dir} may hold a part of the new cluster (keel down --dir ${layout.dir}, then remove it)\n`);
    process.exit(130);
  };
  process.once('SIGINT', interrupted);
  process.once('SIGTERM', interrupted);
  const existed = existsSync(layout.dir);
  let made = false;
  try {
    const { pgbackrest, info } = await openRepository({ ...source, runAs, scratch });
    const backup = chooseBackup(info.backups, target);
    await new LocalCluster(layout, file, placeholderSecrets, silentLogger()).checkPorts();
    process.stdout.write(`restoring ${source.owner ?? `stanza ${info.name}`} from ${describeRepo(source.repo)}\n`);
    process.stdout.write(`  backup ${backup.label} (${backup.type}, ended ${new Date(backup.stopMs).toISOString()}, ${formatBytes(backup.sizeBytes)}), then WAL to ${describeTarget(target)}\n`);
    made = true;
    const { cluster, secrets } = await layout.create(file);
    const config = layout.nodeConfig(cluster, secrets, 0);
    await layout.writeNodeConfig(cluster, config, runAs);
    const recovered = await recoverInto(config, pgbackrest, backup, target, silentLogger(), timeoutMs);
    const replayed = recovered.redoEndLsn === null ? '(not logged)' : formatLsn(recovered.redoEndLsn);
    process.stdout.write(`  recovered in ${recovered.seconds} s: replay ended at ${replayed}, last transaction replayed ${recovered.lastTransactionAt ?? '(none logged)'}, promoted on timeline ${recovered.timeline}\n`);
    const up = await keel(['up', '--dir', layout.dir, '--detach', '--timeout', String(Math.round(timeoutMs / 1000))]);
    if (up.status !== 0) throw new KeelError('KEEL_RESTORE_FAILED', `the restored cluster did not start:\n${up.output.trim()}`);
    if (nodes > 1) await grow(layout, nodes, timeoutMs);
    process.stdout.write(`cluster ${cluster.cluster} is up in ${layout.dir} with ${nodes} node(s), on port base ${cluster.portBase}; ${source.owner ?? describeRepo(source.repo)} was only read\n`);
    process.stdout.write(`  status: keel status --dir ${layout.dir}\n  stop:   keel down --dir ${layout.dir}\n`);
  } catch (err) {
    if (made) {
      if (layout.exists()) spawnSync(process.execPath, [keelBin, 'down', '--dir', layout.dir], { encoding: 'utf8' });
      if (existed) for (const entry of readdirSync(layout.dir)) await rm(`${layout.dir}/${entry}`, { recursive: true, force: true });
      else await rm(layout.dir, { recursive: true, force: true });
    }
    if (isKeelError(err)) throw err;
    throw new KeelError('KEEL_RESTORE_FAILED', `the restore failed: ${(err as Error).message}`, { cause: err });
  } finally {
    process.off('SIGINT', interrupted);
    process.off('SIGTERM', interrupted);
    await rm(scratch, { recursive: true, force: true });
  }
}

export function registerRestore(program: Command): void {
  program
    .command('restore')
    .description('a new local cluster from the backups and archived WAL of another, to a time, a WAL position or the latest; the source is only read')
    .option('--from <dir>', 'the directory of the cluster whose repository and key to use (`keel up --dir`)')
    .option('--repo <path>', 'a repository directory instead of (or besides) the cluster\'s own')
    .option('--key-file <file>', 'a file holding the repository\'s key, for --repo alone')
    .option('--stanza <name>', 'the cluster\'s name in the repository, when it holds several')
    .option('--to-time <iso8601>', 'recover to this moment (with its zone, e.g. 2026-03-01T10:15:00Z)')
    .option('--to-lsn <lsn>', 'recover to this WAL position (e.g. 0/3000060)')
    .option('--latest', 'recover everything the archive holds')
    .option('--dir <new>', 'the new cluster\'s directory (new or empty)')
    .option('--port-base <p>', 'the new cluster\'s ports (default: the old one\'s + 100)')
    .option('--nodes <n>', 'nodes of the new cluster (default: as many as the old one was made with)')
    .option('--name <name>', 'the new cluster\'s name (default: <old name>_restored)')
    .option('--timeout <seconds>', 'how long to wait for the new cluster to be ready', '600')
    .action(restore);
}
