/**
 * What a leader handing over waits for before its fast shutdown: the work
 * that was in flight when the routers started to hold new rw connections,
 * not whatever comes after. A session that commits without a break (a client
 * that keeps its connection and writes in a loop) is never seen idle, so
 * waiting for "no busy session" waited out a poll's luck (0-250 ms of the
 * pause); waiting for each transaction seen at the hold to end does not.
 *
 * Times are PostgreSQL's clock (ms since the epoch), compared only with each
 * other.
 */
import type { BusyClients, BusySession } from '../postgres/types.js';

/**
 * The sessions still to wait for, from those tracked so far and the busy ones
 * PostgreSQL shows now:
 * - a tracked session in a transaction is done once that transaction is
 *   (the session went idle or gone, or began a newer one);
 * - a tracked session still logging in, or connected without a statement
 *   yet, is waited for through its first transaction;
 * - a session not tracked yet is taken on only if it, or its transaction,
 *   began by `cutoffMs` (a connection a router sent just before it held,
 *   which pg_stat_activity shows only once its handshake is done).
 */
export function stillInFlight(tracked: ReadonlyMap<number, BusySession>, busy: readonly BusySession[], cutoffMs: number): Map<number, BusySession> {
  const next = new Map<number, BusySession>();
  for (const session of busy) {
    const was = tracked.get(session.pid);
    const keep = was === undefined ? session.sinceMs <= cutoffMs : !was.inTransaction || was.sinceMs === session.sinceMs;
    if (keep) next.set(session.pid, session);
  }
  return next;
}

/**
 * Until when sessions that begin are taken on: the first reading (it comes
 * once every router holds, actions.ts), pushed to `queueSettleMs` after any
 * reading that finds connections waiting for the postmaster to accept them.
 * Those may have reached PostgreSQL before the hold yet show as no process;
 * once accepted they are backends still starting, taken on by this cutoff.
 */
export function drainCutoff(previous: number | null, busy: Pick<BusyClients, 'nowMs' | 'unaccepted'>, queueSettleMs: number): number {
  const cutoff = previous ?? busy.nowMs;
  return busy.unaccepted > 0 ? Math.max(cutoff, busy.nowMs + queueSettleMs) : cutoff;
}

/**
 * One drain, reading by reading. The accept queue matters only until the
 * cutoff has passed: a connection that reached PostgreSQL before the hold is
 * in the queue at the first reading or a backend already, and one queued
 * later is a client that connects to the node itself, which is not waited
 * for (and which, taken on, would push the cutoff on for as long as such
 * clients keep coming). So the queue (a read of every socket of the network
 * namespace) is read only until then.
 */
export class Drain {
  private cutoffMs: number | null = null;
  private tracked = new Map<number, BusySession>();
  private pastCutoff = false;
  /** the most sessions waited for at once, and connections found not accepted yet */
  waitedFor = 0;
  notAccepted = 0;
  /** sessions taken on after the first reading, and how long after it the last of them was first seen (ms) */
  lateSessions = 0;
  lateByMs = 0;
  private firstReadingMs: number | null = null;

  constructor(private readonly queueSettleMs: number) {}

  /** Whether the next reading needs the accept queue. */
  get readsQueue(): boolean {
    return !this.pastCutoff;
  }

  get pending(): number {
    return this.tracked.size;
  }

  /** Takes one reading (unaccepted 0 when the queue was not read); true once nothing is left to wait for. */
  update(busy: BusyClients): boolean {
    // past the cutoff a queue is no news (and the caller stopped reading it)
    const reading = this.pastCutoff ? { ...busy, unaccepted: 0 } : busy;
    const cutoffMs = drainCutoff(this.cutoffMs, reading, this.queueSettleMs);
    this.cutoffMs = cutoffMs;
    const before = this.tracked;
    this.tracked = stillInFlight(this.tracked, reading.sessions, cutoffMs);
    if (this.firstReadingMs === null) this.firstReadingMs = reading.nowMs;
    else {
      const late = [...this.tracked.keys()].filter((pid) => !before.has(pid)).length;
      if (late > 0) {
        this.lateSessions += late;
        this.lateByMs = reading.nowMs - this.firstReadingMs;
      }
    }
    this.waitedFor = Math.max(this.waitedFor, this.tracked.size);
    this.notAccepted = Math.max(this.notAccepted, reading.unaccepted);
    this.pastCutoff = reading.nowMs >= cutoffMs;
    return this.tracked.size === 0 && this.pastCutoff;
  }
}
