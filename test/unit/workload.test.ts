// The shared harness's pure parts (src/workload): acknowledged-write log and checks, cluster shapes, waiting.
import { describe, expect, it } from 'vitest';
import { AckLog, acknowledged, lackedIds, missingIds, presentRowsSql } from '../../src/workload/acks.js';
import type { WriteRecord } from '../../src/workload/records.js';
import { describeMembers, leaderOf, settled, shapeIs } from '../../src/workload/shape.js';
import { untilView } from '../../src/workload/wait.js';
import { ackRowId, ackRowSteps } from '../../src/workload/writer.js';
import { cluster, leaderKey, member, NOW, primaryMember } from './fixtures.js';

const record = (id: number, over: Partial<WriteRecord> = {}): WriteRecord => ({ id, writer: 0, mode: 'persistent', via: 'router', sentMs: 0, doneMs: 1, ok: true, ...over });

describe('acknowledged writes', () => {
  it('counts a commit that changed a row, not a failure nor an UPDATE that matched nothing', () => {
    expect(acknowledged(record(1, { rowCount: 1 }))).toBe(true);
    expect(acknowledged(record(2))).toBe(true);
    expect(acknowledged(record(3, { ok: false, error: 'timeout' }))).toBe(false);
    expect(acknowledged(record(4, { kind: 'expire', rowCount: 0 }))).toBe(false);
    expect(missingIds([record(1), record(2, { ok: false }), record(3)], new Set([1]))).toEqual([3]);
  });

  it('keeps the ids of acknowledged changes by kind', () => {
    const log = new AckLog();
    for (const r of [record(1), record(2, { ok: false }), record(1, { kind: 'expire', rowCount: 1 }), record(3, { kind: 'expire', rowCount: 0 }), record(4)]) log.add(r);
    expect(log.ids()).toEqual([1, 4]);
    expect(log.ids('expire')).toEqual([1]);
    expect(log.ids('other')).toEqual([]);
    expect(log.count).toBe(3);
  });

  it('asks the server in chunks and returns the lacked ids in their order', async () => {
    const onServer = new Set(Array.from({ length: 120_000 }, (_, i) => i).filter((i) => i % 1000 !== 7));
    const asked: number[] = [];
    const query = async (sql: string, params: unknown[]) => {
      expect(sql).toBe(presentRowsSql('t'));
      const ids = params[0] as number[];
      asked.push(ids.length);
      return ids.filter((id) => onServer.has(id)).map((id) => ({ id: String(id) }));
    };
    const ids = Array.from({ length: 120_000 }, (_, i) => 119_999 - i);
    const lacked = await lackedIds(query, ids, presentRowsSql('t'));
    expect(asked).toEqual([50_000, 50_000, 20_000]);
    expect(lacked).toHaveLength(120);
    expect(lacked.slice(0, 2)).toEqual([119_007, 118_007]);
  });

  it('gives each writer of a run its own ids, and refuses an eleventh writer', () => {
    expect(ackRowId(3, 2, 5)).toBe(32_000_005);
    const step = ackRowSteps('t', 3, 2)(5);
    expect(step.id).toBe(32_000_005);
    expect(step.statement.values).toEqual([32_000_005, 3, 2]);
    expect(() => ackRowSteps('t', 3, 10)).toThrow(/at most 10 writers/);
  });
});

describe('cluster shapes', () => {
  const three = (over: { sync?: boolean; staleNode3?: boolean; leaderRunning?: boolean } = {}) =>
    cluster({
      leader: leaderKey('node1'),
      members: [primaryMember('node1', { running: over.leaderRunning ?? true }), member('node2'), member('node3', over.staleNode3 ? { updatedAtMs: NOW - 10_000 } : {})],
      sync: over.sync ? { value: { v: 1, leader: 'node1', members: ['node2'], quorum: 1 }, modRevision: '9' } : null,
    });

  it('finds the leader only when its member runs as primary', () => {
    expect(leaderOf(three())?.name).toBe('node1');
    expect(leaderOf(three({ leaderRunning: false }))).toBeUndefined();
    expect(leaderOf(cluster({ members: [primaryMember('node1')] }))).toBeUndefined();
  });

  it('counts only fresh replicas streaming from the leader, and wants a synchronous standby unless asynchronous', () => {
    expect(shapeIs(three(), 2, NOW)).toBe(true);
    expect(shapeIs(three(), 1, NOW)).toBe(false);
    expect(shapeIs(three({ staleNode3: true }), 1, NOW)).toBe(true);
    expect(settled(three(), 2, NOW)).toBe(false);
    expect(settled(three({ sync: true }), 2, NOW)).toBe(true);
    const asynchronous = { ...three(), config: { value: { synchronous_mode: 'off' }, modRevision: '3' } } as unknown as ReturnType<typeof three>;
    expect(settled(asynchronous, 2, NOW)).toBe(true);
  });

  it('fails a wait with what it waited for and how each member looked', async () => {
    const view = three();
    await expect(untilView(async () => view, 'four replicas', (v) => shapeIs(v, 4), { timeoutMs: 50, pollMs: 10 })).rejects.toThrow(
      /^timed out after 0.05 s waiting for four replicas: leader node1; node1: primary\/primary/,
    );
    expect(await untilView(async () => view, 'a leader', (v) => leaderOf(v) !== undefined, { timeoutMs: 50 })).toBe(view);
    expect(describeMembers(null)).toBe('etcd unreadable');
  });
});
