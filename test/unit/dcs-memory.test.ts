import { beforeEach, describe, expect, it } from 'vitest';
import { defaultDynamicConfig } from '../../src/config/schema.js';
import { MemoryDcs } from '../../src/dcs/memory.js';
import type { MemberValue } from '../../src/model/values.js';
import type { Clock } from '../../src/util/clock.js';

class ManualClock implements Clock {
  constructor(public ms = 1_000_000) {}
  now(): number {
    return this.ms;
  }
  advance(ms: number): void {
    this.ms += ms;
  }
}

function member(name: string): MemberValue {
  return {
    v: 1,
    name,
    role: 'replica',
    state: 'streaming',
    running: true,
    streaming: true,
    timeline: 1,
    walLsn: null,
    receivedLsn: 10,
    replayedLsn: 10,
    upstream: null,
    zone: 'local',
    tags: {},
    apiUrl: 'http://127.0.0.1:8008',
    pgHost: '127.0.0.1',
    pgPort: 5432,
    reason: 'test',
    systemId: null,
    agentPid: null,
    postmasterPid: null,
    dataDir: '/tmp/x',
    updatedAtMs: 0,
  };
}

describe('MemoryDcs', () => {
  let clock: ManualClock;
  let dcs: MemoryDcs;
  beforeEach(() => {
    clock = new ManualClock();
    dcs = new MemoryDcs({ cluster: 'c1', clock });
  });

  it('create-if-absent: exactly one claimer wins', async () => {
    const [a, b] = await Promise.all([dcs.grantLease(10), dcs.grantLease(10)]);
    const results = await Promise.all([dcs.acquireLeader('node1', a), dcs.acquireLeader('node2', b)]);
    expect(results.filter(Boolean)).toHaveLength(1);
    expect((await dcs.readCluster()).leader?.value.name).toBe('node1');
    expect((await dcs.readCluster()).leader?.leaseId).toBe(a);

    expect(await dcs.claimInitialize({ v: 1, by: 'node1', systemId: null })).toBe(true);
    expect(await dcs.claimInitialize({ v: 1, by: 'node2', systemId: null })).toBe(false);
    expect(await dcs.requestSwitchover({ v: 1, from: 'node1', to: null, failover: false, requestedAtMs: 1 })).toBe(true);
    expect(await dcs.requestSwitchover({ v: 1, from: 'node1', to: 'node2', failover: false, requestedAtMs: 2 })).toBe(false);
  });

  it('lease expiry removes the leader and member keys bound to it', async () => {
    const lease = await dcs.grantLease(10);
    const other = await dcs.grantLease(10);
    await dcs.acquireLeader('node1', lease);
    await dcs.putMember(member('node1'), lease);
    await dcs.putMember(member('node2'), other);
    let changes = 0;
    await dcs.watch(() => changes++);

    clock.advance(6000);
    expect(await dcs.keepAlive(other)).toBe(true);
    clock.advance(4000);
    expect(dcs.expireLeases()).toBe(1);
    await Promise.resolve();
    expect(changes).toBeGreaterThan(0);

    const view = await dcs.readCluster();
    expect(view.leader).toBeNull();
    expect(view.members.map((m) => m.name)).toEqual(['node2']);
    expect(await dcs.keepAlive(lease)).toBe(false);
    // writing with a dead lease fails like etcd's "requested lease not found"
    await expect(dcs.putMember(member('node1'), lease)).rejects.toMatchObject({ code: 'KEEL_CONFLICT' });
    await expect(dcs.acquireLeader('node1', lease)).rejects.toMatchObject({ code: 'KEEL_CONFLICT' });
  });

  it('a watch wakes for the cluster keys, not for events nor the routers keys', async () => {
    const lease = await dcs.grantLease(10);
    let changes = 0;
    await dcs.watch(() => changes++);
    await dcs.putRouter({ v: 1, id: 'r1', holding: null, atMs: 1 }, lease);
    await dcs.addEvent({ atMs: 1, source: 'node1', kind: 'promoted', message: 'node1 promoted' });
    await Promise.resolve();
    expect(changes).toBe(0);
    await dcs.putMember(member('node1'), lease);
    await Promise.resolve();
    expect(changes).toBe(1);
  });

  it('a watch without figures wakes for what a member says, not for its WAL positions', async () => {
    const lease = await dcs.grantLease(10);
    let all = 0;
    let decisions = 0;
    await dcs.watch(() => all++);
    await dcs.watch(() => decisions++, { figures: false });
    await dcs.putMember(member('node1'), lease);
    await dcs.putMember({ ...member('node1'), replayedLsn: 99, updatedAtMs: 5 }, lease);
    await dcs.putMember({ ...member('node1'), replayedLsn: 99, updatedAtMs: 5, streaming: false }, lease);
    await Promise.resolve();
    expect(all).toBe(3);
    expect(decisions).toBe(2);
  });

  it('keepAlive after the deadline but before the reaper ran reports the lease gone', async () => {
    const lease = await dcs.grantLease(5);
    await dcs.acquireLeader('node1', lease);
    clock.advance(5000);
    expect(await dcs.keepAlive(lease)).toBe(false);
    expect((await dcs.readCluster()).leader).toBeNull();
  });

  it('revoking a lease deletes its keys in one revision', async () => {
    const lease = await dcs.grantLease(10);
    await dcs.acquireLeader('node1', lease);
    await dcs.putMember(member('node1'), lease);
    const before = Number(dcs.currentRevision());
    await dcs.revokeLease(lease);
    expect(Number(dcs.currentRevision())).toBe(before + 1);
    const view = await dcs.readCluster();
    expect(view.leader).toBeNull();
    expect(view.members).toEqual([]);
    await dcs.revokeLease(lease);
  });

  it('compare-and-swap on config, initialize and switchover', async () => {
    expect(await dcs.putConfig(defaultDynamicConfig, null)).toBe(true);
    expect(await dcs.putConfig(defaultDynamicConfig, null)).toBe(false);
    const rev = (await dcs.readCluster()).config!.modRevision;
    expect(await dcs.putConfig({ ...defaultDynamicConfig, ttl: 20 }, rev)).toBe(true);
    expect(await dcs.putConfig({ ...defaultDynamicConfig, ttl: 30 }, rev)).toBe(false);
    expect((await dcs.readCluster()).config?.value.ttl).toBe(20);

    await dcs.claimInitialize({ v: 1, by: 'node1', systemId: null });
    const initRev = (await dcs.readCluster()).initialize!.modRevision;
    expect(await dcs.updateInitialize({ v: 1, by: 'node1', systemId: '42' }, initRev)).toBe(true);
    expect(await dcs.deleteInitialize(initRev)).toBe(false);
    expect(await dcs.deleteInitialize((await dcs.readCluster()).initialize!.modRevision)).toBe(true);

    await dcs.requestSwitchover({ v: 1, from: null, to: 'node2', failover: true, requestedAtMs: 1 });
    await dcs.clearSwitchover('1');
    expect((await dcs.readCluster()).switchover).not.toBeNull();
    await dcs.clearSwitchover((await dcs.readCluster()).switchover!.modRevision);
    expect((await dcs.readCluster()).switchover).toBeNull();
  });

  it('rebind, release and status are guarded by the holder', async () => {
    const old = await dcs.grantLease(10);
    await dcs.acquireLeader('node1', old);
    const rev = (await dcs.readCluster()).leader!.modRevision;
    const fresh = await dcs.grantLease(10);
    expect(await dcs.rebindLeader('node2', fresh, rev)).toBe(false);
    expect(await dcs.rebindLeader('node1', fresh, rev)).toBe(true);
    expect(await dcs.rebindLeader('node1', fresh, rev)).toBe(false);
    expect((await dcs.readCluster()).leader?.leaseId).toBe(fresh);
    await dcs.revokeLease(old);
    expect((await dcs.readCluster()).leader?.value.name).toBe('node1');

    const status = { v: 1 as const, leader: 'node2', timeline: 1, walLsn: 5, updatedAtMs: 1 };
    expect(await dcs.putStatus(status)).toBe(false);
    expect(await dcs.putStatus({ ...status, leader: 'node1' })).toBe(true);
    expect(await dcs.releaseLeader('node2')).toBe(false);
    expect(await dcs.releaseLeader('node1')).toBe(true);
    expect(await dcs.releaseLeader('node1')).toBe(false);
  });

  it('a leader handing over releases its key and writes its last status in one transaction, only while it holds the key', async () => {
    const lease = await dcs.grantLease(10);
    await dcs.acquireLeader('node1', lease);
    const handover = { v: 1 as const, leader: 'node1', timeline: 3, walLsn: 900, updatedAtMs: 2, shutdownCheckpointLsn: 900 };
    expect(await dcs.releaseLeader('node2', { ...handover, leader: 'node2' })).toBe(false);
    expect((await dcs.readCluster()).status).toBeNull();
    expect(await dcs.releaseLeader('node1', handover)).toBe(true);
    const view = await dcs.readCluster();
    expect(view.leader).toBeNull();
    expect(view.status?.value).toEqual(handover);
  });

  it('records a creation only for the active controller, once per name, and drops it with the lease', async () => {
    const creation = { v: 1 as const, name: 'node4', zone: 'a', instanceClass: 'm', replaces: 'node1', sinceMs: 5, by: 'ctl-a' };
    const active = await dcs.grantLease(10);
    const other = await dcs.grantLease(10);
    // no controller key on that lease: not the active controller
    expect(await dcs.claimCreation(creation, active)).toBe(false);
    expect(await dcs.acquireController({ v: 1, name: 'ctl-a', pid: 1, startedAtMs: 0 }, active)).toBe(true);
    expect(await dcs.claimCreation(creation, other)).toBe(false);
    expect(await dcs.claimCreation(creation, active)).toBe(true);
    expect(await dcs.claimCreation({ ...creation, zone: 'b' }, active)).toBe(false);
    expect((await dcs.readCluster()).creations).toEqual([creation]);
    await dcs.deleteCreation('node4');
    await dcs.deleteCreation('node4');
    expect((await dcs.readCluster()).creations).toEqual([]);
    expect(await dcs.claimCreation(creation, active)).toBe(true);
    clock.advance(11_000);
    expect(dcs.expireLeases()).toBe(2);
    expect((await dcs.readCluster()).creations).toEqual([]);
  });

  it('treats bad values as absent and never throws', async () => {
    dcs.putRaw('leader', '{"v":99}');
    dcs.putRaw('members/x', 'not json');
    dcs.putRaw('members/y', JSON.stringify(member('z')));
    dcs.putRaw('mystery', '{}');
    dcs.putRaw('creations/node5', JSON.stringify({ v: 1, name: 'node6', zone: 'a', instanceClass: 'm', replaces: null, sinceMs: 1, by: 'c' }));
    dcs.putRaw('creations/node7', JSON.stringify({ v: 1, name: 'node7', zone: 'a' }));
    await dcs.putMember(member('node3'), await dcs.grantLease(10));
    const view = await dcs.readCluster();
    expect(view.leader).toBeNull();
    expect(view.members.map((m) => m.name)).toEqual(['node3']);
    expect(view.creations).toEqual([]);
  });

  it('appends history and keeps events newest-limited, oldest first', async () => {
    const entry = { timeline: 2, switchLsn: 100, leader: 'node1', atMs: 1, reason: 'failover' };
    await dcs.appendHistory(entry);
    await dcs.appendHistory(entry);
    await dcs.appendHistory({ ...entry, timeline: 3 });
    expect((await dcs.readCluster()).history?.value.entries.map((e) => e.timeline)).toEqual([2, 3]);

    for (let i = 0; i < 5; i++) await dcs.addEvent({ atMs: 100 + i, source: 'node1', kind: 'k', message: `m${i}` });
    expect((await dcs.listEvents(3)).map((e) => e.message)).toEqual(['m2', 'm3', 'm4']);
    expect(await dcs.listEvents(0)).toEqual([]);
  });

  it('appends history from the caller\'s copy without reading it first, and a stale copy loses no entry', async () => {
    const entry = { timeline: 2, switchLsn: 100, leader: 'node1', atMs: 1, reason: 'failover' };
    const kv = (dcs as unknown as { kv: { read: (...args: unknown[]) => Promise<unknown> } }).kv;
    const read = kv.read.bind(kv);
    let reads = 0;
    kv.read = (...args: unknown[]) => {
      reads += 1;
      return read(...args);
    };
    await dcs.appendHistory(entry, null);
    await dcs.appendHistory({ ...entry, timeline: 3 }, (await dcs.readCluster()).history);
    expect(reads).toBe(1);
    expect((await dcs.readCluster()).history?.value.entries.map((e) => e.timeline)).toEqual([2, 3]);

    // a copy read before another append: the compare fails, the key is read again, both entries stay
    const stale = (await dcs.readCluster()).history;
    await dcs.appendHistory({ ...entry, timeline: 4 });
    await dcs.appendHistory({ ...entry, timeline: 5 }, stale);
    await dcs.appendHistory({ ...entry, timeline: 5 }, null);
    expect((await dcs.readCluster()).history?.value.entries.map((e) => e.timeline)).toEqual([2, 3, 4, 5]);
  });

  it('takes the leader key with the history entry and the sync key in one transaction, or writes nothing', async () => {
    const entry = { timeline: 3, switchLsn: 200, leader: 'node2', atMs: 5, reason: 'switchover' };
    const sync = { v: 1 as const, leader: 'node2', members: ['node3'], quorum: 1 };
    await dcs.appendHistory({ timeline: 2, switchLsn: 100, leader: 'node1', atMs: 1, reason: 'failover' });
    const known = (await dcs.readCluster()).history;
    const mine = await dcs.grantLease(10);
    const theirs = await dcs.grantLease(10);

    // the key is held by another member: nothing written
    await dcs.acquireLeader('node3', theirs);
    expect(await dcs.takeLeaderToPromote({ name: 'node2', leaseId: mine, entry, known, sync })).toBe('leader-taken');
    let view = await dcs.readCluster();
    expect([view.leader?.value.name, view.history?.value.entries.length, view.sync]).toEqual(['node3', 1, null]);
    await dcs.revokeLease(theirs);

    // the history changed since the copy: nothing written, the caller goes the long way
    await dcs.appendHistory({ timeline: 3, switchLsn: 150, leader: 'node3', atMs: 2, reason: 'failover' });
    expect(await dcs.takeLeaderToPromote({ name: 'node2', leaseId: mine, entry, known, sync })).toBe('history-changed');
    view = await dcs.readCluster();
    expect([view.leader, view.history?.value.entries.length, view.sync]).toEqual([null, 2, null]);

    // free key, current copy: all three at one revision, bound to the lease where they must be
    const current = view.history;
    const next = { ...entry, timeline: 4 };
    expect(await dcs.takeLeaderToPromote({ name: 'node2', leaseId: mine, entry: next, known: current, sync })).toBe('taken');
    view = await dcs.readCluster();
    expect(view.leader?.value.name).toBe('node2');
    expect(view.leader?.leaseId).toBe(mine);
    expect(view.history?.value.entries.at(-1)).toEqual(next);
    expect(view.sync?.value).toEqual(sync);
    expect(new Set([view.leader?.modRevision, view.history?.modRevision, view.sync?.modRevision]).size).toBe(1);

    // a retry after a lost answer finds it all written
    expect(await dcs.takeLeaderToPromote({ name: 'node2', leaseId: mine, entry: next, known: current, sync })).toBe('taken');
    expect((await dcs.readCluster()).history?.value.entries.length).toBe(3);
  });

  it('ends the switchover it carries out in the transaction that takes the key, and leaves it otherwise', async () => {
    const entry = { timeline: 2, switchLsn: 200, leader: 'node2', atMs: 5, reason: 'switchover' };
    const mine = await dcs.grantLease(10);
    expect(await dcs.requestSwitchover({ v: 1, from: 'node1', to: 'node2', failover: false, requestedAtMs: 1000 })).toBe(true);
    // another member holds the key: the request stays with everything else
    const theirs = await dcs.grantLease(10);
    await dcs.acquireLeader('node3', theirs);
    expect(await dcs.takeLeaderToPromote({ name: 'node2', leaseId: mine, entry, known: null, sync: null, endsSwitchover: true })).toBe('leader-taken');
    expect((await dcs.readCluster()).switchover).not.toBeNull();
    await dcs.revokeLease(theirs);
    // without the flag the request stays
    expect(await dcs.takeLeaderToPromote({ name: 'node2', leaseId: mine, entry, known: null, sync: null })).toBe('taken');
    expect((await dcs.readCluster()).switchover).not.toBeNull();
    await dcs.releaseLeader('node2');
    // with it, gone at the revision the key was taken at
    const before = (await dcs.readCluster()).revision;
    const known = (await dcs.readCluster()).history;
    expect(await dcs.takeLeaderToPromote({ name: 'node2', leaseId: mine, entry: { ...entry, timeline: 3 }, known, sync: null, endsSwitchover: true })).toBe('taken');
    const view = await dcs.readCluster();
    expect(view.switchover).toBeNull();
    expect(view.leader?.value.name).toBe('node2');
    expect(Number(view.revision)).toBe(Number(before) + 1);
  });

  it('marks a switchover held only at the revision its leader prepared it from', async () => {
    expect(await dcs.requestSwitchover({ v: 1, from: 'node1', to: 'node2', failover: false, requestedAtMs: 1000 })).toBe(true);
    const request = (await dcs.readCluster()).switchover!;
    expect(request.value).not.toHaveProperty('holdFromMs');
    expect(await dcs.holdSwitchover(request, 1400)).toBe(true);
    expect((await dcs.readCluster()).switchover?.value).toEqual({ v: 1, from: 'node1', to: 'node2', failover: false, requestedAtMs: 1000, holdFromMs: 1400 });
    // withdrawn and asked again: the old copy marks nothing
    await dcs.clearSwitchover();
    expect(await dcs.requestSwitchover({ v: 1, from: 'node1', to: 'node3', failover: false, requestedAtMs: 2000 })).toBe(true);
    expect(await dcs.holdSwitchover(request, 2100)).toBe(false);
    expect((await dcs.readCluster()).switchover?.value).not.toHaveProperty('holdFromMs');
  });

  it('reads the registered routers alone, as the cluster view lists them', async () => {
    const lease = await dcs.grantLease(10);
    await dcs.putRouter({ v: 1, id: 'r2', holding: 1000, atMs: 5 }, lease);
    await dcs.putRouter({ v: 1, id: 'r1', holding: null, atMs: 6 }, lease);
    dcs.putRaw('routers/r3', JSON.stringify({ v: 1, id: 'r9', holding: null, atMs: 7 }));
    dcs.putRaw('routers/r4', 'not json');
    await dcs.putMember(member('node1'), lease);
    const routers = await dcs.readRouters();
    expect(routers.map((r) => r.id)).toEqual(['r1', 'r2']);
    expect(routers).toEqual((await dcs.readCluster()).routers);
  });

  it('fails every call when set unreachable, except best-effort events', async () => {
    dcs.setUnreachable(true);
    await expect(dcs.readCluster()).rejects.toMatchObject({ code: 'KEEL_ETCD_UNREACHABLE' });
    await expect(dcs.addEvent({ atMs: 1, source: 's', kind: 'k', message: 'm' })).resolves.toBeUndefined();
    dcs.setUnreachable(false);
    await expect(dcs.readCluster()).resolves.toBeTruthy();
  });
});
