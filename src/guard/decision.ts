/**
 * What the fencing guard does at each check, as a pure function of what it
 * knows: the fed deadline, the monotonic time, whether PostgreSQL could
 * accept writes, and whether it already tripped. No I/O.
 */

export interface GuardFacts {
  /** CLOCK_MONOTONIC ms after which PostgreSQL must not accept writes; null before the first feed */
  deadlineMonoMs: number | null;
  nowMonoMs: number;
  /** standby.signal is in the data directory: PostgreSQL runs (or will start) read-only */
  standby: boolean;
  /** a postmaster verified to run on this data directory */
  postmasterRunning: boolean;
  /** the guard fenced already since the deadline it holds lapsed */
  tripped: boolean;
}

export type GuardVerdict =
  /** never fed: the guard has no deadline to enforce and never fences */
  | { kind: 'unfed' }
  /** within the deadline */
  | { kind: 'armed'; remainingMs: number }
  /** the deadline passed but nothing can write: a standby, or no postmaster */
  | { kind: 'lapsed'; why: 'standby' | 'no-postmaster' }
  /** the deadline passed and a postmaster that may accept writes runs: stop it now (first: the trip itself, logged) */
  | { kind: 'fence'; first: boolean };

export function guardVerdict(f: GuardFacts): GuardVerdict {
  if (f.deadlineMonoMs === null) return { kind: 'unfed' };
  if (f.nowMonoMs < f.deadlineMonoMs) return { kind: 'armed', remainingMs: f.deadlineMonoMs - f.nowMonoMs };
  // A standby cannot write; if it is promoted later without a new feed, the next check sees standby.signal gone.
  if (f.standby) return { kind: 'lapsed', why: 'standby' };
  if (!f.postmasterRunning) return { kind: 'lapsed', why: 'no-postmaster' };
  return { kind: 'fence', first: !f.tripped };
}

export interface FedState {
  deadlineMonoMs: number | null;
  tripped: boolean;
}

/**
 * A feed replaces the deadline (an earlier one only makes the guard stricter:
 * the agent says so when its lease is gone). A tripped guard stays tripped
 * until a feed carries a later deadline than the one that lapsed, and one
 * still ahead: a deadline already past ends no trip.
 */
export function applyFeed(state: FedState, deadlineMonoMs: number, nowMonoMs: number): FedState {
  const later = state.deadlineMonoMs === null || deadlineMonoMs > state.deadlineMonoMs;
  return { deadlineMonoMs, tripped: state.tripped && !(later && deadlineMonoMs > nowMonoMs) };
}

/** The hardware watchdog hears from a guard that was fed and has not tripped; a tripped guard lets the host reset. */
export function watchdogKeepAlive(state: FedState): boolean {
  return state.deadlineMonoMs !== null && !state.tripped;
}
