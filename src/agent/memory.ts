/**
 * What an agent remembers from one loop to the next, and the pure rule that
 * carries it forward. decide() computes the next memory from the snapshot
 * (which holds the previous one) and returns it with its decision; the agent
 * only stores it. So every remembered fact is reachable from a table test.
 */
import type { ClusterView } from '../model/values.js';
import type { RuntimeState } from '../postgres/types.js';
import type { ActionKind } from './snapshot.js';

export interface AgentMemory {
  /** since when a running replica has not been streaming (null: streaming, or not a running replica) */
  notStreamingSinceMs: number | null;
  /**
   * Where this node's last primary was seen writing (timeline, WAL position), until it
   * streams again or its data is rewound or replaced: a position past the new leader's
   * fork point proves divergence at once, without waiting for streaming to fail.
   */
  formerPrimary: { timeline: number; walLsn: number } | null;
  /** when each member's key was last seen, for member_slots_ttl */
  lastSeenMs: Record<string, number>;
  /** seq of the last job already taken into account */
  jobSeen: number | null;
  /**
   * A primary's WAL position when it first saw PostgreSQL apply synchronous_standby_names
   * `names`: every commit acknowledged under the names before lies at or below it (sync.ts).
   */
  syncBarrier: { names: string; lsn: number } | null;
}

export const emptyAgentMemory = (): AgentMemory => ({ notStreamingSinceMs: null, formerPrimary: null, lastSeenMs: {}, jobSeen: null, syncBarrier: null });

/** Actions after which the node's old WAL is gone: rewound over, or replaced by a clone. */
const replacingData: ReadonlySet<ActionKind> = new Set(['rewind', 'removeDataDir', 'clone']);

export interface MemoryInput {
  nowMs: number;
  memory: AgentMemory;
  cluster: ClusterView | null;
  runtime: RuntimeState | null;
  memberSlotsTtlSeconds: number;
  lastJob: { seq: number; actions: ActionKind[]; ok: boolean } | null;
}

/** The memory after one more observation. */
export function remember(input: MemoryInput): AgentMemory {
  const { nowMs, runtime, lastJob } = input;
  let { notStreamingSinceMs, formerPrimary, jobSeen } = input.memory;
  if (lastJob !== null && lastJob.seq !== jobSeen) {
    // a job ran since: a replica restarted by it starts its count again
    jobSeen = lastJob.seq;
    notStreamingSinceMs = null;
    if (lastJob.ok && lastJob.actions.some((kind) => replacingData.has(kind))) formerPrimary = null;
  }
  const stuck = runtime !== null && runtime.inRecovery && !runtime.streaming;
  notStreamingSinceMs = stuck ? (notStreamingSinceMs ?? nowMs) : null;
  if (runtime !== null && !runtime.inRecovery && runtime.walLsn !== null) formerPrimary = { timeline: runtime.timeline, walLsn: runtime.walLsn };
  if (runtime?.streaming) formerPrimary = null;
  return { notStreamingSinceMs, formerPrimary, lastSeenMs: seen(input), jobSeen, syncBarrier: syncBarrier(input) };
}

function syncBarrier({ memory, runtime }: MemoryInput): AgentMemory['syncBarrier'] {
  if (runtime === null || runtime.inRecovery || runtime.walLsn === null) return null;
  const names = runtime.synchronousStandbyNames;
  return memory.syncBarrier?.names === names ? memory.syncBarrier : { names, lsn: runtime.walLsn };
}

/** Members seen now, and those gone for less than member_slots_ttl (when etcd could not be read: all kept). */
function seen({ nowMs, memory, cluster, memberSlotsTtlSeconds }: MemoryInput): Record<string, number> {
  if (cluster === null) return memory.lastSeenMs;
  const next: Record<string, number> = {};
  for (const [name, atMs] of Object.entries(memory.lastSeenMs)) if (nowMs - atMs < memberSlotsTtlSeconds * 1000) next[name] = atMs;
  for (const m of cluster.members) next[m.name] = nowMs;
  return next;
}

/**
 * Members whose key went away less than member_slots_ttl ago (cut off,
 * restarting, stuck in a start): the leader keeps their slots so they resume
 * where they stopped instead of finding no slot.
 */
export function recentlyGone(memory: AgentMemory, cluster: ClusterView): string[] {
  const present = new Set(cluster.members.map((m) => m.name));
  return Object.keys(memory.lastSeenMs).filter((name) => !present.has(name)).sort();
}
