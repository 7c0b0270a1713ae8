/**
 * Pure rules about who may lead and whose WAL diverged. No I/O.
 */
import type { DynamicConfig } from '../config/schema.js';
import type { ClusterView, HistoryEntry, MemberValue } from '../dcs/types.js';
import { memberLsn } from './snapshot.js';
import { syncVerdict } from './sync.js';

/** A member key updated within one ttl, reporting a running replica. */
export function isFreshReplica(member: MemberValue, nowMs: number, config: DynamicConfig): boolean {
  return member.running && member.role === 'replica' && nowMs - member.updatedAtMs <= config.ttl * 1000;
}

export type Verdict = { ok: true } | { ok: false; why: string };

/**
 * Whether `candidate` may take the leader key (safety rule 3). `others` are
 * the members the candidate can see; the caller excludes the candidate.
 */
export function promotionVerdict(
  candidate: MemberValue,
  cluster: ClusterView,
  config: DynamicConfig,
  nowMs: number,
  options: { ignoreOthers: boolean },
): Verdict {
  if (candidate.tags.nofailover === true) return { ok: false, why: `${candidate.name} is tagged nofailover` };
  if (!candidate.running || candidate.role !== 'replica') {
    return { ok: false, why: `${candidate.name} is not a running replica` };
  }
  const lsn = memberLsn(candidate);
  const leaderLsn = cluster.status?.value.walLsn ?? null;
  if (leaderLsn !== null && leaderLsn - lsn > config.maximum_lag_on_failover) {
    return {
      ok: false,
      why: `${candidate.name} is ${leaderLsn - lsn} bytes behind the last known leader position (maximum_lag_on_failover ${config.maximum_lag_on_failover})`,
    };
  }
  const sync = syncVerdict(candidate, cluster, config, nowMs, memberLsn);
  if (!sync.ok) return sync;
  if (options.ignoreOthers) return { ok: true };
  for (const other of cluster.members) {
    if (other.name === candidate.name || other.tags.nofailover === true) continue;
    if (!isFreshReplica(other, nowMs, config)) continue;
    if (memberLsn(other) > lsn) {
      return { ok: false, why: `${other.name} is further ahead (${memberLsn(other)} > ${lsn})` };
    }
  }
  return { ok: true };
}

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
