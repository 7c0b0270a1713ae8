/**
 * What every fault is: a function that injects it into a running chaos
 * cluster, waits out its length, ends it and says what it did.
 */
import type { Observer } from '../../src/workload/observer.js';
import type { ChaosCluster } from './cluster.js';
import type { Rng } from './plan.js';

export interface FaultContext {
  cluster: ChaosCluster;
  observer: Observer;
  rng: Rng;
  ttlMs: number;
}

export interface FaultOutcome {
  /** when the fault began */
  startMs: number;
  /** when it ended: the node restarted, thawed or healed; healing is timed from here */
  endMs: number;
  /** the node or etcd member it hit */
  target: string;
  details: Record<string, unknown>;
}

export interface Fault {
  id: FaultId;
  title: string;
  inject(ctx: FaultContext): Promise<FaultOutcome>;
}

export type FaultId = '1' | '2' | '3' | '4' | '5a' | '5b' | '6' | '7' | '8' | '9' | '10';

export function leaderOf(ctx: FaultContext): string {
  const leader = ctx.observer.leader();
  if (leader === null) throw new Error('no leader to inject the fault into');
  return leader;
}
