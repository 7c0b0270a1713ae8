/**
 * `keel backup now|list|check`: backups of a local cluster with pgBackRest,
 * run as PostgreSQL's OS user where the nodes' files are.
 */
import { hostname } from 'node:os';
import type { Command } from 'commander';
import { formatBytes, type BackupSet, type BackupType } from '../backup/info.js';
import { Pgbackrest } from '../backup/pgbackrest.js';
import { backupMembers, runBackup } from '../backup/runner.js';
import { loadNodeConfig } from '../config/load.js';
import type { NodeConfig } from '../config/schema.js';
import { KeelError } from '../errors.js';
import type { LocalLayout } from '../providers/local-layout.js';
import { systemClock } from '../util/clock.js';
import { silentLogger } from '../util/log.js';
import { table } from './table.js';
import { resolveTarget, withTargetOptions, type Target, type TargetOptions } from './target.js';

const types: BackupType[] = ['full', 'diff', 'incr'];

/** The cluster's files on this machine: backups need them (pgBackRest reaches the nodes over their local sockets). */
function localLayout(target: Target): LocalLayout {
  if (target.layout === null) {
    throw new KeelError('KEEL_USAGE', 'keel backup runs where the nodes\' files are: give --dir (a cluster started by `keel up`)');
  }
  return target.layout;
}

function configOf(layout: LocalLayout): (member: string) => NodeConfig {
  return (member) => {
    const config = loadNodeConfig(layout.nodeConfigFile(member));
    if (config.backup === undefined) {
      throw new KeelError('KEEL_BACKUP_UNCONFIGURED', `${member} has no backup block in ${layout.nodeConfigFile(member)}`);
    }
    return config;
  };
}

async function withTarget<T>(options: TargetOptions, work: (target: Target, layout: LocalLayout) => Promise<T>): Promise<T> {
  const target = resolveTarget(options);
  try {
    return await work(target, localLayout(target));
  } finally {
    await target.dcs.close();
  }
}

/** Progress for a person: one updating line on a terminal, a line every 10 % otherwise. */
function progressPrinter(): (percent: number) => void {
  let shown = -1;
  return (percent) => {
    if (process.stdout.isTTY) {
      process.stdout.write(`\r  ${percent.toFixed(1)} % of the files copied`);
      return;
    }
    const step = Math.floor(percent / 10) * 10;
    if (step <= shown) return;
    shown = step;
    process.stdout.write(`  ${step} % of the files copied\n`);
  };
}

const isoSeconds = (ms: number) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');

function describeBackup(b: BackupSet): string {
  return `${b.type} backup ${b.label}: ${formatBytes(b.sizeBytes)} of data (${formatBytes(b.deltaBytes)} copied, ${formatBytes(b.repoBytes)} in the repository), WAL ${b.walStart} to ${b.walStop}`;
}

async function now(options: TargetOptions & { type: string }): Promise<void> {
  if (!types.includes(options.type as BackupType)) throw new KeelError('KEEL_USAGE', `--type must be one of ${types.join(', ')} (got ${JSON.stringify(options.type)})`);
  const type = options.type as BackupType;
  await withTarget(options, async (target, layout) => {
    const spec = await target.dcs.readSpec();
    const retentionFull = spec?.value.backup?.retentionFull;
    const progress = progressPrinter();
    const result = await runBackup({
      dcs: target.dcs,
      by: `cli ${hostname()}-${process.pid}`,
      type,
      ...(retentionFull === undefined ? {} : { retentionFull }),
      configOf: configOf(layout),
      clock: systemClock,
      logger: silentLogger(),
      onStart: (members) => {
        const from = members.standby === null ? `the leader ${members.leader.name} (no replica streams)` : `${members.standby.name}, a standby of ${members.leader.name}`;
        process.stdout.write(`taking ${type === 'incr' ? 'an' : 'a'} ${type} backup of cluster ${target.cluster} from ${from} ...\n`);
      },
      onProgress: progress,
    });
    if (process.stdout.isTTY) process.stdout.write('\n');
    process.stdout.write(`${describeBackup(result.backup)}; took ${result.seconds} s\n`);
  });
}

/** Any node's configuration: each knows the repository and its key. */
function anyNodeConfig(layout: LocalLayout): NodeConfig {
  const name = layout.nodeNames()[0];
  if (name === undefined) throw new KeelError('KEEL_NOT_RUNNING', `no node in ${layout.dir}`);
  return configOf(layout)(name);
}

async function list(options: TargetOptions & { json?: boolean }): Promise<void> {
  const target = resolveTarget(options);
  await target.dcs.close();
  const config = anyNodeConfig(localLayout(target));
  const info = await Pgbackrest.forNode(config).info();
  if (options.json) {
    process.stdout.write(`${JSON.stringify({ stanza: info.name, status: info.statusMessage, systemId: info.systemId, archive: { min: info.archiveMin, max: info.archiveMax }, backups: info.backups }, null, 2)}\n`);
    return;
  }
  const repo = config.backup!.repo;
  const where = repo.type === 'posix' ? repo.path : `s3://${repo.bucket}${repo.path}`;
  process.stdout.write(`stanza ${info.name} in ${where} (${config.backup!.cipher === 'none' ? 'not encrypted' : 'encrypted'}); WAL archive ${info.archiveMin ?? '-'} to ${info.archiveMax ?? '-'}\n`);
  if (info.backups.length === 0) {
    process.stdout.write(`no backup yet (${info.statusMessage}): keel backup now --dir ${options.dir ?? '.keel'}\n`);
    return;
  }
  process.stdout.write(
    table(
      ['label', 'type', 'started', 'stopped', 'size', 'in repo', 'WAL start', 'WAL stop'],
      info.backups.map((b) => [b.label, b.type, isoSeconds(b.startMs), isoSeconds(b.stopMs), formatBytes(b.sizeBytes), formatBytes(b.repoBytes), b.walStart, b.walStop]),
    ),
  );
}

async function check(options: TargetOptions): Promise<void> {
  await withTarget(options, async (target, layout) => {
    const members = backupMembers(await target.dcs.readCluster());
    if (members === null) throw new KeelError('KEEL_NO_LEADER', `cluster ${target.cluster} has no leader: archiving can only be checked on a primary`);
    const pgbackrest = Pgbackrest.forNode(configOf(layout)(members.leader.name));
    await pgbackrest.check();
    process.stdout.write(`ok: the repository of stanza ${pgbackrest.stanza} is readable and a WAL switch on the leader ${members.leader.name} reached it through archive_command\n`);
  });
}

export function registerBackup(program: Command): void {
  const backup = program.command('backup').description('backups with pgBackRest: take one now, list them, check the repository and archiving');
  withTargetOptions(backup.command('now').description('take a backup now, from a streaming replica (else the leader), showing its progress'))
    .option('--type <type>', 'full, diff (changes since the last full) or incr (since the last backup)', 'full')
    .action(now);
  withTargetOptions(backup.command('list').description('the backups in the repository: label, type, times, sizes, the WAL each needs'))
    .option('--json', 'machine-readable output')
    .action(list);
  withTargetOptions(backup.command('check').description("check the repository and that the leader's WAL reaches it")).action(check);
}
