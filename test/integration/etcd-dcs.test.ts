import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultDynamicConfig } from '../../src/config/schema.js';
import { EtcdDcs } from '../../src/dcs/etcd.js';
import { startEtcd, stopEtcd, type RunningEtcd } from '../../src/dcs/etcd-server.js';
import { freeze } from '../support/freeze.js';
import { sleep } from '../../src/util/clock.js';
import { silentLogger } from '../../src/util/log.js';
import { findFreePorts, isPortFree } from '../../src/util/ports.js';
import type { ClusterView, MemberValue } from '../../src/model/values.js';

const host = '127.0.0.1';
let dir = '';
let etcd: RunningEtcd | null = null;
let ports: number[] = [];
let raw: Etcd3;
const opened: EtcdDcs[] = [];
let clusterSeq = 0;

function start(): Promise<RunningEtcd> {
  return startEtcd({
    name: 'itest',
    dataDir: join(dir, 'etcd-data'),
    clientPort: ports[0]!,
    peerPort: ports[1]!,
    logFile: join(dir, 'etcd.log'),
  });
}

/** Agents of a fresh cluster, so tests do not see each other's keys. */
function agents(count: number, requestTimeoutMs = 2000): EtcdDcs[] {
  const cluster = `itest${++clusterSeq}`;
  return Array.from({ length: count }, () => {
    const dcs = new EtcdDcs({ endpoints: [etcd!.endpoint], cluster, requestTimeoutMs, logger: silentLogger() });
    opened.push(dcs);
    return dcs;
  });
}

async function waitFor(what: string, check: () => Promise<boolean> | boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

function member(name: string): MemberValue {
  return {
    v: 1, name, role: 'replica', state: 'streaming', running: true, streaming: true, timeline: 1,
    walLsn: null, receivedLsn: 1, replayedLsn: 1, upstream: null, zone: 'local', tags: {},
    apiUrl: 'http://127.0.0.1:8008', pgHost: '127.0.0.1', pgPort: 5432, reason: 'test',
    systemId: null, agentPid: null, postmasterPid: null, dataDir: '/tmp/x', updatedAtMs: 0,
  };
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'keel-etcd-'));
  ports = await findFreePorts(host, 23790, 2);
  etcd = await start();
  raw = new Etcd3({ hosts: etcd.endpoint });
});

afterAll(async () => {
  await Promise.all(opened.map((dcs) => dcs.close()));
  raw?.close();
  if (etcd) await stopEtcd(etcd.pid, 5000);
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('EtcdDcs against a real etcd', () => {
  it('refuses to start a second etcd on the same ports', async () => {
    expect(await isPortFree(host, ports[0]!)).toBe(false);
    await expect(start()).rejects.toMatchObject({ code: 'KEEL_PORT_IN_USE' });
  });

  it('reports a missing binary, and an etcd that exits while starting', async () => {
    const spare = await findFreePorts(host, ports[1]! + 1, 2);
    const options = { name: 'x', dataDir: join(dir, 'x'), clientPort: spare[0]!, peerPort: spare[1]!, logFile: join(dir, 'x.log') };
    await expect(startEtcd({ ...options, binary: join(dir, 'no-etcd') })).rejects.toMatchObject({
      code: 'KEEL_BINARY_MISSING',
      message: expect.stringContaining(join(dir, 'no-etcd')),
    });
    await expect(startEtcd({ ...options, binary: '/bin/false' })).rejects.toThrow(/exited \(code 1\)/);
  });

  it('two agents race for the leader key: exactly one wins', async () => {
    const [a, b] = agents(2);
    const [leaseA, leaseB] = await Promise.all([a!.grantLease(10), b!.grantLease(10)]);
    const won = await Promise.all([a!.acquireLeader('node1', leaseA), b!.acquireLeader('node2', leaseB)]);
    expect(won.filter(Boolean)).toHaveLength(1);
    const view = await a!.readCluster();
    const winner = won[0] ? 'node1' : 'node2';
    expect(view.leader?.value.name).toBe(winner);
    expect(view.leader?.leaseId).toBe(won[0] ? leaseA : leaseB);
  });

  it('two replicas promoting at once: one takes the key with its history entry and sync key, and ends the switchover request, the other writes nothing', async () => {
    const [a, b] = agents(2);
    const [leaseA, leaseB] = await Promise.all([a!.grantLease(10), b!.grantLease(10)]);
    expect(await a!.requestSwitchover({ v: 1, from: 'node0', to: null, failover: false, requestedAtMs: 1 })).toBe(true);
    const before = await a!.readCluster();
    const known = before.history;
    const take = (name: string, leaseId: string) => ({
      name,
      leaseId,
      entry: { timeline: 7, switchLsn: 4096, leader: name, atMs: 1, reason: 'race' },
      known,
      sync: { v: 1 as const, leader: name, members: ['node3'], quorum: 1 },
      endsSwitchover: true,
    });
    const outcomes = await Promise.all([a!.takeLeaderToPromote(take('node1', leaseA)), b!.takeLeaderToPromote(take('node2', leaseB))]);
    expect([...outcomes].sort()).toEqual(['leader-taken', 'taken']);
    const winner = outcomes[0] === 'taken' ? 'node1' : 'node2';
    const view = await a!.readCluster();
    expect(view.leader?.value.name).toBe(winner);
    expect(view.history?.value.entries.at(-1)?.leader).toBe(winner);
    expect(view.sync?.value.leader).toBe(winner);
    expect(view.switchover).toBeNull();
    // one transaction wrote it all: the store moved by one revision
    expect(Number(view.revision)).toBe(Number(before.revision) + 1);
    await a!.revokeLease(leaseA);
    await b!.revokeLease(leaseB);
  });

  it('revoking the lease deletes the leader key; keepAlive then says false', async () => {
    const [a] = agents(1);
    const lease = await a!.grantLease(10);
    expect(await a!.keepAlive(lease)).toBe(true);
    expect(await a!.acquireLeader('node1', lease)).toBe(true);
    await a!.putMember(member('node1'), lease);
    await a!.revokeLease(lease);
    const view = await a!.readCluster();
    expect(view.leader).toBeNull();
    expect(view.members).toEqual([]);
    expect(await a!.keepAlive(lease)).toBe(false);
    await a!.revokeLease(lease);
    await expect(a!.putMember(member('node1'), lease)).rejects.toMatchObject({ code: 'KEEL_CONFLICT' });
  });

  it('a lease that is not kept alive expires and takes the leader key with it', async () => {
    const [a] = agents(1);
    const lease = await a!.grantLease(2);
    expect(await a!.acquireLeader('node1', lease)).toBe(true);
    const started = Date.now();
    await waitFor('leader key to expire', async () => (await a!.readCluster()).leader === null, 6000);
    expect(Date.now() - started).toBeGreaterThan(1000);
    expect(await a!.keepAlive(lease)).toBe(false);
  });

  it('treats malformed values as absent without throwing', async () => {
    const [a] = agents(1);
    const prefix = `/keel/${a!.cluster}/`;
    await raw.put(`${prefix}members/x`).value('not json');
    await raw.put(`${prefix}leader`).value('{"v":99}');
    await raw.put(`${prefix}config`).value('{"v":1,"ttl":"ten"}');
    await raw.put(`${prefix}events/0000000000001-x-0000`).value('nope');
    await a!.putMember(member('node2'), await a!.grantLease(10));
    const view = await a!.readCluster();
    expect(view.leader).toBeNull();
    expect(view.config).toBeNull();
    expect(view.members.map((m) => m.name)).toEqual(['node2']);
    expect(await a!.listEvents(10)).toEqual([]);
  });

  it('watch fires on a put and stops when asked', async () => {
    const [a, b] = agents(2);
    let changes = 0;
    const stop = await a!.watch(() => changes++);
    await b!.putDraining({ v: 1, name: 'node3', sinceMs: 1, reason: 'test' });
    await waitFor('watch callback', () => changes > 0, 3000);
    await stop();
    const seen = changes;
    await b!.putDraining({ v: 1, name: 'node2', sinceMs: 2, reason: 'test' });
    await sleep(300);
    expect(changes).toBe(seen);
  });

  it('keeps the cluster from the watch: one view per transaction, the same as a read, leases and expiries included', async () => {
    const [a, b] = agents(2);
    const views: ClusterView[] = [];
    let resyncs = 0;
    const kept = await a!.keepCluster({ onView: (view) => views.push(view), onResync: () => resyncs++ });
    try {
      const lease = await b!.grantLease(2);
      await b!.putMember(member('node1'), lease);
      await b!.requestSwitchover({ v: 1, from: 'node0', to: 'node1', failover: false, requestedAtMs: 1 });
      // nothing is a view before the first read
      await sleep(300);
      expect(views).toEqual([]);
      const first = await kept.read();
      expect(first.members.map((m) => m.name)).toEqual(['node1']);
      const known = first.history;
      // four writes in one transaction: one view, with all of them
      const outcome = await b!.takeLeaderToPromote({
        name: 'node1', leaseId: lease, entry: { timeline: 2, switchLsn: 4096, leader: 'node1', atMs: 1, reason: 'kept' },
        known, sync: { v: 1, leader: 'node1', members: ['node2'], quorum: 1 }, endsSwitchover: true,
      });
      expect(outcome).toBe('taken');
      await waitFor('the view of the take', () => views.length > 0, 3000);
      await sleep(200);
      expect(views).toHaveLength(1);
      const taken = views[0]!;
      expect(taken.leader?.value.name).toBe('node1');
      expect(taken.leader?.leaseId).toBe(lease);
      expect(taken.history?.value.entries.at(-1)?.reason).toBe('kept');
      expect(taken.sync?.value.members).toEqual(['node2']);
      expect(taken.switchover).toBeNull();
      // the same as a read at that revision
      const read = await a!.readCluster();
      expect(taken.revision).toBe(read.revision);
      expect({ ...taken, revision: '' }).toEqual({ ...read, revision: '' });
      // a router's key changes no view; the lease running out deletes the leader and member keys in one
      await b!.putRouter({ v: 1, id: 'r1', holding: null, atMs: 1 }, await b!.grantLease(10));
      await sleep(300);
      expect(views).toHaveLength(1);
      await waitFor('the lease to run out', () => views.some((v) => v.leader === null), 8000);
      const expired = views.at(-1)!;
      expect(expired.leader).toBeNull();
      expect(expired.members).toEqual([]);
      expect(resyncs).toBe(0);
    } finally {
      await kept.stop();
    }
  });

  it('putConfig is a compare-and-swap', async () => {
    const [a, b] = agents(2);
    expect(await a!.putConfig(defaultDynamicConfig, null)).toBe(true);
    expect(await b!.putConfig(defaultDynamicConfig, null)).toBe(false);
    const rev = (await a!.readCluster()).config!.modRevision;
    expect(await a!.putConfig({ ...defaultDynamicConfig, ttl: 20 }, rev)).toBe(true);
    expect(await b!.putConfig({ ...defaultDynamicConfig, ttl: 30 }, rev)).toBe(false);
    expect((await b!.readCluster()).config?.value.ttl).toBe(20);
  });

  it('only the holder releases, rebinds or writes status', async () => {
    const [a, b] = agents(2);
    const lease = await a!.grantLease(10);
    await a!.acquireLeader('node1', lease);
    const status = { v: 1 as const, leader: 'node2', timeline: 1, walLsn: 10, updatedAtMs: 1 };
    expect(await b!.putStatus(status)).toBe(false);
    expect(await a!.putStatus({ ...status, leader: 'node1' })).toBe(true);
    expect(await b!.releaseLeader('node2')).toBe(false);
    const rev = (await a!.readCluster()).leader!.modRevision;
    const fresh = await a!.grantLease(10);
    expect(await b!.rebindLeader('node2', fresh, rev)).toBe(false);
    expect(await a!.rebindLeader('node1', fresh, rev)).toBe(true);
    expect((await a!.readCluster()).leader?.leaseId).toBe(fresh);
    expect(await a!.releaseLeader('node1')).toBe(true);
    expect((await b!.readCluster()).leader).toBeNull();
  });

  it('initialize, switchover, history and events', async () => {
    const [a, b] = agents(2);
    expect(await a!.claimInitialize({ v: 1, by: 'node1', systemId: null })).toBe(true);
    expect(await b!.claimInitialize({ v: 1, by: 'node2', systemId: null })).toBe(false);
    const rev = (await a!.readCluster()).initialize!.modRevision;
    expect(await a!.updateInitialize({ v: 1, by: 'node1', systemId: '7' }, rev)).toBe(true);
    expect(await b!.deleteInitialize(rev)).toBe(false);

    const request = { v: 1 as const, from: 'node1', to: null, failover: false, requestedAtMs: 1 };
    expect(await a!.requestSwitchover(request)).toBe(true);
    expect(await b!.requestSwitchover(request)).toBe(false);
    await b!.clearSwitchover('1');
    expect((await a!.readCluster()).switchover).not.toBeNull();
    await b!.clearSwitchover();
    expect((await a!.readCluster()).switchover).toBeNull();

    const entry = { timeline: 2, switchLsn: 100, leader: 'node1', atMs: 5, reason: 'failover' };
    await Promise.all([a!.appendHistory(entry), b!.appendHistory({ ...entry, leader: 'node2' })]);
    expect((await a!.readCluster()).history?.value.entries).toHaveLength(2);

    for (let i = 0; i < 4; i++) await a!.addEvent({ atMs: 1000 + i, source: 'node1', kind: 'test', message: `e${i}` });
    expect((await b!.listEvents(2)).map((e) => e.message)).toEqual(['e2', 'e3']);
  });

  it('rejects with KEEL_ETCD_UNREACHABLE about requestTimeoutMs after etcd stops, and recovers', async () => {
    const [a] = agents(1, 500);
    let changes = 0;
    await a!.watch(() => changes++);

    // a hung etcd (connection open, no answer) is caught by Keel's own timer
    await freeze(etcd!.pid);
    try {
      const started = Date.now();
      await expect(a!.readCluster()).rejects.toMatchObject({ code: 'KEEL_ETCD_UNREACHABLE' });
      await expect(a!.keepAlive('123')).rejects.toMatchObject({ code: 'KEEL_ETCD_UNREACHABLE' });
      expect(Date.now() - started).toBeLessThan(15_000);
    } finally {
      process.kill(etcd!.pid, 'SIGCONT');
    }

    await stopEtcd(etcd!.pid, 5000);
    etcd = null;

    for (const call of [() => a!.readCluster(), () => a!.grantLease(5), () => a!.keepAlive('123')]) {
      const started = Date.now();
      await expect(call()).rejects.toMatchObject({ code: 'KEEL_ETCD_UNREACHABLE' });
      expect(Date.now() - started).toBeLessThan(15_000);
    }
    await expect(a!.addEvent({ atMs: 1, source: 'x', kind: 'k', message: 'm' })).resolves.toBeUndefined();

    const before = changes;
    etcd = await start();
    // the watch reconnects and says so, since changes may have been missed
    await waitFor('watch reconnect notification', () => changes > before, 8000);
    await waitFor('reads to work again', () => a!.readCluster().then(() => true, () => false), 8000);
  });
});

describe('EtcdDcs against a real 3-member etcd', () => {
  const members: RunningEtcd[] = [];
  let clusterDir = '';

  beforeAll(async () => {
    clusterDir = await mkdtemp(join(tmpdir(), 'keel-etcd3-'));
    const p = await findFreePorts(host, 23820, 6);
    const names = ['m1', 'm2', 'm3'];
    const initialCluster = names.map((name, i) => `${name}=http://${host}:${p[2 * i + 1]}`).join(',');
    members.push(
      ...(await Promise.all(
        names.map((name, i) =>
          startEtcd({
            name,
            dataDir: join(clusterDir, name),
            clientPort: p[2 * i]!,
            peerPort: p[2 * i + 1]!,
            initialCluster,
            logFile: join(clusterDir, `${name}.log`),
          }),
        ),
      )),
    );
  }, 60_000);

  afterAll(async () => {
    for (const m of members) {
      try {
        process.kill(m.pid, 'SIGCONT');
      } catch {
        // already gone
      }
    }
    await Promise.all(members.map((m) => stopEtcd(m.pid, 5000)));
    if (clusterDir) await rm(clusterDir, { recursive: true, force: true });
  });

  const followerIndex = async (): Promise<number> => {
    const status = await Promise.all(
      members.map((m) => fetch(`${m.endpoint}/v3/maintenance/status`, { method: 'POST', body: '{}' }).then((r) => r.json() as Promise<{ leader: string; header: { member_id: string } }>)),
    );
    return status.findIndex((s) => s.leader !== s.header.member_id);
  };

  it('reads the cluster through the other members while one member is frozen', async () => {
    // a follower: while the Raft leader is frozen, nobody answers until a new one is elected
    const frozen = members[await followerIndex()]!;
    // listed first: the first read after the freeze goes to it
    const endpoints = [frozen.endpoint, ...members.filter((m) => m !== frozen).map((m) => m.endpoint)];
    const dcs = new EtcdDcs({ endpoints, cluster: 'reads', requestTimeoutMs: 2000, logger: silentLogger() });
    opened.push(dcs);
    await dcs.readCluster();
    await freeze(frozen.pid);
    try {
      const started = Date.now();
      for (let i = 0; i < 10; i++) await expect(dcs.readCluster()).resolves.toMatchObject({ members: [] });
      // one short attempt on the frozen member, then the member that answered is asked first
      expect(Date.now() - started).toBeLessThan(20_000);
    } finally {
      process.kill(frozen.pid, 'SIGCONT');
    }
  }, 60_000);

  it('keeps a lease alive through the other members while one member is frozen', async () => {
    // a follower, listed first: without rotation every renewal could land on it
    const frozen = members[await followerIndex()]!;
    const endpoints = [frozen.endpoint, ...members.filter((m) => m !== frozen).map((m) => m.endpoint)];
    const dcs = new EtcdDcs({ endpoints, cluster: 'rotation', requestTimeoutMs: 2000, logger: silentLogger() });
    opened.push(dcs);
    const lease = await dcs.grantLease(10);

    await freeze(frozen.pid);
    try {
      const answers: boolean[] = [];
      const started = Date.now();
      for (let i = 0; i < 6; i++) answers.push(await dcs.keepAlive(lease));
      expect(answers).toEqual([true, true, true, true, true, true]);
      // one short attempt on the frozen member at most, then the member that answers is asked first
      expect(Date.now() - started).toBeLessThan(20_000);
    } finally {
      process.kill(frozen.pid, 'SIGCONT');
    }
  }, 60_000);
});
