/**
 * Where a point-in-time recovery stops, checked against the backups there are,
 * and the pgBackRest restore options that say it. Pure.
 */
import { KeelError } from '../errors.js';
import { formatLsn, parseLsn } from '../model/lsn.js';
import type { BackupSet } from './info.js';

export type RestoreTarget = { kind: 'time'; atMs: number } | { kind: 'lsn'; lsn: number } | { kind: 'latest' };

/** The target from the flags: exactly one of --to-time, --to-lsn, --latest. */
export function parseRestoreTarget(flags: { toTime?: string; toLsn?: string; latest?: boolean }, nowMs: number): RestoreTarget {
  const given = [flags.toTime !== undefined, flags.toLsn !== undefined, flags.latest === true].filter(Boolean).length;
  if (given !== 1) throw new KeelError('KEEL_USAGE', 'give exactly one of --to-time ISO8601, --to-lsn LSN, --latest');
  if (flags.latest) return { kind: 'latest' };
  if (flags.toLsn !== undefined) {
    try {
      return { kind: 'lsn', lsn: parseLsn(flags.toLsn) };
    } catch {
      throw new KeelError('KEEL_RESTORE_TARGET_INVALID', `--to-lsn ${JSON.stringify(flags.toLsn)} is not a WAL position such as 0/3000060`);
    }
  }
  const text = flags.toTime!;
  // a date with a time and a zone: a time without its zone would mean another moment on another machine
  const atMs = /^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})$/.test(text) ? Date.parse(text.replace(' ', 'T')) : Number.NaN;
  if (Number.isNaN(atMs)) {
    throw new KeelError('KEEL_RESTORE_TARGET_INVALID', `--to-time ${JSON.stringify(text)} is not an ISO 8601 time with its zone, such as 2026-03-01T10:15:00Z`);
  }
  if (atMs > nowMs) throw new KeelError('KEEL_RESTORE_TARGET_INVALID', `--to-time ${new Date(atMs).toISOString()} is in the future`);
  return { kind: 'time', atMs };
}

export function describeTarget(target: RestoreTarget): string {
  if (target.kind === 'latest') return 'the end of the archived WAL';
  return target.kind === 'time' ? new Date(target.atMs).toISOString() : formatLsn(target.lsn);
}

/**
 * The backup a recovery to `target` starts from: the newest one that ended before it. A target before
 * the end of the oldest backup cannot be reached (the data is consistent only from a backup's end).
 */
export function chooseBackup(backups: readonly BackupSet[], target: RestoreTarget): BackupSet {
  const oldest = backups[0];
  if (oldest === undefined) throw new KeelError('KEEL_BACKUP_NONE', 'the repository holds no backup to restore');
  if (target.kind === 'latest') return backups[backups.length - 1]!;
  const endsBefore = (b: BackupSet) => (target.kind === 'time' ? b.stopMs <= target.atMs : b.lsnStop <= target.lsn);
  const usable = backups.filter(endsBefore);
  if (usable.length === 0) {
    const end = target.kind === 'time' ? new Date(oldest.stopMs).toISOString() : formatLsn(oldest.lsnStop);
    throw new KeelError('KEEL_RESTORE_TARGET_INVALID', `${describeTarget(target)} is before the end of the oldest backup (${oldest.label}, ${end}): no backup can reach it`);
  }
  return usable[usable.length - 1]!;
}

/** PostgreSQL's form of a time: what recovery_target_time reads. */
function postgresTime(ms: number): string {
  return new Date(ms).toISOString().replace('T', ' ').replace('Z', '+00');
}

/** pgBackRest restore options: the backup, and where recovery stops (then the node is promoted). */
export function restoreOptions(backup: BackupSet, target: RestoreTarget): string[] {
  const options = [`--set=${backup.label}`];
  if (target.kind === 'latest') return [...options, '--type=default'];
  const where = target.kind === 'time' ? `--target=${postgresTime(target.atMs)}` : `--target=${formatLsn(target.lsn)}`;
  return [...options, `--type=${target.kind}`, where, '--target-action=promote'];
}
