/**
 * What this node is, as the health endpoints judge it, and the judgements
 * themselves. Pure: the route handlers pass in the handle's fields and the time.
 *
 * Everything comes from the last loop's snapshot (no etcd or SQL per request,
 * so a load balancer checking every second costs nothing) except the lease,
 * which is read live: a leader whose lease can no longer be trusted stops
 * answering /primary at once, before the watchdog has even stopped PostgreSQL.
 */
import { formatLsn, lagBytes as lagBehindLeader } from '../model/lsn.js';
import { redactSecrets } from '../errors.js';
import { parseByteSize } from '../model/size.js';
import type { AgentHandle, ApiOptions } from './handle.js';

/** leader: holds the key and runs a primary; primary: runs a primary without the key (about to stop). */
export type NodeRole = 'leader' | 'primary' | 'replica' | 'stopped' | 'unknown';
export const nodeRoles: readonly NodeRole[] = ['leader', 'primary', 'replica', 'stopped', 'unknown'];

/** The JSON body of every health endpoint. */
export interface NodeStatus {
  name: string;
  cluster: string;
  role: NodeRole;
  /** the agent's state (see agent/states.ts) */
  state: string;
  postgres: 'running' | 'stopped';
  /** the member named by the leader key, as last read */
  leader: string | null;
  streaming: boolean;
  timeline: number | null;
  /** written (primary) or replayed (replica) WAL position, as PostgreSQL prints it */
  lsn: string | null;
  /** replica: bytes of WAL between the leader's published position and what this node replayed */
  lag_bytes: number | null;
  reason: string;
  /** milliseconds since the last loop observed the node */
  loop_age_ms: number | null;
  tags: Record<string, string | number | boolean>;
}

export interface NodeFacts {
  status: NodeStatus;
  /** holds the leader key under a lease still trusted, runs a primary, and the loop is alive */
  isLeader: boolean;
  /** runs in recovery and its WAL receiver streams, and the loop is alive */
  isStreamingReplica: boolean;
  postgresRunning: boolean;
  /** the agent's loop ran recently enough (see livenessLimitMs) */
  loopAlive: boolean;
}

/**
 * How old the last loop may be before /liveness fails: one ttl on the leader
 * (its lease cannot outlive that anyway), two on the others, as Patroni does.
 */
export function livenessLimitMs(ttlSeconds: number, holdsLeaderKey: boolean): number {
  return (holdsLeaderKey ? 1 : 2) * ttlSeconds * 1000;
}

export function observeNode(handle: AgentHandle, node: ApiOptions['node'], nowMs: number): NodeFacts {
  const snap = handle.lastSnapshot;
  const runtime = snap?.pg.runtime ?? null;
  const cluster = snap?.cluster ?? null;
  const leaderKey = cluster?.leader ?? null;
  const lease = handle.lease;
  const holdsLeaderKey =
    snap !== null &&
    leaderKey !== null &&
    leaderKey.value.name === node.name &&
    lease.id !== null &&
    leaderKey.leaseId === lease.id &&
    nowMs < lease.deadlineMs();
  const loopAgeMs = snap === null ? null : Math.max(0, nowMs - snap.nowMs);
  const loopAlive = snap !== null && loopAgeMs !== null && loopAgeMs <= livenessLimitMs(snap.config.ttl, holdsLeaderKey);
  const runningPrimary = runtime !== null && !runtime.inRecovery;
  const isLeader = holdsLeaderKey && runningPrimary && loopAlive;
  const isReplica = runtime !== null && runtime.inRecovery;

  let lagBytes: number | null = null;
  if (isReplica && cluster !== null) {
    const leaderMember = cluster.members.find((m) => m.name === leaderKey?.value.name);
    const published = [cluster.status?.value.walLsn, leaderMember?.walLsn].filter((x): x is number => typeof x === 'number');
    if (published.length > 0) lagBytes = lagBehindLeader(Math.max(...published), { walLsn: null, receivedLsn: runtime.receivedLsn, replayedLsn: runtime.replayedLsn });
  }
  const lsn = runtime === null ? null : runtime.inRecovery ? (runtime.replayedLsn ?? runtime.receivedLsn) : runtime.walLsn;
  const role: NodeRole = snap === null ? 'unknown' : runtime === null ? 'stopped' : isReplica ? 'replica' : holdsLeaderKey ? 'leader' : 'primary';
  return {
    status: {
      name: node.name,
      cluster: node.cluster,
      role,
      state: handle.state,
      postgres: runtime !== null ? 'running' : 'stopped',
      leader: leaderKey?.value.name ?? null,
      streaming: runtime?.streaming ?? false,
      timeline: runtime?.timeline ?? snap?.pg.control?.timeline ?? null,
      lsn: lsn === null ? null : formatLsn(lsn),
      lag_bytes: lagBytes,
      reason: redactSecrets(handle.lastReason),
      loop_age_ms: loopAgeMs,
      tags: { ...node.tags },
    },
    isLeader,
    isStreamingReplica: isReplica && runtime.streaming && loopAlive,
    postgresRunning: runtime !== null,
    loopAlive,
  };
}

export type CheckKind = 'primary' | 'replica' | 'read-only' | 'health' | 'liveness' | 'readiness';

export interface CheckQuery {
  /** ?lag=: the most a replica may lag and still pass; null for no bound */
  maxLagBytes: number | null;
  /** ?tag_<key>=<value>: every one must match this node's tags */
  tags: Record<string, string>;
}

/** 200 or 503, with Patroni's meaning of each endpoint. */
export function checkStatus(kind: CheckKind, facts: NodeFacts, query: CheckQuery): 200 | 503 {
  const lag = facts.status.lag_bytes;
  // an unknown lag never passes a lag bound: when in doubt, keep readers away
  const withinLag = query.maxLagBytes === null || (lag !== null && lag <= query.maxLagBytes);
  const balancedReplica = facts.isStreamingReplica && withinLag && facts.status.tags.noloadbalance !== true;
  const pass: Record<CheckKind, boolean> = {
    primary: facts.isLeader,
    replica: balancedReplica,
    'read-only': facts.isLeader || balancedReplica,
    health: facts.postgresRunning,
    liveness: facts.loopAlive,
    readiness: facts.isLeader || (facts.isStreamingReplica && withinLag),
  };
  if (!pass[kind]) return 503;
  return tagsMatch(facts.status.tags, query.tags) ? 200 : 503;
}

/** Non-string tags compare by their lower-case text, so `?tag_nofailover=false` matches `false`. */
export function tagsMatch(tags: NodeStatus['tags'], wanted: Record<string, string>): boolean {
  return Object.entries(wanted).every(([key, value]) => {
    const have = tags[key];
    if (have === undefined) return false;
    return (typeof have === 'string' ? have : String(have).toLowerCase()) === value;
  });
}

export type QueryResult = { ok: true; query: CheckQuery } | { ok: false; why: string };

/** Reads `lag` and `tag_*` from a parsed query string; the first value wins when one repeats. */
export function parseCheckQuery(raw: Record<string, string | string[] | undefined>): QueryResult {
  const first = (v: string | string[] | undefined): string | undefined => (Array.isArray(v) ? v[0] : v);
  const query: CheckQuery = { maxLagBytes: null, tags: {} };
  const lag = first(raw.lag);
  if (lag !== undefined) {
    query.maxLagBytes = parseByteSize(lag);
    if (query.maxLagBytes === null) return { ok: false, why: `lag=${JSON.stringify(lag)} is not a size: use bytes or a unit, e.g. lag=16MB` };
  }
  for (const [key, value] of Object.entries(raw)) {
    const text = first(value);
    if (key.startsWith('tag_') && key.length > 4 && text !== undefined) query.tags[key.slice(4)] = text;
  }
  return { ok: true, query };
}
