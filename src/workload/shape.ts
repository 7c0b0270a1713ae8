/**
 * What a harness waits for in a view of the cluster: a leader that serves,
 * the declared number of streaming replicas, a synchronous standby a
 * failover may promote. Pure: a view (and the time) in, an answer out.
 */
import type { ClusterView, MemberValue } from '../model/values.js';

/** A member publishes every loop: one silent longer than this is not counted as part of the shape. */
const freshMs = 4000;

/** The leader's member, when the leader key names a member running as primary: before that, writes cannot succeed anyway. */
export function leaderOf(view: ClusterView): MemberValue | undefined {
  return view.members.find((m) => m.name === view.leader?.value.name && m.role === 'primary' && m.running);
}

/** A leader and `replicas` fresh replicas streaming from it, nothing else reporting. */
export function shapeIs(view: ClusterView, replicas: number, nowMs = Date.now()): boolean {
  const leader = leaderOf(view);
  const fresh = view.members.filter((m) => nowMs - m.updatedAtMs < freshMs);
  const streaming = fresh.filter((m) => m.role === 'replica' && m.streaming && m.upstream === leader?.name);
  return leader !== undefined && streaming.length === replicas && fresh.length === replicas + 1;
}

/** shapeIs, and in synchronous mode a `sync` key of this leader naming a streaming replica: a failover may promote it. */
export function settled(view: ClusterView, replicas: number, nowMs = Date.now()): boolean {
  if (!shapeIs(view, replicas, nowMs)) return false;
  if ((view.config?.value.synchronous_mode ?? 'on') === 'off') return true;
  const leader = leaderOf(view)!;
  const streaming = new Set(view.members.filter((m) => m.streaming && m.upstream === leader.name).map((m) => m.name));
  return view.sync?.value.leader === leader.name && view.sync.value.members.some((name) => streaming.has(name));
}

/** The leader and each member in one line, for whoever must say why a wait ended without what it waited for. */
export function describeMembers(view: ClusterView | null, nowMs = Date.now()): string {
  if (view === null) return 'etcd unreadable';
  const members = view.members.map((m) => `${m.name}: ${m.role}/${m.state} streaming ${m.streaming}, ${nowMs - m.updatedAtMs} ms old: ${m.reason}`);
  return [`leader ${view.leader?.value.name ?? 'none'}`, ...members].join('; ');
}
