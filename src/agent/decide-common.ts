/** Small pieces every part of decide() uses. Pure. */
import { leaseDeadlineMs, ttlChange } from '../model/lease.js';
import type { Action, Decision, Snapshot, upstreamOf } from './snapshot.js';

/** Seconds a switchover request may hold back an election before it is ignored. */
export const switchoverWaitSeconds = 30;

/** Seconds to wait after a failed background job before trying it again. */
export const retryAfterFailureSeconds = 5;

/** Cluster states pg_controldata reports for an instance that last ran as a primary. */
export const primaryControlStates = new Set(['in production', 'shut down', 'in crash recovery', 'shutting down']);

export function stay(s: Snapshot, reason: string, actions: Action[] = []): Decision {
  return { to: s.state, reason, actions };
}

export function startReplica(upstream: ReturnType<typeof upstreamOf> | null): Action {
  return { kind: 'startPostgres', replica: true, upstream };
}

export function recentFailure(s: Snapshot, kind: string): boolean {
  const job = s.lastJob;
  return job !== null && job.kind === kind && !job.ok && s.nowMs - job.finishedAtMs < retryAfterFailureSeconds * 1000;
}

export function leaseStale(s: Snapshot): boolean {
  return s.lease !== null && s.nowMs >= leaseDeadlineMs(s.lease);
}

/**
 * The config's ttl differs from the one this agent's lease was granted with:
 * move the keys to a lease with the new ttl, in a steady state only (never
 * ahead of a safety step), and only while the old lease can be trusted.
 */
export function moveToNewTtl(s: Snapshot, leader: boolean, steady: string): Decision | null {
  const change = ttlChange(s.lease, s.config.ttl);
  if (change === null || leaseStale(s)) return null;
  const keys = leader ? 'my member and leader keys' : 'my member key';
  const why =
    change.fromSeconds === change.toSeconds
      ? `a move of ${keys} to a new lease may not have completed: settling it`
      : `ttl changed from ${change.fromSeconds} s to ${change.toSeconds} s: moving ${keys} to a lease granted with ${change.toSeconds} s`;
  return stay(s, `${steady}; ${why}`, [{ kind: 'moveLease', ttlSeconds: change.toSeconds, leader }]);
}
