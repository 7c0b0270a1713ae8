/**
 * CLOCK_MONOTONIC in milliseconds. On Linux, Node's hrtime is that clock:
 * one system-wide count that every process shares and that no wall-clock
 * step (NTP, an operator) moves, so a deadline can cross from the agent to
 * the guard as a number.
 */
export function monoNowMs(): number {
  // microseconds first: nanoseconds since boot pass 2^53 after 104 days
  return Number(process.hrtime.bigint() / 1000n) / 1000;
}

/** A wall-clock deadline turned into a monotonic one, as of one reading of both clocks. */
export function toMonotonicDeadline(deadlineMs: number, wallNowMs: number, monoNow: number): number {
  return Math.max(0, monoNow + (deadlineMs - wallNowMs));
}
