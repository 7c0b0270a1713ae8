/**
 * What a fault did to the writes, computed from records alone (no I/O):
 * leadership tenures, split-brain writes, lost writes, unavailability.
 *
 * Split-brain write (the definition the suite enforces):
 *   an acknowledged write whose transaction was still running on node X
 *   (its RETURNING clause read clock_timestamp() = stmtMs on X, and X is
 *   the server that answered: inet_server_addr()) at a moment when X
 *   provably did not hold the leader key.
 *
 * "Provably" makes every bound conservative, so a reported split-brain write
 * is a real one (one clock: every process runs on this machine):
 *   - a tenure of X ends no later than the first of: the watch event that
 *     showed the key gone or naming another member; the answer to a poll
 *     SENT after the tenure was observed to start that names someone else
 *     or no one; the `history` entry (atMs) of another member's promotion,
 *     which it appends only after it took the key. Observations come after
 *     the fact, so each is an upper bound of the true end.
 *   - a tenure starts `startSlackMs` before it was first observed, covering
 *     the observer's lag (the router sends X writes only after X published
 *     itself as a running primary, which is later still).
 * Commits whose statement ran before the bound but whose answer arrived
 * after it are not proven violations (the commit may have preceded the loss
 * of the lease); they are counted apart as `lateAcks`.
 */
import type { HistoryEntry } from '../../src/dcs/types.js';
import type { LeaderObservation } from './observer.js';
import type { WriteRecord } from './workload.js';

export const startSlackMs = 1000;

export interface Tenure {
  node: string;
  startMs: number;
  /** upper bound of the end; Infinity while it lasts */
  endMs: number;
}

/** Leadership tenures from the observations (watch first, polls and history to tighten the ends). */
export function tenures(observations: LeaderObservation[], history: HistoryEntry[]): Tenure[] {
  const sorted = [...observations].sort((a, b) => a.atMs - b.atMs);
  const watch = sorted.filter((o) => o.source === 'watch');
  const polls = sorted.filter((o) => o.source === 'poll');
  // The watch is the primary source; polls alone when it saw nothing (e.g. it started late).
  const primary = watch.length > 0 ? watch : polls;
  const result: Tenure[] = [];
  let current: Tenure | null = null;
  const firstPoll = polls[0];
  // A leader already in place when the observer started: the first poll shows it before any watch event.
  if (watch.length > 0 && firstPoll !== undefined && firstPoll.leader !== null && firstPoll.atMs < watch[0]!.atMs) {
    current = { node: firstPoll.leader, startMs: firstPoll.atMs, endMs: Infinity };
  }
  for (const o of primary) {
    if (current !== null && o.leader === current.node) continue;
    if (current !== null) {
      current.endMs = o.atMs;
      result.push(current);
      current = null;
    }
    if (o.leader !== null) current = { node: o.leader, startMs: o.atMs, endMs: Infinity };
  }
  if (current !== null) result.push(current);
  for (const t of result) {
    const poll = polls.find((p) => p.sentMs > t.startMs && p.leader !== t.node);
    if (poll !== undefined) t.endMs = Math.min(t.endMs, poll.atMs);
    const promotion = history.find((h) => h.leader !== t.node && h.atMs > t.startMs);
    if (promotion !== undefined) t.endMs = Math.min(t.endMs, promotion.atMs);
  }
  return result;
}

export interface WriteVerdicts {
  splitBrain: WriteRecord[];
  lateAcks: WriteRecord[];
  /** acknowledged by an address that is no node (must not happen) */
  unknownServer: WriteRecord[];
}

export function classifyWrites(writes: WriteRecord[], allTenures: Tenure[], nodeOfAddress: (address: string) => string | null): WriteVerdicts {
  const verdicts: WriteVerdicts = { splitBrain: [], lateAcks: [], unknownServer: [] };
  for (const w of writes) {
    if (!w.ok || w.server === undefined || w.stmtMs === undefined) continue;
    const node = nodeOfAddress(w.server);
    if (node === null) {
      verdicts.unknownServer.push(w);
      continue;
    }
    const mine = allTenures.filter((t) => t.node === node);
    const during = mine.find((t) => w.stmtMs! >= t.startMs - startSlackMs && w.stmtMs! <= t.endMs);
    if (during === undefined) verdicts.splitBrain.push(w);
    else if (w.doneMs > during.endMs) verdicts.lateAcks.push(w);
  }
  return verdicts;
}

/** Ids acknowledged to a client but absent from `present`. */
export function missingIds(acked: WriteRecord[], present: Set<number>): number[] {
  return acked.filter((w) => w.ok && !present.has(w.id)).map((w) => w.id);
}

/**
 * The longest stretch within [fromMs, toMs] without a successful operation:
 * from the last success before `fromMs` (or fromMs itself) through each
 * success to `toMs`.
 */
export function longestGapMs(successTimesMs: number[], fromMs: number, toMs: number): number {
  const times = [...successTimesMs].sort((a, b) => a - b);
  let previous = fromMs;
  for (const t of times) if (t <= fromMs) previous = t;
  let longest = 0;
  for (const t of times) {
    if (t <= fromMs || t > toMs) continue;
    longest = Math.max(longest, t - previous);
    previous = t;
  }
  return Math.max(longest, toMs - previous);
}

/** Acknowledged writes past the point where a later timeline forked off theirs: they cannot survive. */
export function forkedAcks(acked: WriteRecord[], history: HistoryEntry[], lsnToNumber: (lsn: string) => number): WriteRecord[] {
  return acked.filter((w) => {
    if (!w.ok || w.timeline === undefined || w.lsn === undefined) return false;
    const fork = history.findLast((h) => h.timeline === w.timeline! + 1);
    return fork !== undefined && lsnToNumber(w.lsn) > fork.switchLsn;
  });
}
