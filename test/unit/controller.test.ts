/**
 * The controller's loop against the in-memory store and a fake provider:
 * one active controller, the first spec, and the fencing rule (a lease ends
 * only after the provider confirms the fence).
 */
import { describe, expect, it } from 'vitest';
import { Controller, type ControllerOptions } from '../../src/controller/controller.js';
import { MemoryDcs } from '../../src/dcs/memory.js';
import type { FenceResult, NodeInfo, NodeSpec, Provider } from '../../src/providers/types.js';
import { silentLogger } from '../../src/util/log.js';
import { member, primaryMember, SYSID } from './fixtures.js';

class FakeProvider implements Provider {
  nodes: NodeInfo[] = [];
  fenceResult: FenceResult = { confirmed: true, detail: 'gone' };
  readonly calls: string[] = [];
  /** while set, create() waits for it (a slow cloud API) */
  createGate: Promise<void> | null = null;
  /** while set, create() fails with it (after any gate) */
  createError: Error | null = null;
  async list(): Promise<NodeInfo[]> {
    return this.nodes.map((n) => ({ ...n }));
  }
  async create(_cluster: string, spec: NodeSpec): Promise<NodeInfo> {
    this.calls.push(`create ${spec.name}@${spec.zone}`);
    if (this.createGate) await this.createGate;
    if (this.createError) throw this.createError;
    const node: NodeInfo = { name: spec.name, zone: spec.zone, state: 'running', agentPid: 1, pgAddress: '', apiAddress: '' };
    this.nodes.push(node);
    return node;
  }
  async destroy(name: string): Promise<void> {
    this.calls.push(`destroy ${name}`);
    this.nodes = this.nodes.filter((n) => n.name !== name);
  }
  async fence(name: string): Promise<FenceResult> {
    this.calls.push(`fence ${name}`);
    return this.fenceResult;
  }
}

async function world(now: { ms: number }) {
  const clock = { now: () => now.ms };
  const dcs = new MemoryDcs({ cluster: 'c', clock });
  await dcs.claimInitialize({ v: 1, by: 'node1', systemId: SYSID });
  const leases: Record<string, string> = {};
  for (const name of ['node1', 'node2', 'node3']) {
    leases[name] = await dcs.grantLease(10);
    const value = name === 'node1' ? primaryMember(name) : member(name);
    await dcs.putMember({ ...value, updatedAtMs: now.ms, zone: `z${name.slice(-1)}` }, leases[name]!);
  }
  await dcs.acquireLeader('node1', leases.node1!);
  expect(await dcs.putSync({ v: 1, leader: 'node1', members: ['node2', 'node3'], quorum: 1 }, leases.node1!)).toBe(true);
  const provider = new FakeProvider();
  provider.nodes = ['node1', 'node2', 'node3'].map((name) => ({ name, zone: `z${name.slice(-1)}`, state: 'running', agentPid: 1, pgAddress: '', apiAddress: '' }));
  const make = (name: string, over: Partial<ControllerOptions> = {}) =>
    new Controller({
      name,
      dcs,
      provider,
      limits: { maxNodes: 20, instanceClasses: null },
      defaults: { zones: ['z1', 'z2', 'z3'], instanceClass: 'm' },
      clock,
      logger: silentLogger(),
      ...over,
    });
  return { dcs, provider, make, leases };
}

/**
 * node3 stopped for good, the others publishing, replaceAfterSeconds 5 and a
 * controller whose lease outlives the test; `step` moves time on with the
 * live nodes publishing, then runs one loop.
 */
async function replacing(now: { ms: number }, over: Partial<ControllerOptions> = {}) {
  const w = await world(now);
  const c = w.make('a', { leaseTtlSeconds: 600, ...over });
  await c.tick();
  await c.tick();
  const stored = (await w.dcs.readSpec())!;
  expect(await w.dcs.putSpec({ ...stored.value, replaceAfterSeconds: 5 }, stored.modRevision)).toBe(true);
  const publish = async (): Promise<void> => {
    for (const name of ['node1', 'node2']) {
      await w.dcs.keepAlive(w.leases[name]!);
      const value = name === 'node1' ? primaryMember(name) : member(name);
      await w.dcs.putMember({ ...value, updatedAtMs: now.ms, zone: `z${name.slice(-1)}` }, w.leases[name]!);
    }
  };
  const step = async (ms: number): Promise<void> => {
    now.ms += ms;
    await publish();
    await c.tick();
    await settle();
  };
  w.provider.nodes[2]!.state = 'stopped';
  await step(0);
  return { ...w, c, step };
}

const creates = (provider: FakeProvider) => provider.calls.filter((call) => call.startsWith('create'));

const settle = () => new Promise((r) => setTimeout(r, 20));

describe('controller loop', () => {
  it('one controller is active; it writes the first spec from what exists', async () => {
    const now = { ms: 1_000_000 };
    const { dcs, make } = await world(now);
    const a = make('a');
    const b = make('b');
    await a.tick();
    await b.tick();
    expect([a.active, b.active]).toEqual([true, false]);
    await settle();
    expect((await dcs.readSpec())?.value).toMatchObject({ nodes: 3, zones: ['z1', 'z2', 'z3'], instanceClass: 'm' });
    expect((await dcs.listEvents(10)).map((e) => e.kind)).toEqual(expect.arrayContaining(['controller', 'spec']));
  });

  it('builds a cluster that has no node yet from the number it is given: the first spec, then one node per zone', async () => {
    const now = { ms: 1_000_000 };
    const clock = { now: () => now.ms };
    const dcs = new MemoryDcs({ cluster: 'c', clock });
    const provider = new FakeProvider();
    const make = (nodes?: number) =>
      new Controller({ name: 'a', dcs, provider, limits: { maxNodes: 20, instanceClasses: null }, defaults: { zones: ['z1', 'z2', 'z3'], instanceClass: 'm', ...(nodes === undefined ? {} : { nodes }) }, clock, logger: silentLogger() });
    // without a number it waits for nodes: a spec of what exists (none) would be no cluster
    const waiting = make();
    await waiting.tick();
    await waiting.tick();
    await settle();
    expect(await dcs.readSpec()).toBeNull();
    await waiting.stop();
    const building = make(3);
    for (let i = 0; i < 4; i++) {
      now.ms += 1000;
      await building.tick();
      await settle();
    }
    expect((await dcs.readSpec())?.value).toMatchObject({ nodes: 3, zones: ['z1', 'z2', 'z3'] });
    expect(creates(provider).length).toBeGreaterThanOrEqual(1);
    expect(creates(provider)[0]).toMatch(/^create node1@z1$/);
  });

  it('publishes its plan and its autoscaler decision in its key, the answer `keel autoscale status` shows', async () => {
    const now = { ms: 1_000_000 };
    const { dcs, make } = await world(now);
    const a = make('a');
    await a.tick();
    await a.tick();
    const key = await dcs.readController();
    expect(key?.value.name).toBe('a');
    expect(key?.value.report).toMatchObject({ atMs: now.ms, plan: a.lastPlan!.reason, autoscale: { reason: a.lastAutoscale!.reason } });
    expect(key?.value.report?.autoscale.decision).toMatch(/^hold \(disabled\)$/);
    // written on a change only: the same decision again leaves the key as it was
    await a.tick();
    expect((await dcs.readController())?.modRevision).toBe(key?.modRevision);
    // the key keeps its binding to the controller's lease
    expect((await dcs.readController())?.leaseId).toBe(key?.leaseId);
  });

  it('ends the lease of a dead leader once the provider confirms the fence', async () => {
    const now = { ms: 1_000_000 };
    const { dcs, provider, make } = await world(now);
    const c = make('a');
    await c.tick();
    await c.tick();
    provider.nodes[0]!.state = 'stopped';
    await c.tick();
    expect(provider.calls).toContain('fence node1');
    expect((await dcs.readCluster()).leader).toBeNull();
    expect((await dcs.listEvents(20)).find((e) => e.kind === 'lease-ended')?.message).toMatch(/node1.*fence confirmed/);
  });

  it('a slow node creation does not hold up fencing a dead leader', async () => {
    const now = { ms: 1_000_000 };
    const { dcs, provider, make } = await world(now);
    const c = make('a');
    await c.tick();
    await c.tick();
    const stored = (await dcs.readSpec())!;
    expect(await dcs.putSpec({ ...stored.value, nodes: 4 }, stored.modRevision)).toBe(true);
    let release = (): void => undefined;
    provider.createGate = new Promise<void>((resolve) => (release = resolve));
    await c.tick();
    expect(provider.calls).toEqual(['create node4@z1']);

    provider.nodes[0]!.state = 'stopped';
    await c.tick();
    // the create still waits on the provider; the fence did not wait for it, and the create was not asked twice
    expect(provider.calls).toEqual(['create node4@z1', 'fence node1']);
    expect((await dcs.readCluster()).leader).toBeNull();

    release();
    await settle();
    expect(provider.nodes.map((n) => n.name)).toContain('node4');
    expect((await dcs.listEvents(50)).map((e) => e.kind)).toEqual(expect.arrayContaining(['create', 'lease-ended']));
    await c.stop();
  });

  it('a slow creation is asked once: one replacement per down node, even when the new node publishes before the provider lists it', async () => {
    const now = { ms: 1_000_000 };
    const { dcs, provider, c, step } = await replacing(now);
    let release = (): void => undefined;
    provider.createGate = new Promise<void>((resolve) => (release = resolve));
    await step(6000);
    expect(provider.calls).toEqual(['fence node3', 'destroy node3', 'create node4@z3']);
    // recorded in etcd, bound to the controller's lease, before the provider was asked
    expect((await dcs.readCluster()).creations).toEqual([
      { v: 1, name: 'node4', zone: 'z3', instanceClass: 'm', replaces: 'node3', sinceMs: now.ms, by: 'a' },
    ]);
    // the new node's agent publishes while the provider's create has not returned
    await dcs.putMember({ ...member('node4'), zone: 'z3', streaming: false, updatedAtMs: now.ms }, await dcs.grantLease(600));
    for (let i = 0; i < 4; i++) await step(1000);
    expect(creates(provider)).toEqual(['create node4@z3']);
    expect(c.lastPlan?.reason).toMatch(/2 of 3 nodes .*creating node4 in z3 to replace node3/);

    release();
    await settle();
    expect((await dcs.readCluster()).creations).toEqual([]);
    expect(provider.nodes.map((n) => n.name)).toEqual(['node1', 'node2', 'node4']);
    await step(1000);
    expect(creates(provider)).toEqual(['create node4@z3']);
    expect(c.lastPlan?.reason).toMatch(/^3 of 3 nodes/);
    const created = (await dcs.listEvents(100)).filter((e) => e.kind === 'create');
    expect(created.map((e) => e.message)).toEqual([expect.stringMatching(/replacing node3 \(down \d+ s\) with node4 in z3/)]);
    await c.stop();
  });

  it('a controller that loses its lease and takes the key again still counts the creation it has in flight', async () => {
    const now = { ms: 1_000_000 };
    const startMs = now.ms;
    // no renewals run here: this lease stops being trusted 18 s on (ttl 20 s less the 2 s margin)
    const { dcs, provider, c, step } = await replacing(now, { leaseTtlSeconds: 20 });
    let release = (): void => undefined;
    provider.createGate = new Promise<void>((resolve) => (release = resolve));
    await step(6000);
    expect(creates(provider)).toEqual(['create node4@z3']);
    await dcs.putMember({ ...member('node4'), zone: 'z3', streaming: false, updatedAtMs: now.ms }, await dcs.grantLease(600));
    const firstLease = (await dcs.readController())!.leaseId;
    while (now.ms < startMs + 20_000) await step(1000);
    // the record went with the old lease; the controller campaigned again and acts on a new one
    expect((await dcs.readController())?.leaseId).not.toBe(firstLease);
    expect(c.active).toBe(true);
    expect((await dcs.readCluster()).creations).toEqual([]);
    expect(creates(provider)).toEqual(['create node4@z3']);
    expect(c.lastPlan?.reason).toMatch(/creating node4 in z3 to replace node3/);

    release();
    await settle();
    await step(1000);
    expect(creates(provider)).toEqual(['create node4@z3']);
    expect(provider.nodes.map((n) => n.name)).toEqual(['node1', 'node2', 'node4']);
    await c.stop();
  });

  it('a creation the provider refuses: its record goes, with an event, and the next loop tries again', async () => {
    const now = { ms: 1_000_000 };
    const { dcs, provider, c, step } = await replacing(now);
    provider.createError = new Error('no capacity in z3');
    await step(6000);
    expect(creates(provider)).toEqual(['create node4@z3']);
    expect((await dcs.readCluster()).creations).toEqual([]);
    const failed = (await dcs.listEvents(100)).filter((e) => e.kind === 'action-failed');
    expect(failed.map((e) => e.message)).toEqual(['create node4 failed: no capacity in z3']);
    provider.createError = null;
    await step(1000);
    expect(creates(provider)).toEqual(['create node4@z3', 'create node4@z3']);
    expect(provider.nodes.map((n) => n.name)).toEqual(['node1', 'node2', 'node4']);
    await c.stop();
  });

  it("another controller's creation record holds off a second replacement until its lease ends", async () => {
    const now = { ms: 1_000_000 };
    const { dcs, provider, c, step } = await replacing(now);
    const goneLease = await dcs.grantLease(600);
    const record = { v: 1, name: 'node4', zone: 'z3', instanceClass: 'm', replaces: 'node3', sinceMs: now.ms, by: 'gone' };
    dcs.putRaw('creations/node4', JSON.stringify(record), goneLease);
    await step(6000);
    // node3 is removed, but node4 is on its way: no second replacement, and the record is not this controller's to delete
    expect(provider.calls).toEqual(['fence node3', 'destroy node3']);
    await step(1000);
    expect(creates(provider)).toEqual([]);
    expect((await dcs.readCluster()).creations.map((r) => r.by)).toEqual(['gone']);
    expect(c.lastPlan?.reason).toMatch(/creating node4 in z3 to replace node3/);

    await dcs.revokeLease(goneLease);
    await step(1000);
    expect(creates(provider)).toEqual(['create node4@z3']);
    expect(provider.nodes.map((n) => n.name)).toEqual(['node1', 'node2', 'node4']);
    await c.stop();
  });

  it('never ends a lease without confirmation', async () => {
    const now = { ms: 1_000_000 };
    const { dcs, provider, make } = await world(now);
    const c = make('a');
    await c.tick();
    await c.tick();
    provider.nodes[0]!.state = 'stopped';
    provider.fenceResult = { confirmed: false, detail: 'the hypervisor does not answer' };
    await c.tick();
    await c.tick();
    expect(provider.calls.filter((call) => call === 'fence node1').length).toBeGreaterThanOrEqual(1);
    expect((await dcs.readCluster()).leader?.value.name).toBe('node1');
    await settle();
    const fenceEvent = (await dcs.listEvents(20)).find((e) => e.kind === 'fence');
    expect(fenceEvent?.message).toMatch(/did NOT confirm.*left to expire/);
    expect(provider.calls.some((call) => call.startsWith('destroy'))).toBe(false);
  });

  it("a replica's confirmed fence removes its member key, so the leader drops it from the synchronous set at once; an unconfirmed one leaves it", async () => {
    for (const confirmed of [true, false]) {
      const now = { ms: 1_000_000 };
      const { dcs, provider, c, step } = await replacing(now);
      provider.fenceResult = { confirmed, detail: confirmed ? 'gone' : 'no answer' };
      await step(6_000);
      expect(provider.calls).toContain('fence node3');
      const names = (await dcs.readCluster()).members.map((m) => m.name);
      if (confirmed) expect(names).not.toContain('node3');
      else expect(names).toContain('node3');
      await c.stop();
    }
  });

  it('a standby does nothing, and takes over once the active one stops', async () => {
    const now = { ms: 1_000_000 };
    const { dcs, provider, make } = await world(now);
    const a = make('a');
    const b = make('b');
    await a.tick();
    await b.tick();
    provider.nodes[1]!.state = 'stopped';
    // a minute on: the active one's keep-alives reach etcd, the standby's own lease lapses (no timers run here)
    for (let step = 0; step < 8; step++) {
      now.ms += 7_500;
      expect(await dcs.keepAlive(a.lease.id!)).toBe(true);
    }
    await b.tick().catch(() => undefined);
    expect(b.active).toBe(false);
    expect(provider.calls).toEqual([]);
    await a.stop();
    // the campaign after the active one handed the key over wins, with a new lease
    await b.tick();
    expect(b.active).toBe(true);
  });
});
