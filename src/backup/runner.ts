/**
 * Taking one backup: from a replica that streams from the leader (pgBackRest's
 * backup-standby: the primary starts and stops the backup, the files come from
 * the replica), else from the leader itself. pgBackRest reaches both over
 * their local sockets, so the runner works where the nodes' files are.
 */
import type { NodeConfig } from '../config/schema.js';
import type { Dcs } from '../dcs/types.js';
import { describeError, KeelError } from '../errors.js';
import type { ClusterView, MemberValue } from '../model/values.js';
import { nodeLayout } from '../postgres/conf.js';
import { checkpointIfTimelineLags, type Connection } from '../postgres/sql.js';
import { sleep, type Clock } from '../util/clock.js';
import type { Logger } from '../util/log.js';
import { pgOptions } from './conf.js';
import { formatBytes, lastProgressPercent, type BackupSet, type BackupType } from './info.js';
import { claimBackupLock } from './lock.js';
import { isLockBusy, Pgbackrest } from './pgbackrest.js';

/** The members a backup is taken with: the leader, and the replica the files come from (null: the leader's own). */
export interface BackupMembers {
  leader: MemberValue;
  standby: MemberValue | null;
}

/**
 * The leader running as primary, and the replica that streams from it on its timeline with the least
 * lag (one being drained before its removal is left alone); null when no leader runs. Pure.
 */
export function backupMembers(view: ClusterView): BackupMembers | null {
  const leader = view.members.find((m) => m.name === view.leader?.value.name && m.role === 'primary');
  if (leader === undefined) return null;
  const draining = new Set(view.draining.map((d) => d.name));
  const replay = (m: MemberValue) => m.replayedLsn ?? 0;
  const standbys = view.members
    .filter((m) => m.role === 'replica' && m.streaming && m.upstream === leader.name && m.timeline === leader.timeline && !draining.has(m.name))
    .sort((a, b) => replay(b) - replay(a) || a.name.localeCompare(b.name));
  return { leader, standby: standbys[0] ?? null };
}

export interface TakeBackupOptions {
  type: BackupType;
  /** full backups to keep (pgBackRest expires the older ones, and the WAL only they needed) */
  retentionFull?: number;
  /** percent of the files copied so far */
  onProgress?: (percent: number) => void;
  signal?: AbortSignal;
}

function optionWords(options: [string, string | number][]): string[] {
  return options.map(([name, value]) => `--${name}=${value}`);
}

/** pgBackRest's info status of a repository without the stanza */
const missingStanza = 1;

/** stanza-create, waiting a little while the asynchronous push of the first WAL holds pgBackRest's lock. */
async function stanzaCreate(pgbackrest: Pgbackrest, hosts: string[], signal: AbortSignal | undefined): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await pgbackrest.run('stanza-create', hosts, { signal });
      return;
    } catch (err) {
      if (attempt >= 10 || signal?.aborted || !isLockBusy((err as Error).message)) throw err;
      await sleep(1000);
    }
  }
}

/** The superuser over the node's local socket. */
export function localSuperuser(config: NodeConfig): Connection {
  const { superuser } = config.postgres;
  return { host: nodeLayout(config).socketDir, port: config.postgres.port, user: superuser.username, password: superuser.password };
}

/** Runs pgBackRest's backup with `primary` and `standby` node configurations; returns the new backup. */
export async function takeBackup(primary: NodeConfig, standby: NodeConfig | null, options: TakeBackupOptions, logger: Logger): Promise<BackupSet> {
  const pgbackrest = Pgbackrest.forNode(standby ?? primary);
  // right after a promotion pg_control still names the old timeline, which pgBackRest refuses
  await checkpointIfTimelineLags(localSuperuser(primary), logger);
  const hosts = standby === null ? [] : [...optionWords(pgOptions(primary, nodeLayout(primary), 1)), ...optionWords(pgOptions(standby, nodeLayout(standby), 2))];
  // a stanza not made yet (a backup right after the bootstrap, before the leader's agent made it) is made here
  if ((await pgbackrest.info()).statusCode === missingStanza) await stanzaCreate(pgbackrest, hosts, options.signal);
  const args = [`--type=${options.type}`, '--log-level-console=detail', ...hosts, ...(standby === null ? [] : ['--backup-standby'])];
  if (options.retentionFull !== undefined) args.push(`--repo1-retention-full=${options.retentionFull}`);
  let partial = '';
  const output = await pgbackrest.run('backup', args, {
    signal: options.signal,
    onOutput: (text) => {
      // progress sits at the end of each `backup file` line: only whole lines are read
      const lines = (partial + text).split('\n');
      partial = lines.pop() ?? '';
      const percent = lastProgressPercent(lines.join('\n'));
      if (percent !== null) options.onProgress?.(percent);
    },
  });
  const label = /new backup label = (\S+)/.exec(output)?.[1];
  const info = await pgbackrest.info();
  const taken = info.backups.find((b) => b.label === label) ?? info.backups[info.backups.length - 1];
  if (taken === undefined) throw new KeelError('KEEL_BACKUP_FAILED', 'pgbackrest backup ended but the repository lists no backup');
  return taken;
}

export interface RunBackupOptions extends Omit<TakeBackupOptions, 'signal'> {
  dcs: Dcs;
  /** who runs it, for the lock and the events: `cli host-pid`, `controller NAME` */
  by: string;
  /** the node.yml of a member (its files are on this machine) */
  configOf: (member: string) => NodeConfig;
  clock: Clock;
  logger: Logger;
  /** told once the lock is held and the backup starts */
  onStart?: (members: BackupMembers) => void;
  /** stops the backup from outside (the controller standing down) */
  signal?: AbortSignal;
}

/**
 * One backup under the cluster's lock, with an event when it is taken or fails. KEEL_BACKUP_BUSY when
 * another runs; KEEL_NO_LEADER without a leader to start it.
 */
export async function runBackup(options: RunBackupOptions): Promise<{ backup: BackupSet; members: BackupMembers; seconds: number }> {
  const { dcs, clock, logger } = options;
  const members = backupMembers(await dcs.readCluster());
  if (members === null) throw new KeelError('KEEL_NO_LEADER', 'no leader runs: a backup needs one to start and stop it');
  const primary = options.configOf(members.leader.name);
  const standby = members.standby === null ? null : options.configOf(members.standby.name);
  const source = members.standby ?? members.leader;
  const claim = await claimBackupLock(dcs, { v: 1, by: options.by, type: options.type, source: source.name, startedAtMs: clock.now() }, clock, logger);
  if (claim.held === null) {
    const holder = claim.holder === null ? 'another runner' : `${claim.holder.by} (a ${claim.holder.type} backup from ${claim.holder.source})`;
    throw new KeelError('KEEL_BACKUP_BUSY', `a backup runs already: ${holder}`);
  }
  const lock = claim.held;
  const stop = new AbortController();
  const abort = () => stop.abort();
  lock.signal.addEventListener('abort', abort);
  options.signal?.addEventListener('abort', abort);
  const from = members.standby === null ? `the leader ${members.leader.name}` : `${members.standby.name} (standby of ${members.leader.name})`;
  const startedMs = clock.now();
  try {
    options.onStart?.(members);
    const backup = await takeBackup(primary, standby, { ...options, signal: stop.signal }, logger);
    const seconds = Math.round((clock.now() - startedMs) / 100) / 10;
    const message = `${backup.type} backup ${backup.label} taken from ${from} in ${seconds} s (${formatBytes(backup.sizeBytes)} of data, ${formatBytes(backup.repoBytes)} in the repository) by ${options.by}`;
    logger.info({ label: backup.label, type: backup.type, seconds }, message);
    await dcs.addEvent({ atMs: clock.now(), source: options.by, kind: 'backup', message });
    return { backup, members, seconds };
  } catch (err) {
    // one line: events are read a line each
    const why = lock.signal.aborted ? 'its lock in etcd could not be kept' : describeError(err).replace(/\s*\n\s*/g, '; ');
    await dcs.addEvent({ atMs: clock.now(), source: options.by, kind: 'backup-failed', message: `${options.type} backup from ${from} failed: ${why}` });
    if (lock.signal.aborted) throw new KeelError('KEEL_BACKUP_FAILED', `the ${options.type} backup was stopped: ${why}`, { cause: err });
    throw err;
  } finally {
    options.signal?.removeEventListener('abort', abort);
    await lock.release();
  }
}
