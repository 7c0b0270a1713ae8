/**
 * The lease-bound writes against a real etcd: a ttl change moves the member
 * and leader keys to a new lease in ONE transaction, an old-lease holder that
 * lost the key cannot move (rebind) it, the sync key is written only by the
 * leader on its own lease, and LeaseKeeper keeps and moves a real lease.
 * Ports 19200-19299.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { keys } from '../../src/dcs/codec.js';
import { EtcdDcs } from '../../src/dcs/etcd.js';
import { startEtcd, stopEtcd, type RunningEtcd } from '../../src/dcs/etcd-server.js';
import { LeaseKeeper } from '../../src/dcs/lease-keeper.js';
import type { MemberValue, SyncValue } from '../../src/model/values.js';
import { leaseMarginMs } from '../../src/model/lease.js';
import { systemClock } from '../../src/util/clock.js';
import { silentLogger } from '../../src/util/log.js';
import { findFreePorts } from '../../src/util/ports.js';

const host = '127.0.0.1';
let dir = '';
let etcd: RunningEtcd | null = null;
let raw: Etcd3;
const opened: EtcdDcs[] = [];
const keepers: LeaseKeeper[] = [];
let clusterSeq = 0;

/** A fresh cluster prefix per test; `count` agents on it. */
function agents(count: number): { dcs: EtcdDcs[]; k: ReturnType<typeof keys> } {
  const cluster = `lease${++clusterSeq}`;
  const dcs = Array.from({ length: count }, () => {
    const one = new EtcdDcs({ endpoints: [etcd!.endpoint], cluster, requestTimeoutMs: 2000, logger: silentLogger() });
    opened.push(one);
    return one;
  });
  return { dcs, k: keys(cluster) };
}

function member(name: string, reason = 'test'): MemberValue {
  return {
    v: 1, name, role: 'primary', state: 'primary', running: true, streaming: false, timeline: 1,
    walLsn: 1, receivedLsn: null, replayedLsn: null, upstream: null, zone: 'local', tags: {},
    apiUrl: 'http://127.0.0.1:8008', pgHost: '127.0.0.1', pgPort: 5432, reason,
    systemId: null, agentPid: null, postmasterPid: null, dataDir: '/tmp/x', updatedAtMs: 0,
  };
}

/** What etcd itself holds at a key: its lease and the revision it was last written at. */
async function stored(key: string): Promise<{ lease: string; modRevision: string } | null> {
  const res = await raw.get(key).exec();
  const kv = res.kvs[0];
  return kv === undefined ? null : { lease: String(kv.lease), modRevision: String(kv.mod_revision) };
}

async function revision(): Promise<number> {
  return Number((await raw.get('/keel-lease-probe').exec()).header.revision);
}

async function grantedTtlSeconds(leaseId: string): Promise<number> {
  return Number((await raw.leaseClient.leaseTimeToLive({ ID: leaseId })).grantedTTL);
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'keel-etcd-lease-'));
  // the range 19200-19299 is this file's
  const ports = await findFreePorts(host, 19200, 2, 99);
  etcd = await startEtcd({ name: 'lease', dataDir: join(dir, 'etcd-data'), clientPort: ports[0]!, peerPort: ports[1]!, logFile: join(dir, 'etcd.log') });
  raw = new Etcd3({ hosts: etcd.endpoint });
});

afterAll(async () => {
  for (const keeper of keepers) keeper.stopTimer();
  await Promise.all(opened.map((dcs) => dcs.close()));
  raw?.close();
  if (etcd) await stopEtcd(etcd.pid, 5000);
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('EtcdDcs.moveLease against a real etcd', () => {
  it('rebinds the member and leader keys in one transaction; the old lease then holds nothing', async () => {
    const { dcs: [a], k } = agents(1);
    const from = await a!.grantLease(10);
    expect(await a!.acquireLeader('node1', from)).toBe(true);
    await a!.putMember(member('node1'), from);
    const to = await a!.grantLease(30);
    const before = await revision();

    expect(await a!.moveLease({ name: 'node1', fromLeaseId: from, toLeaseId: to, member: member('node1', 'moved'), leader: true })).toBe(true);
    const leader = await stored(k.leader);
    const memberKey = await stored(k.member('node1'));
    // one transaction: one new revision, at which both keys were written, both on the new lease
    expect(await revision()).toBe(before + 1);
    expect(leader).toEqual({ lease: to, modRevision: String(before + 1) });
    expect(memberKey).toEqual({ lease: to, modRevision: String(before + 1) });
    expect(await grantedTtlSeconds(to)).toBe(30);

    await a!.revokeLease(from);
    const view = await a!.readCluster();
    expect(view.leader).toMatchObject({ value: { name: 'node1' }, leaseId: to });
    expect(view.members.map((m) => [m.name, m.reason])).toEqual([['node1', 'moved']]);
  });

  it('an old-lease holder that lost the key cannot rebind it: nothing is written', async () => {
    const { dcs: [a, b], k } = agents(2);
    const old = await a!.grantLease(10);
    expect(await a!.acquireLeader('node1', old)).toBe(true);
    // node1's lease ends (expired or revoked) and node2 takes the key
    await a!.revokeLease(old);
    const theirs = await b!.grantLease(10);
    expect(await b!.acquireLeader('node2', theirs)).toBe(true);

    const fresh = await a!.grantLease(30);
    const before = await revision();
    expect(await a!.moveLease({ name: 'node1', fromLeaseId: old, toLeaseId: fresh, member: member('node1'), leader: true })).toBe(false);
    expect(await revision()).toBe(before);
    expect(await stored(k.member('node1'))).toBeNull();
    expect((await b!.readCluster()).leader).toMatchObject({ value: { name: 'node2' }, leaseId: theirs });
  });

  it('nor can it when the key names it but is bound to another of its leases', async () => {
    const { dcs: [a] } = agents(1);
    const old = await a!.grantLease(10);
    const newer = await a!.grantLease(10);
    expect(await a!.acquireLeader('node1', newer)).toBe(true);
    const fresh = await a!.grantLease(30);
    expect(await a!.moveLease({ name: 'node1', fromLeaseId: old, toLeaseId: fresh, member: null, leader: true })).toBe(false);
    expect((await a!.readCluster()).leader?.leaseId).toBe(newer);
  });

  it('a retry after a lost answer finds the keys moved, without writing again', async () => {
    const { dcs: [a] } = agents(1);
    const from = await a!.grantLease(10);
    expect(await a!.acquireLeader('node1', from)).toBe(true);
    const to = await a!.grantLease(30);
    const move = { name: 'node1', fromLeaseId: from, toLeaseId: to, member: member('node1'), leader: true };
    expect(await a!.moveLease(move)).toBe(true);
    const before = await revision();
    expect(await a!.moveLease(move)).toBe(true);
    expect(await revision()).toBe(before);
  });
});

describe('EtcdDcs.putSync against a real etcd', () => {
  const sync = (leader: string, members = ['node2']): SyncValue => ({ v: 1, leader, members, quorum: 1 });

  it('writes only while the leader key names the writer AND is bound to its lease', async () => {
    const { dcs: [a, b] } = agents(2);
    const lease = await a!.grantLease(10);
    expect(await a!.putSync(sync('node1'), lease)).toBe(false);
    expect(await a!.acquireLeader('node1', lease)).toBe(true);
    expect(await a!.putSync(sync('node1'), lease)).toBe(true);

    const other = await b!.grantLease(10);
    expect(await b!.putSync(sync('node2', ['node1']), other)).toBe(false);
    // the right name on the wrong lease (a holder whose key was rebound since)
    expect(await a!.putSync(sync('node1', ['node3']), other)).toBe(false);
    expect((await a!.readCluster()).sync?.value).toEqual(sync('node1'));

    await a!.revokeLease(lease);
    expect(await a!.putSync(sync('node1', ['node3']), lease)).toBe(false);
    expect((await a!.readCluster()).sync?.value.members).toEqual(['node2']);
  });
});

describe('LeaseKeeper against a real etcd', () => {
  it('keeps a lease alive past its ttl and moves the keys to a lease granted with a new ttl', async () => {
    const { dcs: [a], k } = agents(1);
    let lost = 0;
    const keeper = new LeaseKeeper({
      dcs: a!,
      clock: systemClock,
      logger: silentLogger(),
      marginMs: (ttlSeconds) => leaseMarginMs(ttlSeconds, 500),
      onLost: () => lost++,
    });
    keepers.push(keeper);
    await keeper.grant(5);
    const first = keeper.id!;
    expect(await a!.acquireLeader('node1', first)).toBe(true);
    await a!.putMember(member('node1'), first);
    // a 5 s lease renewed every ~1.7 s outlives its ttl
    await new Promise((r) => setTimeout(r, 6000));
    expect(keeper.renewals).toBeGreaterThanOrEqual(2);
    expect((await a!.readCluster()).leader?.leaseId).toBe(first);
    expect(keeper.trusted()).toBe(true);

    expect(await keeper.move(12, { name: 'node1', member: member('node1'), leader: true })).toBe(true);
    const moved = keeper.id!;
    expect(moved).not.toBe(first);
    expect(keeper.current()).toMatchObject({ ttlSeconds: 12 });
    expect(await grantedTtlSeconds(moved)).toBe(12);
    expect((await stored(k.leader))?.lease).toBe(moved);
    expect((await stored(k.member('node1')))?.lease).toBe(moved);
    // the old lease was revoked
    expect(await a!.keepAlive(first)).toBe(false);
    expect(lost).toBe(0);
    keeper.stopTimer();
  });
});
