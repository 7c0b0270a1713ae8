/**
 * Safety rule 3, shared by the agents (who may take the leader key), the CLI,
 * the REST API and the controller (which switchover or failover targets they
 * accept), so that all refuse the same targets for the same reasons. Pure.
 *
 * In synchronous mode a replica may be promoted only if it is in the `sync`
 * key, sees at least (members - k + 1) of its members (itself included) and is
 * the most advanced of them: any such group holds at least one standby that
 * acknowledged every commit, and WAL is linear, so the most advanced one has
 * them all.
 */
import type { DynamicConfig } from '../config/schema.js';
import type { ClusterView, MemberValue } from './values.js';
import { memberLsn } from './lsn.js';
import { isFreshReplica } from './member.js';

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
  options: { ignoreOthers: boolean; handover?: boolean },
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
  const sync = syncVerdict(candidate, cluster, config, nowMs, options.handover === true);
  if (!sync.ok) return sync;
  if (options.ignoreOthers) return { ok: true };
  for (const other of cluster.members) {
    if (other.name === candidate.name || other.tags.nofailover === true) continue;
    if (!isFreshReplica(other, nowMs, config.ttl)) continue;
    if (memberLsn(other) > lsn) {
      return { ok: false, why: `${other.name} is further ahead (${memberLsn(other)} > ${lsn})` };
    }
  }
  return { ok: true };
}

/**
 * Synchronous-mode part of safety rule 3: in the key, enough of the key's
 * members visible, and none of them further ahead. `handover`: a running
 * leader hands over (a planned switchover): it shuts down cleanly and first
 * sends all it wrote to every standby streaming from it, the candidate among
 * them, so a standby of the set ahead at this moment holds nothing the
 * candidate will not have; under writes one always is, for a moment.
 */
export function syncVerdict(candidate: MemberValue, cluster: ClusterView, config: DynamicConfig, nowMs: number, handover = false): Verdict {
  const key = cluster.sync?.value;
  if (config.synchronous_mode === 'off' || key === undefined || key.members.length === 0) return { ok: true };
  if (!key.members.includes(candidate.name)) {
    return { ok: false, why: `${candidate.name} is not in the synchronous set (${key.members.join(', ')})` };
  }
  const visible = key.members
    .map((name) => (name === candidate.name ? candidate : cluster.members.find((m) => m.name === name)))
    .filter((m): m is MemberValue => m !== undefined && (m === candidate || isFreshReplica(m, nowMs, config.ttl)));
  const needed = key.members.length - key.quorum + 1;
  if (visible.length < needed) {
    return { ok: false, why: `only ${visible.length} of the synchronous set are visible, ${needed} needed to be sure no commit is lost` };
  }
  const ahead = handover ? undefined : visible.find((m) => memberLsn(m) > memberLsn(candidate));
  return ahead ? { ok: false, why: `${ahead.name} of the synchronous set is further ahead` } : { ok: true };
}
