/**
 * Which scheduled backup is due, if any. Pure: the scheduler (backups.ts)
 * reads the repository and runs it.
 *
 * A kind is due once its schedule has fired since the last backup that covers
 * it: a full covers every kind, a differential covers incrementals. Without
 * any full backup the first one is a full, whatever is scheduled (pgBackRest
 * would make it one anyway). When several are due the widest goes.
 */
import type { BackupPolicy } from '../model/values.js';
import { nextRun, parseSchedule } from '../model/schedule.js';

export type ScheduledType = 'full' | 'diff' | 'incr';

/** What the repository holds, as far as scheduling goes. */
export interface TakenBackup {
  type: ScheduledType;
  startMs: number;
}

export interface DueBackup {
  type: ScheduledType;
  reason: string;
}

const widestFirst: ScheduledType[] = ['full', 'diff', 'incr'];
const covers: Record<ScheduledType, ScheduledType[]> = { full: ['full'], diff: ['full', 'diff'], incr: ['full', 'diff', 'incr'] };

export function dueBackup(policy: BackupPolicy, taken: readonly TakenBackup[], nowMs: number): DueBackup | null {
  const scheduled = widestFirst.filter((type) => policy[type] !== null);
  if (scheduled.length === 0) return null;
  if (!taken.some((b) => b.type === 'full')) return { type: 'full', reason: 'no full backup in the repository yet' };
  for (const type of scheduled) {
    const text = policy[type]!;
    const schedule = parseSchedule(text);
    if (typeof schedule === 'string') continue;
    const last = Math.max(...taken.filter((b) => covers[type].includes(b.type)).map((b) => b.startMs));
    const due = nextRun(schedule, last);
    if (due !== null && due <= nowMs) return { type, reason: `${type} backups run at "${text}": due since ${new Date(due).toISOString()}` };
  }
  return null;
}

/** After a failed backup: 30 s, doubling with each failure in a row, at most 10 minutes. */
export function retryDelayMs(failuresInARow: number): number {
  return Math.min(30_000 * 2 ** Math.max(0, failuresInARow - 1), 600_000);
}
