import { describe, expect, it } from 'vitest';
import { nextSyncStep, promotionSyncSet } from '../../src/agent/sync.js';
import { formatSynchronousStandbyNames, parseSynchronousStandbyNames } from '../../src/postgres/standby-names.js';
import { syncVerdict } from '../../src/model/promotion.js';
import { decide } from '../../src/agent/decide.js';
import { defaultDynamicConfig, type DynamicConfig } from '../../src/config/schema.js';
import { NOW, cluster, leaderKey, member, primaryMember, primaryRuntime, snapshot } from './fixtures.js';

const on: DynamicConfig = { ...defaultDynamicConfig, synchronous_mode: 'on' };
const strict: DynamicConfig = { ...defaultDynamicConfig, synchronous_mode: 'strict' };
const streaming = (...names: string[]) => names.map((n) => ({ applicationName: n, flushLsn: 1000, state: 'streaming', syncState: 'quorum' }));
const syncKey = (members: string[], quorum: number, leader = 'node1') => ({ value: { v: 1 as const, leader, members, quorum }, modRevision: '9' });
const view = (over: Parameters<typeof cluster>[0] = {}) =>
  cluster({ leader: leaderKey('node1'), members: [primaryMember('node1'), member('node2'), member('node3')], ...over });

describe('synchronous_standby_names codec', () => {
  it('round-trips Keel quorum values and the empty value', () => {
    expect(formatSynchronousStandbyNames({ members: ['node3', 'node2'], quorum: 1 })).toBe('ANY 1 ("node2","node3")');
    expect(parseSynchronousStandbyNames('ANY 1 ("node2","node3")')).toEqual({ members: ['node2', 'node3'], quorum: 1 });
    expect(parseSynchronousStandbyNames('')).toEqual({ members: [], quorum: 0 });
    expect(formatSynchronousStandbyNames({ members: [], quorum: 0 })).toBe('');
    expect(parseSynchronousStandbyNames('FIRST 1 (a)')).toBeNull();
  });
});

describe('nextSyncStep (leader)', () => {
  const cases = [
    {
      name: 'off and nothing set: nothing to do',
      config: { ...defaultDynamicConfig, synchronous_mode: 'off' as const }, ssn: '', key: null, replicas: streaming('node2', 'node3'),
      expected: [],
    },
    {
      name: 'on, two streaming standbys, nothing yet: widen the key first',
      config: on, ssn: '', key: null, replicas: streaming('node2', 'node3'),
      expected: [{ kind: 'putSync', set: { members: ['node2', 'node3'], quorum: 1 } }],
    },
    {
      name: 'on, key widened: now set synchronous_standby_names',
      config: on, ssn: '', key: syncKey(['node2', 'node3'], 1), replicas: streaming('node2', 'node3'),
      expected: [{ kind: 'setSynchronousStandbys', value: 'ANY 1 ("node2","node3")' }],
    },
    {
      name: 'on, applied and recorded: settled',
      config: on, ssn: 'ANY 1 ("node2","node3")', key: syncKey(['node2', 'node3'], 1), replicas: streaming('node2', 'node3'),
      expected: [],
    },
    {
      name: 'on, a standby vanished from etcd: PostgreSQL first (the key still covers the old set)',
      config: on, ssn: 'ANY 1 ("node2","node3")', key: syncKey(['node2', 'node3'], 1), replicas: streaming('node2'),
      members: [primaryMember('node1'), member('node2')],
      expected: [{ kind: 'setSynchronousStandbys', value: 'ANY 1 ("node2")' }],
    },
    {
      name: 'on, after PostgreSQL dropped it: narrow the key',
      config: on, ssn: 'ANY 1 ("node2")', key: syncKey(['node2', 'node3'], 1), replicas: streaming('node2'),
      members: [primaryMember('node1'), member('node2')],
      expected: [{ kind: 'putSync', set: { members: ['node2'], quorum: 1 } }],
    },
    {
      name: 'on, PostgreSQL dropped it but the standby left has not flushed past where that took effect: the key waits',
      config: on, ssn: 'ANY 1 ("node2")', key: syncKey(['node2', 'node3'], 1), replicas: streaming('node2').map((r) => ({ ...r, flushLsn: 900 })),
      members: [primaryMember('node1'), member('node2')],
      expected: [],
    },
    {
      name: 'on, PostgreSQL dropped it, the barrier recorded under other names: the key waits for a barrier of these names',
      config: on, ssn: 'ANY 1 ("node2")', key: syncKey(['node2', 'node3'], 1), replicas: streaming('node2'),
      members: [primaryMember('node1'), member('node2')], barrier: { names: 'ANY 1 ("node2","node3")', lsn: 500 },
      expected: [],
    },
    {
      name: 'on, no standby left: go asynchronous and say so',
      config: on, ssn: 'ANY 1 ("node2")', key: syncKey(['node2'], 1), replicas: [],
      members: [primaryMember('node1')],
      expected: [
        { kind: 'setSynchronousStandbys', value: '' },
        { kind: 'event', eventKind: 'async', message: 'node1: no synchronous standby available, running asynchronously' },
      ],
    },
    {
      name: 'strict, no standby left: keep the old names so writes wait',
      config: strict, ssn: 'ANY 1 ("node2")', key: syncKey(['node2'], 1), replicas: [],
      members: [primaryMember('node1')],
      expected: [],
    },
    {
      name: 'key written by the previous leader, PostgreSQL already set: record exactly what it relies on',
      config: on, ssn: 'ANY 1 ("node3")', key: syncKey(['node1', 'node3'], 1, 'node2'), replicas: streaming('node3'),
      expected: [{ kind: 'putSync', set: { members: ['node3'], quorum: 1 } }],
    },
  ];
  it.each(cases)('$name', ({ config, ssn, key, replicas, members, expected, ...row }) => {
    const c = view({ sync: key, ...(members ? { members } : {}) });
    const runtime = primaryRuntime({ synchronousStandbyNames: ssn, replicas });
    // unless a row says otherwise, the names took effect at the leader's position of 1000
    const barrier = 'barrier' in row ? (row.barrier as { names: string; lsn: number }) : { names: ssn, lsn: 1000 };
    expect(nextSyncStep(config, c, runtime, 'node1', NOW, barrier)).toEqual(expected);
  });
});

describe('promotionSyncSet (a replica about to promote)', () => {
  const noLeader = (over: Parameters<typeof cluster>[0] = {}) => cluster({ members: [member('node2'), member('node3')], ...over });
  const cases = [
    { name: 'off: nothing to set', config: { ...on, synchronous_mode: 'off' as const }, view: noLeader(), expected: null },
    { name: 'on with no other replica: runs asynchronously', config: on, view: cluster({ members: [member('node2')] }), expected: null },
    {
      name: 'on: the replicas it sees, the key widened with the old set and the smaller quorum',
      config: on,
      view: noLeader({ sync: syncKey(['node1', 'node2'], 1) }),
      expected: { key: { members: ['node1', 'node3'], quorum: 1 }, standbyNames: 'ANY 1 ("node3")' },
    },
    {
      name: 'strict with nobody in sight: the old set is named, so writes wait for it',
      config: strict,
      view: cluster({ members: [member('node2')], sync: syncKey(['node2', 'node3'], 1) }),
      expected: { key: { members: ['node3'], quorum: 1 }, standbyNames: 'ANY 1 ("node3")' },
    },
    {
      name: 'a stale member key is not a standby',
      config: on,
      view: noLeader({ members: [member('node2'), member('node3', { updatedAtMs: NOW - 60_000 })] }),
      expected: null,
    },
  ];
  it.each(cases)('$name', ({ config, view: v, expected }) => {
    expect(promotionSyncSet(config, v, 'node2', NOW)).toEqual(expected);
  });

  it('decide() puts it on the promote action, so that acting computes nothing', () => {
    const d = decide(snapshot({ config: on, cluster: cluster({ members: [member('node2'), member('node3', { receivedLsn: 500 })] }) }));
    const promote = d.actions.find((a) => a.kind === 'promote');
    expect(promote).toMatchObject({ kind: 'promote', sync: { key: { members: ['node3'], quorum: 1 }, standbyNames: 'ANY 1 ("node3")' } });
  });
});

describe('syncVerdict (promotion in synchronous mode)', () => {
  const noLeader = (members = [member('node2', { receivedLsn: 1000 }), member('node3', { receivedLsn: 900, replayedLsn: 900 })], key = syncKey(['node2', 'node3'], 1)) =>
    cluster({ members, sync: key });
  it('allows the most advanced visible member of the set', () => {
    expect(syncVerdict(member('node2'), noLeader(), on, NOW)).toEqual({ ok: true });
  });
  it('refuses a member outside the set', () => {
    const v = syncVerdict(member('node2'), noLeader(undefined, syncKey(['node3'], 1)), on, NOW);
    expect(v).toMatchObject({ ok: false, why: expect.stringMatching(/not in the synchronous set/) });
  });
  it('refuses when too few of the set are visible to be sure', () => {
    // ANY 1 of (node2, node3): node3 may hold the last commit; node2 alone cannot know
    const v = syncVerdict(member('node2'), noLeader([member('node2')]), on, NOW);
    expect(v).toMatchObject({ ok: false, why: expect.stringMatching(/only 1 of the synchronous set are visible, 2 needed/) });
  });
  it('refuses when a member of the set is further ahead', () => {
    const v = syncVerdict(member('node3', { receivedLsn: 900, replayedLsn: 900 }), noLeader(), on, NOW);
    expect(v).toMatchObject({ ok: false, why: expect.stringMatching(/node2 of the synchronous set is further ahead/) });
  });
  it('a leader handing over (planned switchover) may pick a member of the set that is behind for now: its clean shutdown sends it everything', () => {
    const behind = member('node3', { receivedLsn: 900, replayedLsn: 900 });
    expect(syncVerdict(behind, noLeader(), on, NOW, true)).toEqual({ ok: true });
    // but not one outside the set, nor with too few of the set visible
    expect(syncVerdict(behind, noLeader(undefined, syncKey(['node2'], 1)), on, NOW, true)).toMatchObject({ ok: false });
    expect(syncVerdict(member('node2'), noLeader([member('node2')]), on, NOW, true)).toMatchObject({ ok: false });
  });
  it('with ANY 2 of 2 either member alone suffices', () => {
    const v = syncVerdict(member('node2'), noLeader([member('node2')], syncKey(['node2', 'node3'], 2)), on, NOW);
    expect(v).toEqual({ ok: true });
  });
});
