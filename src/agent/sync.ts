/**
 * Synchronous replication, decided purely. The leader keeps
 * synchronous_standby_names as `ANY k (a, b, ...)` (quorum commit: a commit
 * waits for k of the listed standbys) and records the set and k in the `sync`
 * key; who may be promoted given that key is model/promotion.ts's rule.
 *
 * The key must never claim less than PostgreSQL relies on. Every change goes
 * through a widened key first (the union of old and new sets with the smaller
 * k), then the new synchronous_standby_names, then the exact key; a key that
 * drops standbys waits until k of the new set have flushed past where the new
 * names took effect (a commit only a dropped standby acknowledged is below it).
 */
import type { DynamicConfig } from '../config/schema.js';
import type { ClusterView, MemberValue } from '../model/values.js';
import type { RuntimeState } from '../postgres/types.js';
import { isFreshReplica } from '../model/member.js';
import { formatSynchronousStandbyNames, noSyncSet, parseSynchronousStandbyNames, type SyncSet } from '../postgres/standby-names.js';
import type { Action } from './snapshot.js';
import type { AgentMemory } from './memory.js';


function same(a: SyncSet, b: SyncSet): boolean {
  return a.quorum === b.quorum && a.members.length === b.members.length && a.members.every((m, i) => m === [...b.members].sort()[i]);
}

/** True when `key` claims at least as much as `other` needs: a superset with no larger quorum. */
function coversSafely(key: SyncSet, other: SyncSet): boolean {
  if (other.members.length === 0) return true;
  if (key.members.length === 0) return false;
  return other.members.every((m) => key.members.includes(m)) && key.quorum <= other.quorum;
}

/**
 * The standbys the leader wants synchronous now: those streaming from it with
 * a fresh member key, plus current ones whose key is still fresh (a standby
 * re-pointing after a failover is not dropped for a second of silence).
 */
export function desiredSyncSet(config: DynamicConfig, cluster: ClusterView, runtime: RuntimeState, me: string, nowMs: number, current: SyncSet): SyncSet {
  if (config.synchronous_mode === 'off') return noSyncSet;
  const fresh = new Map<string, MemberValue>();
  for (const m of cluster.members) if (m.name !== me && m.tags.nofailover !== true && isFreshReplica(m, nowMs, config.ttl)) fresh.set(m.name, m);
  const streaming = new Set(runtime.replicas.filter((r) => r.state === 'streaming').map((r) => r.applicationName));
  const members = [...fresh.keys()].filter((name) => streaming.has(name) || current.members.includes(name)).sort();
  if (config.synchronous_mode === 'strict') {
    // strict: with nobody to confirm commits, keep the old names so writes wait instead of going async
    const kept = members.length > 0 ? members : current.members;
    return { members: kept, quorum: kept.length === 0 ? 0 : config.synchronous_node_count };
  }
  return { members, quorum: Math.min(config.synchronous_node_count, members.length) };
}

/**
 * Whether a key may stop naming standbys PostgreSQL no longer waits for: a
 * commit acknowledged only by a dropped standby lies at or below `barrier`
 * (the WAL position when the new names took effect), so once `quorum` of the
 * new set have flushed past it, any group the narrower key lets promote holds it.
 */
function caughtUp(set: SyncSet, runtime: RuntimeState, barrier: SyncBarrier | null): boolean {
  if (barrier === null || barrier.names !== runtime.synchronousStandbyNames) return false;
  const past = runtime.replicas.filter((r) => set.members.includes(r.applicationName) && r.flushLsn !== null && r.flushLsn >= barrier.lsn);
  return past.length >= set.quorum;
}

export type SyncBarrier = AgentMemory['syncBarrier'];

/**
 * One step toward the desired set, or none when PostgreSQL and the key already
 * agree with it (or a narrower key waits for the new set to catch up).
 */
export function nextSyncStep(config: DynamicConfig, cluster: ClusterView, runtime: RuntimeState, me: string, nowMs: number, barrier: SyncBarrier): Action[] {
  const applied = parseSynchronousStandbyNames(runtime.synchronousStandbyNames) ?? noSyncSet;
  const keyValue = cluster.sync?.value;
  const key: SyncSet = keyValue ? { members: [...keyValue.members].sort(), quorum: keyValue.quorum } : noSyncSet;
  const desired = desiredSyncSet(config, cluster, runtime, me, nowMs, applied);
  if (same(applied, desired)) {
    const settled = same(key, desired) && (keyValue?.leader === me || desired.members.length === 0);
    if (settled) return [];
    const narrower = key.members.some((m) => !desired.members.includes(m));
    return narrower && !caughtUp(desired, runtime, barrier) ? [] : [{ kind: 'putSync', set: desired }];
  }
  const union = [...new Set([...key.members, ...applied.members, ...desired.members])].sort();
  const quorums = [key, applied, desired].filter((s) => s.members.length > 0).map((s) => s.quorum);
  const widened: SyncSet = { members: union, quorum: quorums.length === 0 ? 0 : Math.min(...quorums) };
  if (!(coversSafely(key, applied) && coversSafely(key, desired)) || keyValue?.leader !== me) {
    return [{ kind: 'putSync', set: widened }];
  }
  const steps: Action[] = [{ kind: 'setSynchronousStandbys', value: formatSynchronousStandbyNames(desired) }];
  if (desired.members.length === 0 && applied.members.length > 0) {
    steps.push({ kind: 'event', eventKind: 'async', message: `${me}: no synchronous standby available, running asynchronously` });
  }
  return steps;
}

/**
 * What a replica about to promote must set before it takes a single write:
 * the sync key widened with the old set (written first, so the key never
 * claims less than PostgreSQL relies on), then synchronous_standby_names for
 * the replicas it can see. Null when nothing is to be set (mode off, or `on`
 * with no standby: the new primary runs asynchronously).
 */
export function promotionSyncSet(config: DynamicConfig, cluster: ClusterView, me: string, nowMs: number): { key: SyncSet; standbyNames: string } | null {
  if (config.synchronous_mode === 'off') return null;
  const others = cluster.members
    .filter((m) => m.name !== me && m.tags.nofailover !== true && isFreshReplica(m, nowMs, config.ttl))
    .map((m) => m.name)
    .sort();
  if (others.length === 0 && config.synchronous_mode === 'on') return null;
  const old = cluster.sync?.value;
  // strict with nobody in sight: name the old set's standbys, so that writes wait for them to come back
  const named = others.length > 0 ? others : (old?.members ?? []).filter((m) => m !== me).sort();
  const wanted: SyncSet = { members: named, quorum: config.synchronous_mode === 'strict' ? config.synchronous_node_count : Math.min(config.synchronous_node_count, named.length) };
  const union = [...new Set([...(old?.members ?? []), ...named])].filter((m) => m !== me).sort();
  const quorum = Math.min(wanted.quorum, old && old.members.length > 0 ? old.quorum : wanted.quorum);
  return { key: { members: union, quorum }, standbyNames: formatSynchronousStandbyNames(wanted) };
}
