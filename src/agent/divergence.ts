/**
 * Whose WAL diverged from the leader's timeline (safety rule 4). Pure.
 */
import type { HistoryEntry } from '../model/values.js';

export type Divergence = 'none' | 'diverged';

/**
 * Whether WAL at `lsn` on `timeline` can be continued by a leader on
 * `leaderTimeline` (safety rule 4). Positions past the point where the
 * leader's history left our timeline were never seen by the leader.
 * Without a history entry for that switch, assume divergence: pg_rewind will
 * find out cheaply and correctly.
 */
export function divergence(timeline: number, lsn: number, leaderTimeline: number, history: HistoryEntry[]): Divergence {
  if (timeline === leaderTimeline) return 'none';
  if (timeline > leaderTimeline) return 'diverged';
  // The newest entry wins: a promotion that failed half-way may have left an older one.
  const fork = history.findLast((entry) => entry.timeline === timeline + 1);
  if (fork === undefined) return 'diverged';
  return lsn > fork.switchLsn ? 'diverged' : 'none';
}
