import { afterEach, describe, expect, it } from 'vitest';
import { MemoryDcs } from '../../src/dcs/memory.js';
import { RouterControl, type RouterDcs } from '../../src/router/control.js';
import type { Routes } from '../../src/router/route.js';
import { silentLogger } from '../../src/util/log.js';
import { NOW, member, primaryMember } from './fixtures.js';

/** A clock the test moves by hand. */
const clock = { t: NOW, now(): number { return this.t; } };

class FakeEngine {
  applied: Routes[] = [];
  async apply(routes: Routes): Promise<void> {
    this.applied.push(routes);
  }
  get last(): Routes | undefined {
    return this.applied[this.applied.length - 1];
  }
}

async function until(what: string, check: () => boolean): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (check()) return;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** seen: what the router is given in place of the store itself (a store that counts reads) */
async function setup(seen: (dcs: MemoryDcs) => RouterDcs = (dcs) => dcs): Promise<{ dcs: MemoryDcs; engine: FakeEngine; control: RouterControl; lease: string }> {
  clock.t = NOW;
  const dcs = new MemoryDcs({ cluster: 'main', clock });
  const lease = await dcs.grantLease(3600);
  await dcs.putMember(primaryMember('node1', { updatedAtMs: NOW }), lease);
  await dcs.putMember(member('node2', { updatedAtMs: NOW }), lease);
  await dcs.acquireLeader('node1', lease);
  const engine = new FakeEngine();
  // timers far away: the test drives re-reads and freshness checks itself
  const control = new RouterControl(seen(dcs), engine, clock, silentLogger(), { route: {}, rereadMs: 3_600_000, freshnessCheckMs: 3_600_000 });
  await control.start();
  return { dcs, engine, control, lease };
}

let stopControl: (() => Promise<void>) | null = null;
afterEach(async () => {
  await stopControl?.();
  stopControl = null;
});

describe('RouterControl', () => {
  it('applies the routes of the first read', async () => {
    const { engine, control } = await setup();
    stopControl = () => control.stop();
    await until('first apply', () => engine.last !== undefined);
    expect(engine.last).toMatchObject({ rw: { name: 'node1' }, holdRw: false, ro: [{ name: 'node2' }] });
  });

  it('follows a leader change through the watch, routing each change from the change itself: no read of etcd after the first', async () => {
    let reads = 0;
    const counted = (dcs: MemoryDcs): RouterDcs => ({
      readCluster: () => ((reads += 1), dcs.readCluster()),
      keepCluster: async (handlers) => {
        const kept = await dcs.keepCluster(handlers);
        return { read: () => ((reads += 1), kept.read()), stop: () => kept.stop() };
      },
    });
    const { dcs, engine, control, lease } = await setup(counted);
    stopControl = () => control.stop();
    await until('first apply', () => engine.last?.rw?.name === 'node1');
    await new Promise((resolve) => setTimeout(resolve, 20));
    const readsBefore = reads;
    await dcs.releaseLeader('node1');
    await until('rw held', () => engine.last?.rw === null && engine.last.holdRw);
    await dcs.putMember(member('node1', { updatedAtMs: NOW }), lease);
    await dcs.putMember(primaryMember('node2', { updatedAtMs: NOW }), lease);
    await dcs.acquireLeader('node2', lease);
    await until('rw on node2', () => engine.last?.rw?.name === 'node2');
    expect(reads).toBe(readsBefore);
    // a slow re-read still reads, and changes nothing that is current
    await control.refresh();
    expect(reads).toBe(readsBefore + 1);
    expect(engine.last).toMatchObject({ rw: { name: 'node2' }, holdRw: false, ro: [{ name: 'node1' }] });
  });

  it('changes that leave the routes as they were are not applied again', async () => {
    const { dcs, engine, control, lease } = await setup();
    stopControl = () => control.stop();
    await until('first apply', () => engine.applied.length === 1);
    for (let i = 0; i < 5; i++) await dcs.putMember(member('node2', { updatedAtMs: NOW, receivedLsn: 1000 + i }), lease);
    await control.refresh();
    expect(engine.applied).toHaveLength(1);
  });

  it('a re-read with the same routes while an apply is in flight does not lose that apply', async () => {
    const { dcs, engine, control, lease } = await setup();
    stopControl = () => control.stop();
    await until('first apply', () => engine.last?.rw?.name === 'node1');
    let open: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => (open = resolve));
    const slowApply = engine.apply.bind(engine);
    engine.apply = async (routes) => {
      await gate;
      await slowApply(routes);
    };
    await dcs.releaseLeader('node1');
    await control.refresh();
    await control.refresh();
    open();
    await until('rw held', () => engine.last?.rw === null);
    expect(engine.last?.holdRw).toBe(true);
    await dcs.acquireLeader('node1', lease);
    await until('rw back', () => engine.last?.rw?.name === 'node1');
  });

  it('fails closed after ttl without a good read, and opens again when etcd answers to a read', async () => {
    const { dcs, engine, control, lease } = await setup();
    stopControl = () => control.stop();
    await until('first apply', () => engine.last?.rw?.name === 'node1');
    dcs.setUnreachable(true);
    clock.t += 9_000;
    await control.refresh();
    control.checkFreshness();
    expect(engine.last?.rw?.name).toBe('node1');
    clock.t += 1_500;
    control.checkFreshness();
    await until('fail closed', () => engine.last?.rw === null);
    expect(engine.last).toMatchObject({ holdRw: true, ro: [{ name: 'node2' }] });
    expect(engine.last?.reason).toMatch(/etcd not read for 10.5 s \(ttl 10 s\): failing closed/);
    // etcd answers again, but no read has yet: a change the watch brings does not open rw
    dcs.setUnreachable(false);
    const applies = engine.applied.length;
    await dcs.putMember(member('node2', { updatedAtMs: clock.t, streaming: false }), lease);
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(engine.applied).toHaveLength(applies);
    await control.refresh();
    await until('open again', () => engine.last?.rw?.name === 'node1');
  });

  it('takes ttl from the config key', async () => {
    const { dcs, engine, control } = await setup();
    stopControl = () => control.stop();
    const { defaultDynamicConfig } = await import('../../src/config/schema.js');
    await dcs.putConfig({ ...defaultDynamicConfig, ttl: 30, loop_wait: 1 }, null);
    await control.refresh();
    dcs.setUnreachable(true);
    clock.t += 20_000;
    control.checkFreshness();
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(engine.last?.rw?.name).toBe('node1');
    clock.t += 11_000;
    control.checkFreshness();
    await until('fail closed', () => engine.last?.rw === null);
  });
});
