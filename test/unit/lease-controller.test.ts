/**
 * The controller keeps its key with the same LeaseKeeper as the agents and
 * stops acting at the same deadline: last renewal sent + granted ttl - margin.
 * Fake timers, in-memory store.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { Controller } from '../../src/controller/controller.js';
import { systemClock } from '../../src/util/clock.js';
import { silentLogger } from '../../src/util/log.js';
import { ScriptedDcs } from './lease-fakes.js';

const T0 = 1_000_000;
const started: Controller[] = [];

beforeEach(() => {
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'setImmediate', 'clearImmediate', 'Date'] });
  vi.setSystemTime(T0);
});

afterEach(async () => {
  const stopped = Promise.all(started.splice(0).map((c) => c.stop()));
  await vi.advanceTimersByTimeAsync(1000);
  await stopped;
  vi.useRealTimers();
});

async function controller(name: string, dcs: ScriptedDcs): Promise<Controller> {
  // a dry run (no provider): acting here is holding the key and planning
  const c = new Controller({
    name,
    dcs,
    provider: null,
    limits: { maxNodes: 5, instanceClasses: null },
    defaults: { zones: ['z1'], instanceClass: 'm' },
    clock: systemClock,
    logger: silentLogger(),
    tickMs: 500,
    leaseTtlSeconds: 9,
  });
  started.push(c);
  await c.start();
  return c;
}

describe('controller lease', () => {
  it('stands down at its lease deadline when keep-alives fail, not before; a standby takes over', async () => {
    const dcs = new ScriptedDcs({ cluster: 'main', clock: systemClock });
    const a = await controller('a', dcs);
    await vi.advanceTimersByTimeAsync(100);
    const b = await controller('b', dcs);
    await vi.advanceTimersByTimeAsync(3100);
    expect([a.active, b.active]).toEqual([true, false]);
    expect((await dcs.readController())?.value.name).toBe('a');
    // renewed every ttl/3 from the grant at T0
    expect(a.lease.lastRenewalMs).toBe(T0 + 3000);

    const cut = a.lease.id!;
    dcs.keepAliveFails = (id) => id === cut;
    // the agents' rule: last renewal sent + granted ttl (9 s) - margin (2 s)
    const deadlineMs = T0 + 3000 + 9000 - 2000;
    expect(a.lease.deadlineMs()).toBe(deadlineMs);
    await vi.advanceTimersByTimeAsync(deadlineMs - 1 - Date.now());
    expect(a.active).toBe(true);

    let stoodDownAtMs: number | null = null;
    while (stoodDownAtMs === null && Date.now() < deadlineMs + 2000) {
      await vi.advanceTimersByTimeAsync(50);
      if (!a.active) stoodDownAtMs = Date.now();
    }
    expect(stoodDownAtMs).not.toBeNull();
    // its timer checks every tick (500 ms)
    expect(stoodDownAtMs!).toBeLessThanOrEqual(deadlineMs + 550);
    // it gave the key up at once rather than waiting for etcd to expire the lease
    await vi.advanceTimersByTimeAsync(1000);
    expect(b.active).toBe(true);
    expect((await dcs.readController())?.value.name).toBe('b');
    expect(a.active).toBe(false);
  });
});
