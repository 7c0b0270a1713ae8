/**
 * One replacement per dead node, against a real local cluster (etcd,
 * PostgreSQL + PostGIS, agents as processes), with a provider as slow as a
 * cloud API: create() takes 8 s and the node is not listed until it returns,
 * while its agent already boots and publishes its member key. The creation is
 * recorded in etcd (`creations/<name>`, bound to the controller's lease)
 * before the provider is asked, so no later plan asks for a second node.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Controller } from '../../src/controller/controller.js';
import type { EtcdDcs } from '../../src/dcs/etcd.js';
import type { CreationValue } from '../../src/model/values.js';
import type { FenceResult, NodeInfo, NodeSpec, Provider } from '../../src/providers/types.js';
import { sleep } from '../../src/util/clock.js';
import { shapeIs } from '../../src/workload/shape.js';
import { TestCluster } from '../support/cluster.js';
import { localController } from '../support/controller.js';

const createMs = 8000;

/** The local provider as a cloud API behaves: a node appears in list() only once create() has returned. */
class SlowProvider implements Provider {
  /** every create() asked, in order */
  readonly asked: string[] = [];
  private readonly unlisted = new Set<string>();
  constructor(private readonly inner: Provider) {}

  async list(cluster: string): Promise<NodeInfo[]> {
    return (await this.inner.list(cluster)).filter((n) => !this.unlisted.has(n.name));
  }

  async create(cluster: string, spec: NodeSpec): Promise<NodeInfo> {
    this.asked.push(spec.name);
    this.unlisted.add(spec.name);
    try {
      const info = await this.inner.create(cluster, spec);
      await sleep(createMs);
      return info;
    } finally {
      this.unlisted.delete(spec.name);
    }
  }

  destroy(name: string): Promise<void> {
    return this.inner.destroy(name);
  }

  fence(name: string): Promise<FenceResult> {
    return this.inner.fence(name);
  }
}

describe('controller: one replacement per dead node, with a slow provider', () => {
  let cluster: TestCluster;
  let dcs: EtcdDcs;
  let slow: SlowProvider;
  let controller: Controller | null = null;

  beforeAll(async () => {
    cluster = await TestCluster.start({ portBase: 19100, nodes: 3 });
    dcs = cluster.local.dcs();
    slow = new SlowProvider(cluster.local.provider);
  });
  afterAll(async () => {
    // the controller goes first: it would replace nodes that are being stopped
    await controller?.stop().catch(() => undefined);
    await dcs?.close().catch(() => undefined);
    await cluster?.stop();
  });

  it('etcd records a creation once, only for the active controller, and drops it with its lease', async () => {
    const lease = await dcs.grantLease(30);
    const otherLease = await dcs.grantLease(30);
    const record: CreationValue = { v: 1, name: 'node9', zone: 'local-a', instanceClass: 'local-medium', replaces: 'node2', sinceMs: Date.now(), by: 'probe' };
    try {
      expect(await dcs.claimCreation(record, lease)).toBe(false);
      expect(await dcs.acquireController({ v: 1, name: 'probe', pid: process.pid, startedAtMs: Date.now() }, lease)).toBe(true);
      expect(await dcs.claimCreation(record, otherLease)).toBe(false);
      expect(await dcs.claimCreation(record, lease)).toBe(true);
      expect(await dcs.claimCreation({ ...record, zone: 'local-b' }, lease)).toBe(false);
      expect((await dcs.readCluster()).creations).toEqual([record]);
    } finally {
      await dcs.revokeLease(lease);
      await dcs.revokeLease(otherLease);
    }
    expect((await dcs.readCluster()).creations).toEqual([]);
    expect(await dcs.readController()).toBeNull();
  });

  it('a replica killed for good is replaced by exactly one node, recorded in etcd while the provider creates it', async () => {
    const startedAtMs = Date.now();
    controller = localController('replacer', dcs, slow, { drainMs: 3000 });
    await controller.start();
    for (let attempt = 0; attempt < 100; attempt++) {
      const stored = await dcs.readSpec();
      if (stored !== null && stored.value.replaceAfterSeconds === 5) break;
      if (stored !== null) await dcs.putSpec({ ...stored.value, replaceAfterSeconds: 5 }, stored.modRevision);
      await sleep(200);
    }
    expect((await dcs.readSpec())?.value).toMatchObject({ nodes: 3, replaceAfterSeconds: 5 });
    await cluster.waitFor('two streaming replicas', (v) => shapeIs(v, 2), 60_000);

    const leader = await cluster.leader();
    const victim = (await cluster.view()).members.find((m) => m.name !== leader.name)!.name;
    const killedAtMs = Date.now();
    // fenced: the provider will not start it again, as a machine that died would not come back
    expect((await cluster.local.provider.fence(victim)).confirmed).toBe(true);

    // watch etcd and the provider until the replacement streams
    const records: CreationValue[] = [];
    let mostListed = 0;
    let memberBeforeListed = false;
    const deadline = Date.now() + 150_000;
    let view = await cluster.view();
    let listed = await slow.list('test');
    const replaced = (): boolean =>
      shapeIs(view, 2) && !view.members.some((m) => m.name === victim) && slow.asked.length > 0 && listed.some((n) => n.name === slow.asked[0]);
    while (!replaced()) {
      if (Date.now() > deadline) throw new Error(`no replacement of ${victim} within 150 s: ${controller.lastPlan?.reason}`);
      mostListed = Math.max(mostListed, listed.length);
      for (const c of view.creations) if (!records.some((r) => r.name === c.name)) records.push(c);
      const pending = view.creations.find((c) => !listed.some((n) => n.name === c.name));
      if (pending && view.members.some((m) => m.name === pending.name)) memberBeforeListed = true;
      await sleep(200);
      view = await cluster.view();
      listed = await slow.list('test');
    }
    const seconds = (Date.now() - killedAtMs) / 1000;
    console.log(`replica ${victim} replaced by ${slow.asked.join(', ')}, streaming and listed ${seconds.toFixed(1)} s after it was killed (replaceAfterSeconds 5, create ${createMs / 1000} s)`);

    // a few more loops: a second creation would be asked now, while the first one's node settles
    for (let i = 0; i < 12; i++) {
      mostListed = Math.max(mostListed, (await slow.list('test')).length);
      await sleep(250);
    }

    expect(slow.asked).toHaveLength(1);
    const replacement = slow.asked[0]!;
    // the record existed while the provider created the node, naming what it replaces and who asked
    expect(records).toEqual([expect.objectContaining({ name: replacement, replaces: victim, by: 'replacer' })]);
    // the slow window was real: the new agent published before the provider listed its node
    expect(memberBeforeListed).toBe(true);
    expect((await cluster.view()).creations).toEqual([]);
    const names = (await slow.list('test')).map((n) => n.name).sort();
    expect(names).toHaveLength(3);
    expect(names).toContain(replacement);
    expect(names).not.toContain(victim);
    expect(mostListed).toBeLessThanOrEqual(3);

    const events = (await dcs.listEvents(500)).filter((e) => e.source === 'controller' && e.atMs >= startedAtMs);
    const creates = events.filter((e) => e.kind === 'create');
    expect(creates.map((e) => e.message)).toEqual([expect.stringContaining(`replacing ${victim}`)]);
    expect(creates[0]!.message).toContain(`with ${replacement}`);
    expect(events.filter((e) => e.kind === 'action-failed')).toEqual([]);
    expect(events.filter((e) => /\b4 of 3 nodes/.test(e.message))).toEqual([]);
    expect(controller.lastPlan?.reason).toMatch(/^3 of 3 nodes/);
  });
});
