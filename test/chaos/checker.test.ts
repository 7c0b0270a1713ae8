// The chaos checker's pure rules (no cluster), shared in src/workload: runs with `make test`.
import { describe, expect, it } from 'vitest';
import { missingIds } from '../../src/workload/acks.js';
import type { LeaderSample, WriteRecord } from '../../src/workload/records.js';
import { classifyWrites, forkedAcks, longestGapMs, oldPrimaryStopMargin, startSlackMs, tenures } from '../../src/workload/split-brain.js';

const sample = (rev: number, leader: string | null, atMs: number, source: LeaderSample['source'] = 'watch'): LeaderSample => ({ rev, leader, atMs, source });

const write = (id: number, server: string, stmtMs: number, doneMs = stmtMs + 5, ok = true): WriteRecord => ({
  id, writer: 0, mode: 'persistent', via: 'router', sentMs: stmtMs - 2, doneMs, ok, server, stmtMs,
});

/** A write of a client connected straight to `node` (not through the router). */
const directWrite = (id: number, node: string, server: string, stmtMs: number, doneMs = stmtMs + 5): WriteRecord => ({
  ...write(id, server, stmtMs, doneMs), writer: 4, via: 'direct', node,
});

const nodeOf = (address: string) => ({ '10.0.0.1': 'a', '10.0.0.2': 'b' })[address] ?? null;

describe('tenures', () => {
  it('turns leader changes into tenures whose ends are the first sign of the change', () => {
    const t = tenures([sample(10, 'a', 1000), sample(20, null, 5000), sample(25, 'b', 6000)]);
    expect(t).toEqual([
      { node: 'a', startMs: 1000 - startSlackMs, observedMs: 1000, endMs: 5000 },
      { node: 'b', startMs: 6000 - startSlackMs, observedMs: 6000, endMs: Infinity },
    ]);
  });

  it('orders samples by revision, so a watch event that arrived late does not extend a tenure', () => {
    // the poll saw b at revision 30 at 5200; the watch delivered a's deletion (rev 20) only at 9000
    const t = tenures([sample(10, 'a', 1000), sample(30, 'b', 5200, 'poll'), sample(20, null, 9000), sample(25, 'b', 9001)]);
    expect(t[0]).toEqual({ node: 'a', startMs: 1000 - startSlackMs, observedMs: 1000, endMs: 5200 });
    expect(t[1]!.node).toBe('b');
    expect(t[1]!.startMs).toBe(5200 - startSlackMs);
  });

  it('starts a tenure no later than the promotion its leader recorded in history', () => {
    // the observer saw b only at 9000 (it lagged); b promoted at 5000 and wrote at 5100
    const t = tenures([sample(10, 'a', 1000), sample(20, 'b', 9000)], [{ leader: 'b', atMs: 5000 }]);
    expect(t[1]!.startMs).toBe(5000 - startSlackMs);
    expect(t[1]!.observedMs).toBe(5000);
    expect(classifyWrites([write(1, '10.0.0.2', 5100)], t, nodeOf).splitBrain).toEqual([]);
  });

  it('never starts a tenure before the same node lost the previous one: writes in that gap are caught', () => {
    const t = tenures([sample(10, 'a', 1000), sample(20, null, 5000), sample(30, 'a', 5500)]);
    expect(t[1]!.startMs).toBe(5000);
    expect(classifyWrites([write(1, '10.0.0.1', 4900), write(2, '10.0.0.1', 5200)], t, nodeOf).splitBrain.map((w) => w.id)).toEqual([]);
    const gap = tenures([sample(10, 'a', 1000), sample(20, null, 5000), sample(30, 'a', 9000)]);
    expect(classifyWrites([write(3, '10.0.0.1', 6000)], gap, nodeOf).splitBrain.map((w) => w.id)).toEqual([3]);
  });

  it('keeps one tenure through samples that repeat the same leader (a rebind)', () => {
    expect(tenures([sample(10, 'a', 1000), sample(12, 'a', 2000, 'poll'), sample(14, 'a', 3000)])).toHaveLength(1);
  });
});

describe('classifyWrites', () => {
  const t = tenures([sample(10, 'a', 1000), sample(20, null, 5000), sample(25, 'b', 6000)]);

  it('accepts writes that ran on the leader during its tenure', () => {
    expect(classifyWrites([write(1, '10.0.0.1', 4000), write(2, '10.0.0.2', 7000)], t, nodeOf).splitBrain).toEqual([]);
  });

  it('counts a write whose statement ran on an old leader after its tenure ended', () => {
    const late = write(3, '10.0.0.1', 5100);
    expect(classifyWrites([late], t, nodeOf).splitBrain).toEqual([late]);
  });

  it('counts a write served by a node that never led', () => {
    const never = write(4, '10.0.0.2', 3000);
    expect(classifyWrites([never], t, nodeOf).splitBrain).toEqual([never]);
  });

  it('sets apart answers that arrived after the tenure for statements that ran within it', () => {
    const verdicts = classifyWrites([write(5, '10.0.0.1', 4990, 5300)], t, nodeOf);
    expect(verdicts.splitBrain).toEqual([]);
    expect(verdicts.lateAcks.map((w) => w.id)).toEqual([5]);
  });

  it('ignores failed writes and flags unknown servers', () => {
    const verdicts = classifyWrites([write(6, '10.0.0.1', 9000, 9005, false), write(7, '10.9.9.9', 2000)], t, nodeOf);
    expect(verdicts.splitBrain).toEqual([]);
    expect(verdicts.unknownServer.map((w) => w.id)).toEqual([7]);
  });
});

describe('direct clients', () => {
  // a led until 5000 (key gone), b leads from 6000; both nodes reachable by direct clients throughout
  const t = tenures([sample(10, 'a', 1000), sample(20, null, 5000), sample(25, 'b', 6000)]);

  it('counts a write acknowledged by the old primary to a direct client after its tenure, as for the router', () => {
    const orphan = directWrite(1, 'a', '10.0.0.1', 7000);
    const verdicts = classifyWrites([orphan, write(2, '10.0.0.2', 7000)], t, nodeOf);
    expect(verdicts.splitBrain).toEqual([orphan]);
    expect(verdicts.splitBrain[0]!.via).toBe('direct');
  });

  it('judges by the server that answered, not by the node the client meant to reach', () => {
    // a direct client of a whose address was answered by b (cannot happen on a real network, but the rule is the server)
    const verdicts = classifyWrites([directWrite(3, 'a', '10.0.0.2', 3000), directWrite(4, 'a', '10.0.0.1', 3000)], t, nodeOf);
    expect(verdicts.splitBrain.map((w) => w.id)).toEqual([3]);
  });

  it('accepts direct writes to a node during its tenure, including a replica that was promoted under a kept session', () => {
    const verdicts = classifyWrites([directWrite(5, 'a', '10.0.0.1', 4000), directWrite(6, 'b', '10.0.0.2', 6500)], t, nodeOf);
    expect(verdicts.splitBrain).toEqual([]);
    expect(verdicts.lateAcks).toEqual([]);
  });

  it('counts a direct write as lost when the final leader lacks it', () => {
    const acked = [write(7, '10.0.0.1', 4000), directWrite(8, 'a', '10.0.0.1', 5500)];
    expect(missingIds(acked, new Set([7]))).toEqual([8]);
  });
});

describe('oldPrimaryStopMargin', () => {
  const t = tenures([sample(10, 'a', 1000), sample(20, null, 5000), sample(25, 'b', 6000)]);

  it('is negative when the old primary acknowledged its last write before the next leader was seen', () => {
    const margin = oldPrimaryStopMargin([write(1, '10.0.0.1', 4000), directWrite(2, 'a', '10.0.0.1', 4500), write(3, '10.0.0.2', 6500)], t, 'a', 2000, nodeOf);
    expect(margin).toMatchObject({ oldPrimary: 'a', nextLeader: 'b', nextLeadMs: 6000, lastAckStmtMs: 4500, marginMs: -1500 });
  });

  it('is positive when a direct client got an acknowledgement from the old primary after another member led', () => {
    const margin = oldPrimaryStopMargin([write(1, '10.0.0.1', 4000), directWrite(2, 'a', '10.0.0.1', 6800, 6810)], t, 'a', 2000, nodeOf);
    expect(margin?.marginMs).toBe(800);
    expect(margin?.lastAckDoneMs).toBe(6810);
  });

  it('ignores failed writes and the writes of the old primary once it leads again', () => {
    const again = tenures([sample(10, 'a', 1000), sample(20, 'b', 5000), sample(30, 'a', 9000)]);
    const writes = [write(1, '10.0.0.1', 4000), write(2, '10.0.0.1', 5500, 5505, false), write(3, '10.0.0.1', 9500)];
    expect(oldPrimaryStopMargin(writes, again, 'a', 2000, nodeOf)?.marginMs).toBe(-1000);
  });

  it('is null when no other member led after the fault began, and has no margin when the old primary acknowledged nothing', () => {
    expect(oldPrimaryStopMargin([write(1, '10.0.0.1', 4000)], t, 'a', 7000, nodeOf)).toBeNull();
    expect(oldPrimaryStopMargin([write(1, '10.0.0.2', 7000)], t, 'a', 2000, nodeOf)).toMatchObject({ nextLeader: 'b', lastAckStmtMs: null, marginMs: null });
  });
});

describe('write accounting', () => {
  it('finds acknowledged ids missing from a node', () => {
    expect(missingIds([write(1, 'x', 1), write(2, 'x', 2), write(3, 'x', 3, 4, false)], new Set([1]))).toEqual([2]);
  });

  it('measures the longest stretch without success, including the ones at both ends', () => {
    expect(longestGapMs([900, 1100, 1200, 4200, 4300], 1000, 5000)).toBe(3000);
    expect(longestGapMs([900], 1000, 5000)).toBe(4100);
    expect(longestGapMs([1000, 1500, 2000], 1000, 9000)).toBe(7000);
  });

  it('finds acknowledged writes past the fork point of a later timeline', () => {
    const acked = [
      { ...write(1, 'x', 1), timeline: 1, lsn: '0/100' },
      { ...write(2, 'x', 2), timeline: 1, lsn: '0/300' },
      { ...write(3, 'x', 3), timeline: 2, lsn: '0/400' },
    ];
    const history = [{ timeline: 2, switchLsn: 0x200, leader: 'b', atMs: 0, reason: '' }];
    expect(forkedAcks(acked, history, (lsn) => parseInt(lsn.split('/')[1]!, 16)).map((w) => w.id)).toEqual([2]);
  });
});
