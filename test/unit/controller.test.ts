/**
 * The controller's loop against the in-memory store and a fake provider:
 * one active controller, the first spec, and the fencing rule (a lease ends
 * only after the provider confirms the fence).
 */
import { describe, expect, it } from 'vitest';
import { Controller } from '../../src/controller/controller.js';
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
  async list(): Promise<NodeInfo[]> {
    return this.nodes.map((n) => ({ ...n }));
  }
  async create(_cluster: string, spec: NodeSpec): Promise<NodeInfo> {
    this.calls.push(`create ${spec.name}@${spec.zone}`);
    if (this.createGate) await this.createGate;
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
  const provider = new FakeProvider();
  provider.nodes = ['node1', 'node2', 'node3'].map((name) => ({ name, zone: `z${name.slice(-1)}`, state: 'running', agentPid: 1, pgAddress: '', apiAddress: '' }));
  const make = (name: string) =>
    new Controller({
      name,
      dcs,
      provider,
      limits: { maxNodes: 20, instanceClasses: null },
      defaults: { zones: ['z1', 'z2', 'z3'], instanceClass: 'm' },
      clock,
      logger: silentLogger(),
    });
  return { dcs, provider, make, leases };
}

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

  it('a standby does nothing, and takes over once the active one stops', async () => {
    const now = { ms: 1_000_000 };
    const { provider, make } = await world(now);
    const a = make('a');
    const b = make('b');
    await a.tick();
    await b.tick();
    provider.nodes[1]!.state = 'stopped';
    now.ms += 60_000;
    await b.tick().catch(() => undefined);
    expect(b.active).toBe(false);
    expect(provider.calls).toEqual([]);
    await a.stop();
    // its lease expired above (no renewals run here): this campaign wins with a new one
    await b.tick();
    expect(b.active).toBe(true);
  });
});
