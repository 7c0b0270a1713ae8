/**
 * The agent's whole loop (observe -> decide -> act, the lease keeper, the
 * watchdog) on fake timers, against the in-memory store and a fake
 * PostgreSQL: when a leader whose keep-alives fail stops PostgreSQL, how a ttl
 * change moves the lease, a replica following its leader, a promotion that
 * publishes its role before its job ends, a switchover target's slots
 * published as soon as made,
 * a reading taken before a job ended that decides nothing, no loop per
 * change in etcd while a job runs, a promotion's history entry that ends
 * with PostgreSQL's own switch point, and a promotion whose history changed
 * since its reading.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { Agent } from '../../src/agent/agent.js';
import { divergence } from '../../src/agent/divergence.js';
import type { MemberValue } from '../../src/model/values.js';
import { defaultDynamicConfig, nodeConfigSchema, type DynamicConfig } from '../../src/config/schema.js';
import { systemClock } from '../../src/util/clock.js';
import { silentLogger } from '../../src/util/log.js';
import { SYSID } from './fixtures.js';
import { FakePostgres, gate, ScriptedDcs } from './lease-fakes.js';

const T0 = 1_000_000;
const running: Agent[] = [];
const beforeStop: (() => void)[] = [];

beforeEach(() => {
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'setImmediate', 'clearImmediate', 'Date'] });
  vi.setSystemTime(T0);
});

afterEach(async () => {
  for (const release of beforeStop.splice(0)) release();
  const stopped = Promise.all(running.splice(0).map((agent) => agent.stop()));
  await vi.advanceTimersByTimeAsync(1000);
  await stopped;
  vi.useRealTimers();
});

/** An initialized cluster whose config key holds `config` (asynchronous replication: no sync key to wait for). */
async function store(config: Partial<DynamicConfig>): Promise<ScriptedDcs> {
  const dcs = new ScriptedDcs({ cluster: 'main', clock: systemClock });
  await dcs.claimInitialize({ v: 1, by: 'node1', systemId: SYSID });
  expect(await dcs.putConfig({ ...defaultDynamicConfig, synchronous_mode: 'off', ...config }, null)).toBe(true);
  return dcs;
}

async function setTtl(dcs: ScriptedDcs, ttlSeconds: number): Promise<void> {
  const view = await dcs.readCluster();
  expect(await dcs.putConfig({ ...view.config!.value, ttl: ttlSeconds }, view.config!.modRevision)).toBe(true);
}

async function startAgent(name: string, dcs: ScriptedDcs, pg: FakePostgres): Promise<Agent> {
  const n = Number(name.slice(-1));
  const config = nodeConfigSchema.parse({
    name,
    cluster: 'main',
    etcd: { endpoints: ['http://127.0.0.1:2379'] },
    api: { listen: `127.0.0.1:${8000 + n}` },
    postgres: { dataDir: pg.dataDir, port: 5500 + n, superuser: { password: 'superuser-pw' }, replication: { password: 'replication-pw' } },
  });
  const agent = new Agent(config, dcs, pg, systemClock, silentLogger());
  running.push(agent);
  await agent.start();
  return agent;
}

/** Advances the fake clock to `atMs`. */
async function until(atMs: number): Promise<void> {
  await vi.advanceTimersByTimeAsync(atMs - Date.now());
}

/** A leader node1 and its replica node2, both running, 2 s after start. */
async function leaderAndReplica(): Promise<{ dcs: ScriptedDcs; pg1: FakePostgres; pg2: FakePostgres; leader: Agent; replica: Agent }> {
  const dcs = await store({ ttl: 9, loop_wait: 1 });
  const pg1 = new FakePostgres('node1', { running: true, primary: true });
  const pg2 = new FakePostgres('node2', { running: true, primary: false });
  const leader = await startAgent('node1', dcs, pg1);
  await until(T0 + 200);
  const replica = await startAgent('node2', dcs, pg2);
  await until(T0 + 2000);
  return { dcs, pg1, pg2, leader, replica };
}

/**
 * From the moment `after` holds, no loop can read etcd (until the returned gate opens): only what a job
 * publishes by itself gets there. Returns the member values put, in order.
 */
function holdReadsAndRecord(dcs: ScriptedDcs, after: () => boolean): { published: MemberValue[]; reads: ReturnType<typeof gate> } {
  const reads = gate();
  beforeStop.push(reads.open);
  const readCluster = dcs.readCluster.bind(dcs);
  dcs.readCluster = async () => {
    if (after()) await reads.promise;
    return readCluster();
  };
  const published: MemberValue[] = [];
  const putMember = dcs.putMember.bind(dcs);
  dcs.putMember = async (value, leaseId) => {
    published.push(value);
    return putMember(value, leaseId);
  };
  return { published, reads };
}

describe('agent loop: the lease deadline', () => {
  it('a leader whose keep-alives fail stops PostgreSQL at last renewal sent + granted ttl - margin, not before', async () => {
    const dcs = await store({ ttl: 9, loop_wait: 1 });
    const pg = new FakePostgres('node1', { running: true, primary: true });
    const agent = await startAgent('node1', dcs, pg);
    await until(T0 + 3500);
    expect(agent.state).toBe('primary');
    expect((await dcs.readCluster()).leader).toMatchObject({ value: { name: 'node1' }, leaseId: agent.lease.id });

    dcs.keepAliveFails = () => true;
    // the grant went at T0, the one renewal so far at T0 + 3 s (every ttl/3)
    const lastSentMs = agent.lease.lastRenewalMs!;
    expect(lastSentMs).toBe(T0 + 3000);
    const deadlineMs = lastSentMs + 9000 - 2000;
    expect(agent.lease.deadlineMs()).toBe(deadlineMs);

    await until(deadlineMs - 1);
    expect(pg.stops).toEqual([]);
    expect(pg.running).toBe(true);
    await until(deadlineMs + 150);
    expect(pg.stops[0]?.mode).toBe('immediate');
    expect(pg.stops[0]!.atMs).toBeGreaterThanOrEqual(deadlineMs);
    // the watchdog runs every 100 ms
    expect(pg.stops[0]!.atMs).toBeLessThanOrEqual(deadlineMs + 100);
    // ... before etcd could expire the lease and give the key to someone else
    expect(pg.stops[0]!.atMs).toBeLessThan(lastSentMs + 9000);
  });

  it('after a ttl change the old granted ttl rules until the move of the keys has committed', async () => {
    const dcs = await store({ ttl: 9, loop_wait: 1 });
    const pg = new FakePostgres('node1', { running: true, primary: true });
    const agent = await startAgent('node1', dcs, pg);
    await until(T0 + 500);
    const oldLease = agent.lease.id;
    const held = gate();
    dcs.moveGate = held.promise;
    // opened at the latest before the agent stops: its stop waits for the move job
    beforeStop.push(held.open);
    await setTtl(dcs, 30);
    await until(T0 + 600);
    // a new lease with 30 s is granted; the transaction moving the keys is held back
    expect(agent.lease.current()).toMatchObject({ id: oldLease, ttlSeconds: 9, moving: { ttlSeconds: 30 } });
    expect(agent.lastReason).toMatch(/ttl changed from 9 s to 30 s: moving my member and leader keys/);
    expect((await dcs.readCluster()).leader?.leaseId).toBe(oldLease);

    // cut off now: the 9 s lease granted at T0 rules, not the 30 s of the config
    dcs.keepAliveFails = () => true;
    const deadlineMs = T0 + 9000 - 2000;
    await until(deadlineMs - 1);
    expect(pg.stops).toEqual([]);
    await until(deadlineMs + 100);
    expect(pg.stops.map((s) => s.mode)).toEqual(['immediate']);
    expect(pg.stops[0]!.atMs).toBeLessThanOrEqual(deadlineMs + 100);
  });

  it('once the move committed, the new lease rules: its keys outlive the old ttl and the deadline follows the new ttl', async () => {
    const dcs = await store({ ttl: 9, loop_wait: 1 });
    const pg = new FakePostgres('node1', { running: true, primary: true });
    const agent = await startAgent('node1', dcs, pg);
    await until(T0 + 500);
    const oldLease = agent.lease.id!;
    await setTtl(dcs, 30);
    await until(T0 + 600);
    const moved = agent.lease.current()!;
    expect(moved).toMatchObject({ ttlSeconds: 30, marginMs: 2000 });
    expect(moved.moving).toBeUndefined();
    expect(moved.id).not.toBe(oldLease);
    const view = await dcs.readCluster();
    expect(view.leader?.leaseId).toBe(moved.id);
    expect(await dcs.keepAlive(oldLease)).toBe(false);
    const moves = (await dcs.listEvents(50)).filter((e) => e.kind === 'lease-moved');
    expect(moves.map((e) => e.message)).toEqual(['node1 moved its member and leader keys to a lease granted with ttl 30 s']);

    dcs.keepAliveFails = () => true;
    const deadlineMs = moved.lastRenewalMs + 30_000 - 2000;
    // far past what a 9 s lease would allow: the key is still there, PostgreSQL still runs
    await until(T0 + 15_000);
    expect((await dcs.readCluster()).leader).toMatchObject({ value: { name: 'node1' }, leaseId: moved.id });
    expect(pg.stops).toEqual([]);
    await until(deadlineMs - 1);
    expect(pg.stops).toEqual([]);
    await until(deadlineMs + 100);
    expect(pg.stops.map((s) => s.mode)).toEqual(['immediate']);
    expect(pg.stops[0]!.atMs).toBeGreaterThanOrEqual(deadlineMs);
  });
});

describe('agent loop: a replica', () => {
  it('follows the leader, moves its member key on a ttl change, and takes over only after the cut-off leader stopped', async () => {
    const { dcs, pg1, pg2, leader, replica } = await leaderAndReplica();
    expect(replica.state).toBe('replica');
    expect(pg2.upstream).toEqual({ name: 'node1', host: '127.0.0.1', port: 5501 });
    expect(replica.lastReason).toMatch(/^following leader node1, streaming/);
    // the leader made a slot for its replica
    expect(pg1.slots).toEqual(['node2']);

    await setTtl(dcs, 30);
    await until(T0 + 3000);
    expect(leader.lease.current()?.ttlSeconds).toBe(30);
    expect(replica.lease.current()?.ttlSeconds).toBe(30);
    const view = await dcs.readCluster();
    expect(view.leader?.leaseId).toBe(leader.lease.id);
    expect(view.members.map((m) => m.name)).toEqual(['node1', 'node2']);

    // the leader is cut off from etcd's keep-alives; the replica is not
    const cutLease = leader.lease.id!;
    dcs.keepAliveFails = (id) => id === cutLease;
    const deadlineMs = leader.lease.deadlineMs();
    await until(deadlineMs + 100);
    expect(pg1.stops[0]?.mode).toBe('immediate');
    expect(pg2.promotedAtMs).toBeNull();
    await until(leader.lease.lastRenewalMs! + 30_000 + 3000);
    expect((await dcs.readCluster()).leader?.value.name).toBe('node2');
    expect(pg2.promotedAtMs).not.toBeNull();
    // never two primaries: node1 stopped before etcd let its lease go, node2 promoted after
    expect(pg2.promotedAtMs!).toBeGreaterThanOrEqual(leader.lease.lastRenewalMs! + 30_000);
    expect(pg1.stops[0]!.atMs).toBeLessThan(pg2.promotedAtMs!);
  });
});

describe('agent loop: a promotion', () => {
  it('publishes the member key as primary the moment PostgreSQL is promoted, before the rest of the job', async () => {
    const { dcs, pg2, leader, replica } = await leaderAndReplica();
    expect(replica.state).toBe('replica');
    // once PostgreSQL is promoted, only what the promotion itself publishes gets to etcd
    const { published, reads } = holdReadsAndRecord(dcs, () => pg2.promotedAtMs !== null);
    const cutLease = leader.lease.id!;
    dcs.keepAliveFails = (id) => id === cutLease;
    await until(leader.lease.lastRenewalMs! + 9000 + 3000);
    expect(pg2.promotedAtMs).not.toBeNull();
    expect(published.filter((m) => m.name === 'node2').at(-1)).toMatchObject({ role: 'primary', running: true, timeline: pg2.timeline });

    reads.open();
    await until(Date.now() + 1000);
    expect(replica.state).toBe('primary');
  });
});

describe('agent loop: the history entry of a promotion', () => {
  it('ends with where PostgreSQL switched, when WAL came in after the reading it was first written from', async () => {
    const { dcs, pg2, leader, replica } = await leaderAndReplica();
    // the old leader's last records arrive while the promotion runs: PostgreSQL switches past the reading
    pg2.switchPoints.set(2, pg2.walLsn + 160);
    const cutLease = leader.lease.id!;
    dcs.keepAliveFails = (id) => id === cutLease;
    await until(leader.lease.lastRenewalMs! + 9000 + 3000);
    expect(replica.state).toBe('primary');
    const entries = (await dcs.readCluster()).history!.value.entries.filter((e) => e.timeline === 2);
    expect(entries.map((e) => e.switchLsn)).toEqual([pg2.walLsn, pg2.walLsn + 160]);
    expect(divergence(1, pg2.walLsn + 100, 2, entries)).toBe('none');
  });
});

describe('agent loop: a promotion that finds the history changed', () => {
  it('takes the key and then appends its entry, keeping the entry written meanwhile', async () => {
    const { dcs, pg2, leader, replica } = await leaderAndReplica();
    // between the agent's reading and its promotion's transaction, another entry lands in the history
    const meanwhile = { timeline: 9, switchLsn: 1, leader: 'node9', atMs: 1, reason: 'written meanwhile' };
    const outcomes: string[] = [];
    const take = dcs.takeLeaderToPromote.bind(dcs);
    dcs.takeLeaderToPromote = async (request) => {
      await dcs.appendHistory(meanwhile);
      const outcome = await take(request);
      outcomes.push(outcome);
      return outcome;
    };
    const cutLease = leader.lease.id!;
    dcs.keepAliveFails = (id) => id === cutLease;
    await until(leader.lease.lastRenewalMs! + 9000 + 3000);
    expect(outcomes[0]).toBe('history-changed');
    expect(replica.state).toBe('primary');
    expect(pg2.promotedAtMs).not.toBeNull();
    const view = await dcs.readCluster();
    expect(view.leader?.value.name).toBe('node2');
    expect(view.history!.value.entries.map((e) => e.leader)).toEqual(['node9', 'node2']);
  });
});

describe('agent loop: a switchover target', () => {
  it('publishes the slots it makes for the others the moment they exist, without waiting for a loop to read etcd', async () => {
    const { dcs, pg2 } = await leaderAndReplica();
    expect(pg2.slots).toEqual([]);
    // once the target has made its slots, only what the slots' job publishes gets to etcd
    const { published, reads } = holdReadsAndRecord(dcs, () => pg2.slots.length > 0);
    expect(await dcs.requestSwitchover({ v: 1, from: 'node1', to: 'node2', failover: false, requestedAtMs: Date.now() })).toBe(true);
    await until(Date.now() + 1000);
    expect(pg2.slots).toEqual(['node1']);
    expect(published.filter((m) => m.name === 'node2').at(-1)?.slots).toEqual(['node1']);
    reads.open();
  });
});

describe('agent loop: a reading that straddles a job', () => {
  it('decides nothing on what it read before a restart stopped PostgreSQL; the next loop starts it again', async () => {
    const dcs = await store({ ttl: 9, loop_wait: 1 });
    const pg = new FakePostgres('node1', { running: true, primary: true });
    const agent = await startAgent('node1', dcs, pg);
    await until(T0 + 2000);
    expect(agent.state).toBe('primary');

    // a loop asks PostgreSQL for its state; the answer (a running primary) comes back only after the restart's stop
    const answer = gate();
    pg.readGate = answer.promise;
    agent.wake();
    await vi.advanceTimersByTimeAsync(0);
    const restarted = agent.runManual('restart');
    await vi.advanceTimersByTimeAsync(0);
    expect(pg.running).toBe(false);
    expect(agent.state).toBe('stopped');
    const decisions = [...agent.decisionCounts.values()].reduce((a, b) => a + b, 0);
    pg.readGate = null;
    answer.open();
    for (let i = 0; i < 50; i++) await Promise.resolve();
    // that loop saw a primary running: deciding on it would say primary while PostgreSQL is down
    expect(agent.state).toBe('stopped');
    expect([...agent.decisionCounts.values()].reduce((a, b) => a + b, 0)).toBe(decisions);
    await restarted;

    await until(Date.now() + 1000);
    expect(pg.running).toBe(true);
    expect(agent.state).toBe('primary');
  });
});

describe('agent loop: changes in etcd while a job runs', () => {
  it('start no loop (their readings would queue ahead of the job on the session); the job\'s end runs the next one', async () => {
    const dcs = await store({ ttl: 9, loop_wait: 1 });
    const pg = new FakePostgres('node1', { running: true, primary: true });
    const agent = await startAgent('node1', dcs, pg);
    await until(T0 + 2000);
    expect(agent.state).toBe('primary');

    const stopping = gate();
    pg.stopGate = stopping.promise;
    const restarted = agent.runManual('restart');
    await vi.advanceTimersByTimeAsync(0);
    const readsBefore = pg.runtimeReads;
    // a switchover's worth of changes by others, within the same instant
    for (let i = 0; i < 20; i++) await dcs.putDraining({ v: 1, name: 'node9', sinceMs: Date.now(), reason: `change ${i}` });
    await vi.advanceTimersByTimeAsync(0);
    expect(pg.runtimeReads).toBe(readsBefore);

    // with no job, each change is seen at once
    stopping.open();
    pg.stopGate = null;
    await restarted;
    await until(Date.now() + 1000);
    expect(agent.state).toBe('primary');
    const idleReads = pg.runtimeReads;
    await dcs.deleteDraining('node9');
    await vi.advanceTimersByTimeAsync(0);
    expect(pg.runtimeReads).toBeGreaterThan(idleReads);
  });
});
