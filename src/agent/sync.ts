/**
 * Synchronous replication, decided purely. The leader keeps
 * synchronous_standby_names as `ANY k (a, b, ...)` (quorum commit: a commit
 * waits for k of the listed standbys) and records the set and k in the `sync`
 * key. A replica may be promoted only if it is in that key, sees at least
 * (members - k + 1) of its members (itself included) and is the most advanced
 * of them: any such group holds at least one standby that acknowledged every
 * commit, and WAL is linear, so the most advanced one has them all.
 *
 * The key must never claim less than PostgreSQL relies on. Every change goes
 * through a widened key first (the union of old and new sets with the smaller
 * k), then the new synchronous_standby_names, then the exact key.
 */
import type { DynamicConfig } from '../config/schema.js';
import type { ClusterView, MemberValue } from '../dcs/types.js';
import type { RuntimeState } from '../postgres/types.js';
import { isFreshReplica } from './eligibility.js';
import type { Action } from './snapshot.js';

export interface SyncSet {
  members: string[];
  quorum: number;
}

const empty: SyncSet = { members: [], quorum: 0 };

/** Reads the value Keel writes (`ANY 2 ("a","b")`); '' is no synchronous standby. Anything else: null. */
export function parseSynchronousStandbyNames(value: string): SyncSet | null {
  const text = value.trim();
  if (text === '') return empty;
  const match = /^ANY\s+(\d+)\s*\((.*)\)$/i.exec(text);
  if (match === null) return null;
  const members = match[2]!
    .split(',')
    .map((name) => name.trim().replace(/^"|"$/g, ''))
    .filter((name) => name !== '');
  return { members: [...members].sort(), quorum: Number(match[1]) };
}

export function formatSynchronousStandbyNames(set: SyncSet): string {
  if (set.members.length === 0) return '';
  return `ANY ${set.quorum} (${[...set.members].sort().map((m) => `"${m}"`).join(',')})`;
}

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
  if (config.synchronous_mode === 'off') return empty;
  const fresh = new Map<string, MemberValue>();
  for (const m of cluster.members) if (m.name !== me && m.tags.nofailover !== true && isFreshReplica(m, nowMs, config)) fresh.set(m.name, m);
  const streaming = new Set(runtime.replicas.filter((r) => r.state === 'streaming').map((r) => r.applicationName));
  const members = [...fresh.keys()].filter((name) => streaming.has(name) || current.members.includes(name)).sort();
  if (config.synchronous_mode === 'strict') {
    // strict: with nobody to confirm commits, keep the old names so writes wait instead of going async
    const kept = members.length > 0 ? members : current.members;
    return { members: kept, quorum: kept.length === 0 ? 0 : config.synchronous_node_count };
  }
  return { members, quorum: Math.min(config.synchronous_node_count, members.length) };
}

/** One step toward the desired set, or null when PostgreSQL and the key already agree with it. */
export function nextSyncStep(config: DynamicConfig, cluster: ClusterView, runtime: RuntimeState, me: string, nowMs: number): Action[] {
  const applied = parseSynchronousStandbyNames(runtime.synchronousStandbyNames) ?? empty;
  const keyValue = cluster.sync?.value;
  const key: SyncSet = keyValue ? { members: [...keyValue.members].sort(), quorum: keyValue.quorum } : empty;
  const desired = desiredSyncSet(config, cluster, runtime, me, nowMs, applied);
  if (same(applied, desired)) {
    const settled = same(key, desired) && (keyValue?.leader === me || desired.members.length === 0);
    return settled ? [] : [{ kind: 'putSync', set: desired }];
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
 * Synchronous-mode part of safety rule 3: in the key, enough of the key's
 * members visible, and none of them further ahead.
 */
export function syncVerdict(candidate: MemberValue, cluster: ClusterView, config: DynamicConfig, nowMs: number, lsnOf: (m: MemberValue) => number): { ok: true } | { ok: false; why: string } {
  const key = cluster.sync?.value;
  if (config.synchronous_mode === 'off' || key === undefined || key.members.length === 0) return { ok: true };
  if (!key.members.includes(candidate.name)) {
    return { ok: false, why: `${candidate.name} is not in the synchronous set (${key.members.join(', ')})` };
  }
  const visible = key.members
    .map((name) => (name === candidate.name ? candidate : cluster.members.find((m) => m.name === name)))
    .filter((m): m is MemberValue => m !== undefined && (m === candidate || isFreshReplica(m, nowMs, config)));
  const needed = key.members.length - key.quorum + 1;
  if (visible.length < needed) {
    return { ok: false, why: `only ${visible.length} of the synchronous set are visible, ${needed} needed to be sure no commit is lost` };
  }
  const ahead = visible.find((m) => lsnOf(m) > lsnOf(candidate));
  return ahead ? { ok: false, why: `${ahead.name} of the synchronous set is further ahead` } : { ok: true };
}
