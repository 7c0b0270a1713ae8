/**
 * The lease-bound writes of the in-memory store: a lease move (member and
 * leader keys together, in one revision) and the sync key guarded by the
 * leader key AND its lease. test/integration/etcd-lease.test.ts holds the
 * same rules against a real etcd.
 */
import { beforeEach, describe, expect, it } from 'vitest';
import { MemoryDcs } from '../../src/dcs/memory.js';
import type { SyncValue } from '../../src/model/values.js';
import { member } from './fixtures.js';

let nowMs = 1_000_000;
let dcs: MemoryDcs;

beforeEach(() => {
  nowMs = 1_000_000;
  dcs = new MemoryDcs({ cluster: 'c1', clock: { now: () => nowMs } });
});

const sync = (leader: string): SyncValue => ({ v: 1, leader, members: ['node2'], quorum: 1 });

describe('MemoryDcs.putSync', () => {
  it('writes only while the leader key names the writer AND is bound to its lease', async () => {
    const lease = await dcs.grantLease(10);
    expect(await dcs.putSync(sync('node1'), lease)).toBe(false);
    await dcs.acquireLeader('node1', lease);
    expect(await dcs.putSync(sync('node1'), lease)).toBe(true);
    expect((await dcs.readCluster()).sync?.value).toEqual(sync('node1'));

    // another member, or this member on another of its leases, may not
    const other = await dcs.grantLease(10);
    expect(await dcs.putSync(sync('node2'), lease)).toBe(false);
    expect(await dcs.putSync({ ...sync('node1'), members: ['node3'] }, other)).toBe(false);
    expect((await dcs.readCluster()).sync?.value.members).toEqual(['node2']);

    // a holder whose key was rebound to a newer lease (a restarted agent) writes no more with the old one
    const rev = (await dcs.readCluster()).leader!.modRevision;
    expect(await dcs.rebindLeader('node1', other, rev)).toBe(true);
    expect(await dcs.putSync({ ...sync('node1'), members: ['node3'] }, lease)).toBe(false);
    expect(await dcs.putSync({ ...sync('node1'), members: ['node3'] }, other)).toBe(true);
  });

  it('a leader whose lease expired cannot name standbys', async () => {
    const lease = await dcs.grantLease(10);
    await dcs.acquireLeader('node1', lease);
    nowMs += 10_000;
    expect(await dcs.putSync(sync('node1'), lease)).toBe(false);
    expect((await dcs.readCluster()).sync).toBeNull();
  });
});

describe('MemoryDcs.moveLease', () => {
  it('moves the member and leader keys to the new lease in one revision; the old lease then holds nothing', async () => {
    const from = await dcs.grantLease(10);
    await dcs.acquireLeader('node1', from);
    await dcs.putMember(member('node1'), from);
    const to = await dcs.grantLease(30);
    const before = Number(dcs.currentRevision());
    const fresh = member('node1', { reason: 'moved' });
    expect(await dcs.moveLease({ name: 'node1', fromLeaseId: from, toLeaseId: to, member: fresh, leader: true })).toBe(true);
    expect(Number(dcs.currentRevision())).toBe(before + 1);
    const view = await dcs.readCluster();
    expect(view.leader).toMatchObject({ value: { name: 'node1' }, leaseId: to, modRevision: String(before + 1) });
    expect(view.members).toEqual([fresh]);
    await dcs.revokeLease(from);
    const after = await dcs.readCluster();
    expect(after.leader?.leaseId).toBe(to);
    expect(after.members.map((m) => m.name)).toEqual(['node1']);
    // the keys live by the new lease's ttl: 30 s, not 10
    nowMs += 20_000;
    expect((await dcs.readCluster()).leader?.value.name).toBe('node1');
  });

  it('an old-lease holder that lost the leader key cannot move it: nothing is written', async () => {
    const from = await dcs.grantLease(10);
    await dcs.acquireLeader('node1', from);
    await dcs.releaseLeader('node1');
    const theirs = await dcs.grantLease(10);
    await dcs.acquireLeader('node2', theirs);
    const to = await dcs.grantLease(30);
    const before = dcs.currentRevision();
    expect(await dcs.moveLease({ name: 'node1', fromLeaseId: from, toLeaseId: to, member: member('node1'), leader: true })).toBe(false);
    expect(dcs.currentRevision()).toBe(before);
    expect((await dcs.readCluster()).leader).toMatchObject({ value: { name: 'node2' }, leaseId: theirs });
    expect((await dcs.readCluster()).members).toEqual([]);
  });

  it('the key naming this member but bound to another of its leases is not moved either', async () => {
    const from = await dcs.grantLease(10);
    const newer = await dcs.grantLease(10);
    await dcs.acquireLeader('node1', newer);
    const to = await dcs.grantLease(30);
    expect(await dcs.moveLease({ name: 'node1', fromLeaseId: from, toLeaseId: to, member: null, leader: true })).toBe(false);
    expect((await dcs.readCluster()).leader?.leaseId).toBe(newer);
  });

  it('a retry after a lost answer finds the keys moved and says so', async () => {
    const from = await dcs.grantLease(10);
    await dcs.acquireLeader('node1', from);
    const to = await dcs.grantLease(30);
    const move = { name: 'node1', fromLeaseId: from, toLeaseId: to, member: member('node1'), leader: true };
    expect(await dcs.moveLease(move)).toBe(true);
    const before = dcs.currentRevision();
    expect(await dcs.moveLease(move)).toBe(true);
    expect(dcs.currentRevision()).toBe(before);
  });

  it('a replica moves its member key alone; a lease etcd no longer knows is refused', async () => {
    const from = await dcs.grantLease(10);
    await dcs.putMember(member('node2'), from);
    const to = await dcs.grantLease(30);
    expect(await dcs.moveLease({ name: 'node2', fromLeaseId: from, toLeaseId: to, member: member('node2'), leader: false })).toBe(true);
    await dcs.revokeLease(from);
    expect((await dcs.readCluster()).members.map((m) => m.name)).toEqual(['node2']);
    expect((await dcs.readCluster()).leader).toBeNull();
    await dcs.revokeLease(to);
    await expect(dcs.moveLease({ name: 'node2', fromLeaseId: from, toLeaseId: to, member: member('node2'), leader: false })).rejects.toMatchObject({
      code: 'KEEL_CONFLICT',
    });
  });
});
