/**
 * What the benches do to the test harness's clusters: start and stop them
 * (BENCH_KEEP=1 keeps the directory and its logs), kill a node the way a dead
 * machine goes, and tell when the cluster is back to its declared shape.
 */
import { rm } from 'node:fs/promises';
import type { ClusterView } from '../src/model/values.js';
import { TestCluster } from '../test/support/cluster.js';
import { envFlag } from './options.js';

/** Stops every process of the cluster by PID; removes its directory unless BENCH_KEEP is set. */
export async function stopCluster(tc: TestCluster | undefined): Promise<void> {
  if (tc === undefined) return;
  const keepDir = envFlag('BENCH_KEEP');
  await tc.stop({ keepDir });
  if (keepDir) console.log(`kept ${tc.layout.dir} (BENCH_KEEP)`);
}

/** Removes a directory the bench made, unless BENCH_KEEP is set. */
export async function removeDir(dir: string): Promise<void> {
  if (!envFlag('BENCH_KEEP')) await rm(dir, { recursive: true, force: true });
}

/**
 * A machine that dies: SIGKILL of the node's agent, postmaster and fencing
 * guard, and this process's provider no longer starts any of them again (the
 * only thing written first is its own "fenced" marker, which no other part of
 * the cluster reads as a sign of death). Returns when the kill began (ms).
 */
export async function killNode(tc: TestCluster, name: string): Promise<number> {
  const atMs = Date.now();
  const result = await tc.local.provider.fence(name);
  if (!result.confirmed) throw new Error(`could not kill ${name}: ${result.detail}`);
  return atMs;
}

/** The leader's member, when a leader key names a member running as primary. */
export function leaderOf(view: ClusterView) {
  return view.members.find((m) => m.name === view.leader?.value.name && m.role === 'primary' && m.running);
}

/** A leader and `replicas` fresh replicas streaming from it, nothing else reporting. */
export function shapeIs(view: ClusterView, replicas: number, nowMs = Date.now()): boolean {
  const leader = leaderOf(view);
  const fresh = view.members.filter((m) => nowMs - m.updatedAtMs < 4000);
  const streaming = fresh.filter((m) => m.role === 'replica' && m.streaming && m.upstream === leader?.name);
  return leader !== undefined && streaming.length === replicas && fresh.length === replicas + 1;
}

/** shapeIs, and in synchronous mode a `sync` key of this leader naming a streaming replica: a failover may promote it. */
export function settled(view: ClusterView, replicas: number): boolean {
  if (!shapeIs(view, replicas)) return false;
  if ((view.config?.value.synchronous_mode ?? 'on') === 'off') return true;
  const leader = leaderOf(view)!;
  const streaming = new Set(view.members.filter((m) => m.streaming && m.upstream === leader.name).map((m) => m.name));
  return view.sync?.value.leader === leader.name && view.sync.value.members.some((name) => streaming.has(name));
}

/** Describes each member in one line, for a bench that must say why it stopped. */
export function describeMembers(view: ClusterView | null): string {
  if (view === null) return 'etcd unreadable';
  return view.members.map((m) => `${m.name}: ${m.role}/${m.state} streaming ${m.streaming}, ${Date.now() - m.updatedAtMs} ms old: ${m.reason}`).join('; ');
}
