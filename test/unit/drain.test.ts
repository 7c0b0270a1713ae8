import { describe, expect, it } from 'vitest';
import { Drain, drainCutoff, stillInFlight } from '../../src/agent/drain.js';
import type { BusySession } from '../../src/postgres/types.js';

const inTx = (pid: number, sinceMs: number): BusySession => ({ pid, sinceMs, inTransaction: true });
const loggingIn = (pid: number, sinceMs: number): BusySession => ({ pid, sinceMs, inTransaction: false });
const track = (...sessions: BusySession[]) => new Map(sessions.map((s) => [s.pid, s]));
const pids = (m: Map<number, BusySession>) => [...m.keys()].sort();

describe('the drain of a leader handing over', () => {
  it('waits for the transactions in flight at the hold, not for what their sessions start after', () => {
    const first = stillInFlight(new Map(), [inTx(1, 900), inTx(2, 950)], 1000);
    expect(pids(first)).toEqual([1, 2]);
    // 1 is still in the same transaction; 2 committed and began another
    expect(pids(stillInFlight(first, [inTx(1, 900), inTx(2, 1010)], 1000))).toEqual([1]);
    // 1 went idle (it is no longer busy) or is gone
    expect(pids(stillInFlight(first, [inTx(2, 950)], 1000))).toEqual([2]);
    expect(stillInFlight(first, [], 1000).size).toBe(0);
  });

  it('waits for a session still logging in through its first transaction', () => {
    const first = stillInFlight(new Map(), [loggingIn(3, 990)], 1000);
    expect(pids(first)).toEqual([3]);
    // its first transaction began after the cutoff: still its work from before the hold
    const second = stillInFlight(first, [inTx(3, 1020)], 1000);
    expect(pids(second)).toEqual([3]);
    expect(pids(stillInFlight(second, [inTx(3, 1020)], 1000))).toEqual([3]);
    // done: idle, or on to a second transaction
    expect(stillInFlight(second, [], 1000).size).toBe(0);
    expect(stillInFlight(second, [inTx(3, 1080)], 1000).size).toBe(0);
  });

  it('takes on a session seen later only when it, or its transaction, began by the cutoff', () => {
    const tracked = track(inTx(1, 900));
    // a connection a router sent just before it held, visible once its handshake ended
    expect(pids(stillInFlight(tracked, [inTx(1, 900), loggingIn(4, 1040)], 1060))).toEqual([1, 4]);
    // a session that connected or began its transaction after the cutoff is not waited for
    expect(pids(stillInFlight(tracked, [inTx(1, 900), loggingIn(5, 1070), inTx(6, 1090)], 1060))).toEqual([1]);
  });

  it('takes on sessions that begin by the first reading, and until 60 ms after any reading that finds connections not accepted yet', () => {
    let cutoff = drainCutoff(null, { nowMs: 1000, unaccepted: 0 }, 60);
    expect(cutoff).toBe(1000);
    cutoff = drainCutoff(cutoff, { nowMs: 1020, unaccepted: 0 }, 60);
    expect(cutoff).toBe(1000);
    // two connections wait in the kernel for the postmaster: once accepted they start as backends after this reading
    cutoff = drainCutoff(cutoff, { nowMs: 1030, unaccepted: 2 }, 60);
    expect(cutoff).toBe(1090);
    cutoff = drainCutoff(cutoff, { nowMs: 1040, unaccepted: 0 }, 60);
    expect(cutoff).toBe(1090);
    // a queue at the first reading pushes it on from there
    expect(drainCutoff(null, { nowMs: 1000, unaccepted: 1 }, 60)).toBe(1060);
  });

  it('reads the accept queue only until the cutoff has passed, so clients that keep connecting to the node do not hold it', () => {
    const drain = new Drain(60);
    expect(drain.readsQueue).toBe(true);
    // at the hold: one transaction in flight and a connection not accepted yet
    expect(drain.update({ nowMs: 1000, sessions: [inTx(1, 990)], unaccepted: 1 })).toBe(false);
    expect(drain.readsQueue).toBe(true);
    // accepted, it logs in; the transaction ends; the cutoff (1060) has not passed
    expect(drain.update({ nowMs: 1040, sessions: [loggingIn(2, 1035)], unaccepted: 0 })).toBe(false);
    // its first transaction is waited for; this reading is past the cutoff
    expect(drain.update({ nowMs: 1070, sessions: [inTx(2, 1065)], unaccepted: 0 })).toBe(false);
    expect(drain.readsQueue).toBe(false);
    // from now on the accept queue is not read, and a queue given anyway moves nothing
    expect(drain.update({ nowMs: 1080, sessions: [inTx(2, 1065)], unaccepted: 3 })).toBe(false);
    expect(drain.readsQueue).toBe(false);
    expect(drain.pending).toBe(1);
    expect(drain.update({ nowMs: 1100, sessions: [loggingIn(7, 1095)], unaccepted: 5 })).toBe(true);
    expect(drain).toMatchObject({ waitedFor: 1, notAccepted: 1 });
  });

  it('counts the sessions taken on after the first reading, and how long after it the last was seen', () => {
    const drain = new Drain(60);
    // a connection not accepted yet: what begins until 1060 is taken on
    expect(drain.update({ nowMs: 1000, sessions: [inTx(1, 990), loggingIn(2, 995)], unaccepted: 1 })).toBe(false);
    expect(drain).toMatchObject({ lateSessions: 0, lateByMs: 0 });
    // a session idle at the first reading begins a transaction before the cutoff: taken on, late
    expect(drain.update({ nowMs: 1030, sessions: [inTx(1, 990), inTx(3, 1025)], unaccepted: 0 })).toBe(false);
    expect(drain).toMatchObject({ lateSessions: 1, lateByMs: 30 });
    // one begun after the cutoff is not taken on, so not counted
    expect(drain.update({ nowMs: 1070, sessions: [inTx(3, 1025), inTx(4, 1065)], unaccepted: 0 })).toBe(false);
    expect(drain.update({ nowMs: 1080, sessions: [inTx(4, 1065)], unaccepted: 0 })).toBe(true);
    expect(drain).toMatchObject({ waitedFor: 2, lateSessions: 1, lateByMs: 30 });
  });

  it('takes on only what the first reading shows, and what a queue found then brings', () => {
    const drain = new Drain(60);
    expect(drain.update({ nowMs: 1000, sessions: [inTx(1, 990)], unaccepted: 0 })).toBe(false);
    // the cutoff is the first reading: a transaction a persistent session begins after it is not waited for
    expect(drain.update({ nowMs: 1020, sessions: [inTx(1, 990), inTx(2, 1010)], unaccepted: 0 })).toBe(false);
    expect(drain.pending).toBe(1);
    expect(drain.update({ nowMs: 1040, sessions: [inTx(2, 1010)], unaccepted: 0 })).toBe(true);
    expect(drain).toMatchObject({ waitedFor: 1, lateSessions: 0 });
    // a connection waiting to be accepted at the first reading starts as a backend after it: taken on, late
    const queued = new Drain(60);
    expect(queued.update({ nowMs: 1000, sessions: [], unaccepted: 1 })).toBe(false);
    expect(queued.update({ nowMs: 1015, sessions: [loggingIn(5, 1015)], unaccepted: 0 })).toBe(false);
    expect(queued.update({ nowMs: 1040, sessions: [inTx(5, 1035)], unaccepted: 0 })).toBe(false);
    expect(queued.update({ nowMs: 1070, sessions: [], unaccepted: 0 })).toBe(true);
    expect(queued).toMatchObject({ waitedFor: 1, notAccepted: 1, lateSessions: 1, lateByMs: 15 });
  });

  it('ends at the first reading past the cutoff with nothing in flight', () => {
    const drain = new Drain(60);
    expect(drain.update({ nowMs: 1000, sessions: [], unaccepted: 0 })).toBe(true);
    expect(drain).toMatchObject({ waitedFor: 0, notAccepted: 0, readsQueue: false });
  });
});
