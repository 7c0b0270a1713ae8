/**
 * What a fault did to the writes, computed from records alone (no I/O):
 * leadership tenures, split-brain writes, writes past a fork, unavailability.
 *
 * Split-brain write (the definition the suite enforces):
 *   an acknowledged write whose transaction was still running on node X
 *   (its RETURNING clause read clock_timestamp() = stmtMs on X, and X is
 *   the server that answered: inet_server_addr()) at a moment when X
 *   provably did not hold the leader key.
 *
 * "Provably" makes every bound conservative, so a reported split-brain write
 * is a real one (one clock: every process runs on this machine). Leadership
 * comes from leader samples ordered by etcd revision (observer.ts): a run of
 * samples naming X is a tenure of X; the change to the next run happened at
 * a revision r no later than that run's first sample, and r existed by the
 * time T(r) = the earliest arrival of any sample of revision >= r. So:
 *   - a tenure of X ends no later than T(first revision of the next run):
 *     every sample arrives after the fact, so this is an upper bound;
 *   - a tenure starts no later than T(its first revision), and no later than
 *     the `history` entry X appends when it promotes (after taking the key,
 *     before accepting writes). It is taken to start `startSlackMs` before
 *     the earlier of the two, covering the observer's lag when X took the key
 *     back without promoting, but never before X's own previous tenure ended:
 *     a write in that gap is exactly what must be caught.
 * Commits whose statement ran before the bound but whose answer arrived
 * after it are not proven violations (the commit may have preceded the loss
 * of the lease); they are counted apart as `lateAcks`. Writes are judged by
 * the server that ran them, whichever way the client came (through the
 * router or straight to a node).
 */
import type { HistoryEntry } from '../model/values.js';
import type { LeaderSample, WriteRecord } from './records.js';

export const startSlackMs = 2000;

export interface Tenure {
  node: string;
  /** T(first revision) - startSlackMs */
  startMs: number;
  /** the earlier of T(first revision) and the node's promotion in history: it led by then at the latest */
  observedMs: number;
  /** upper bound of the end; Infinity while it lasts */
  endMs: number;
}

/** Leadership tenures from leader samples of any source and the promotions recorded in `history`. */
export function tenures(samples: LeaderSample[], history: Pick<HistoryEntry, 'leader' | 'atMs'>[] = []): Tenure[] {
  const sorted = [...samples].sort((a, b) => a.rev - b.rev || a.atMs - b.atMs);
  // earliest arrival among samples of revision >= sorted[i].rev
  const byRevision = new Array<number>(sorted.length);
  let earliest = Infinity;
  for (let i = sorted.length - 1; i >= 0; i--) {
    earliest = Math.min(earliest, sorted[i]!.atMs);
    byRevision[i] = earliest;
  }
  const result: Tenure[] = [];
  let current: Tenure | null = null;
  let currentLeader: string | null | undefined = undefined;
  sorted.forEach((sample, i) => {
    if (sample.leader === currentLeader) return;
    const changedBy = byRevision[i]!;
    if (current !== null) {
      current.endMs = changedBy;
      result.push(current);
      current = null;
    }
    currentLeader = sample.leader;
    if (sample.leader !== null) current = { node: sample.leader, startMs: changedBy, observedMs: changedBy, endMs: Infinity };
  });
  if (current !== null) result.push(current);
  result.forEach((t, i) => {
    const previousStart = i > 0 ? result[i - 1]!.startMs : -Infinity;
    const promoted = history.filter((h) => h.leader === t.node && h.atMs > previousStart && h.atMs < t.startMs);
    const observedBy = Math.min(t.startMs, ...promoted.map((h) => h.atMs));
    const ownPreviousEnd = Math.max(-Infinity, ...result.slice(0, i).filter((p) => p.node === t.node).map((p) => p.endMs));
    t.observedMs = observedBy;
    t.startMs = Math.max(observedBy - startSlackMs, ownPreviousEnd);
  });
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
    const during = mine.find((t) => w.stmtMs! >= t.startMs && w.stmtMs! <= t.endMs);
    if (during === undefined) verdicts.splitBrain.push(w);
    else if (w.doneMs > during.endMs) verdicts.lateAcks.push(w);
  }
  return verdicts;
}

/**
 * Did the old primary stop acknowledging writes before any other member led?
 * `nextLeadMs` is the first moment another member was seen leading after
 * `fromMs` (an upper bound of when it took the key); `lastAckStmtMs` is the
 * latest statement time of a write acknowledged by the old primary, up to
 * its own next tenure if it led again. marginMs = lastAckStmtMs - nextLeadMs:
 * above 0 proves the old primary acknowledged a write while another member
 * held the key; at or below 0 it stopped first, as far as the observer's lag
 * (about one 200 ms poll) lets us see.
 */
export interface StopMargin {
  oldPrimary: string;
  nextLeader: string;
  nextLeadMs: number;
  lastAckStmtMs: number | null;
  /** when that write's answer reached the client */
  lastAckDoneMs: number | null;
  marginMs: number | null;
}

/** null when no other member led after `fromMs`. */
export function oldPrimaryStopMargin(
  writes: WriteRecord[],
  allTenures: Tenure[],
  oldPrimary: string,
  fromMs: number,
  nodeOfAddress: (address: string) => string | null,
): StopMargin | null {
  const next = allTenures.find((t) => t.node !== oldPrimary && t.observedMs > fromMs);
  if (next === undefined) return null;
  const ledAgain = allTenures.find((t) => t.node === oldPrimary && t.observedMs > next.observedMs);
  const until = ledAgain?.startMs ?? Infinity;
  let last: WriteRecord | null = null;
  for (const w of writes) {
    if (!w.ok || w.server === undefined || w.stmtMs === undefined) continue;
    if (nodeOfAddress(w.server) !== oldPrimary || w.stmtMs >= until) continue;
    if (last === null || w.stmtMs > last.stmtMs!) last = w;
  }
  return {
    oldPrimary,
    nextLeader: next.node,
    nextLeadMs: next.observedMs,
    lastAckStmtMs: last?.stmtMs ?? null,
    lastAckDoneMs: last?.doneMs ?? null,
    marginMs: last === null ? null : last.stmtMs! - next.observedMs,
  };
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
