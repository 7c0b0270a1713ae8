import { describe, expect, it } from 'vitest';
import { keys } from '../../src/dcs/codec.js';
import { FiguresFilter } from '../../src/dcs/wake-filter.js';
import type { MemberArchive, MemberMetrics, MemberValue, StatusValue } from '../../src/model/values.js';

const k = keys('c1');

function member(overrides: Partial<MemberValue> = {}): MemberValue {
  return {
    v: 1, name: 'node2', role: 'replica', state: 'replica', running: true, streaming: true, timeline: 3,
    walLsn: null, receivedLsn: 1000, replayedLsn: 990, upstream: 'node1', zone: 'a', tags: {},
    apiUrl: 'https://127.0.0.1:8008', pgHost: '127.0.0.1', pgPort: 5432, reason: 'following leader node1, streaming',
    systemId: '7', agentPid: 10, postmasterPid: 11, dataDir: '/d', updatedAtMs: 1,
    ...overrides,
  };
}

const load = (cpuPercent: number): MemberMetrics => ({ cpuPercent, connections: 3, roQueriesPerSecond: 10 });

const put = (key: string, value: unknown, rev = '1') => ({ key, value: typeof value === 'string' ? value : JSON.stringify(value), modRevision: rev });

describe('FiguresFilter', () => {
  it("wakes for a member key's first put and for what it says, not for its figures", () => {
    const f = new FiguresFilter(k);
    const key = k.member('node2');
    expect(f.wakes(put(key, member()))).toBe(true);
    // WAL positions, load, archiving counts and the time of the put
    expect(f.wakes(put(key, member({ receivedLsn: 5000, replayedLsn: 4000, updatedAtMs: 900 })))).toBe(false);
    expect(f.wakes(put(key, member({ metrics: load(40), updatedAtMs: 1900 })))).toBe(false);
    // a change of state, streaming or role wakes
    expect(f.wakes(put(key, member({ streaming: false })))).toBe(true);
    expect(f.wakes(put(key, member({ streaming: false, replayedLsn: 7000 })))).toBe(false);
    expect(f.wakes(put(key, member({ streaming: false, role: 'primary' })))).toBe(true);
    expect(f.wakes(put(key, member({ streaming: false, role: 'primary', state: 'primary' })))).toBe(true);
    // the reason alone does not: words for people, it rides with the figures
    expect(f.wakes(put(key, member({ streaming: false, role: 'primary', state: 'primary', reason: 'promoted' })))).toBe(false);
    expect(f.wakes(put(key, member({ streaming: false, role: 'primary', state: 'primary', reason: 'leading', updatedAtMs: 2900 })))).toBe(false);
  });

  it("wakes when a member's archiving state changes, not for its counts", () => {
    const f = new FiguresFilter(k);
    const key = k.member('node1');
    const archive = (state: 'ok' | 'failing', archivedCount: number): MemberArchive => ({
      state, archivedCount, failedCount: 0, lastArchivedWal: null, lastArchivedAtMs: null, lastFailedWal: null, lastFailedAtMs: null, lagBytes: 0, lagSeconds: 0, atMs: archivedCount,
    });
    expect(f.wakes(put(key, member({ archive: archive('ok', 1) })))).toBe(true);
    expect(f.wakes(put(key, member({ archive: archive('ok', 2) })))).toBe(false);
    expect(f.wakes(put(key, member({ archive: archive('failing', 2) })))).toBe(true);
  });

  it("wakes for the status key's timeline and handover point, not for the leader's WAL position", () => {
    const f = new FiguresFilter(k);
    const status = (s: Partial<StatusValue>): StatusValue => ({ v: 1, leader: 'node1', timeline: 3, walLsn: 100, updatedAtMs: 1, ...s });
    expect(f.wakes(put(k.status, status({})))).toBe(true);
    expect(f.wakes(put(k.status, status({ walLsn: 900, updatedAtMs: 2 })))).toBe(false);
    expect(f.wakes(put(k.status, status({ walLsn: 950, shutdownCheckpointLsn: 950 })))).toBe(true);
    expect(f.wakes(put(k.status, status({ leader: 'node2', timeline: 4 })))).toBe(true);
  });

  it('wakes for every other key, every delete and every value that is not a JSON object', () => {
    const f = new FiguresFilter(k);
    expect(f.wakes(put(k.leader, { v: 1, name: 'node1' }))).toBe(true);
    expect(f.wakes(put(k.leader, { v: 1, name: 'node1' }))).toBe(true);
    const key = k.member('node3');
    expect(f.wakes(put(key, member({ name: 'node3' })))).toBe(true);
    expect(f.wakes({ key, value: null, modRevision: '2' })).toBe(true);
    // the same value again after the delete is news
    expect(f.wakes(put(key, member({ name: 'node3' })))).toBe(true);
    expect(f.wakes(put(key, 'not json'))).toBe(true);
    expect(f.wakes(put(key, 'not json'))).toBe(true);
    expect(f.wakes(put(key, '[1,2]'))).toBe(true);
  });

  it('forgets what it saw when the watch starts again', () => {
    const f = new FiguresFilter(k);
    const key = k.member('node2');
    expect(f.wakes(put(key, member()))).toBe(true);
    f.forget();
    expect(f.wakes(put(key, member({ replayedLsn: 5 })))).toBe(true);
  });
});
