/**
 * The router's own key (src/router/presence.ts) as the agents' view reads it
 * (src/dcs/view.ts), and the pool's part in what it reports
 * (src/cli/router-pool.ts, holdReporter). Memory etcd: pure logic only.
 */
import { describe, expect, it } from 'vitest';
import { holdReporter } from '../../src/cli/router-pool.js';
import { MemoryDcs } from '../../src/dcs/memory.js';
import { defaultRouterId, RouterPresence } from '../../src/router/presence.js';
import { noRoutes, type Routes } from '../../src/router/route.js';
import { silentLogger } from '../../src/util/log.js';

const clock = { ms: 1_000_000, now: () => clock.ms };

describe('RouterPresence', () => {
  it('writes routers/<id> bound to a lease, reports each hold, and is gone at once when it stops', async () => {
    const dcs = new MemoryDcs({ cluster: 'main', clock });
    const presence = new RouterPresence(dcs, 'host-a:6400', clock, silentLogger());
    await presence.start();
    expect((await dcs.readCluster()).routers).toEqual([{ v: 1, id: 'host-a:6400', holding: null, atMs: clock.ms }]);
    await presence.report(123);
    expect((await dcs.readCluster()).routers.map((r) => r.holding)).toEqual([123]);
    await presence.stop();
    expect((await dcs.readCluster()).routers).toEqual([]);
  });

  it('keeps trying while etcd is away and writes the newest hold once it is back', async () => {
    const dcs = new MemoryDcs({ cluster: 'main', clock });
    const presence = new RouterPresence(dcs, 'host-a:6400', clock, silentLogger());
    dcs.setUnreachable(true);
    await presence.start();
    await presence.report(7);
    dcs.setUnreachable(false);
    await presence.report(8);
    expect((await dcs.readCluster()).routers.map((r) => r.holding)).toEqual([8]);
    await presence.stop();
  });

  it('takes its default id from the host and the rw port, in the characters a key allows', () => {
    expect(defaultRouterId(6400, 'db-1.example')).toBe('db-1.example:6400');
    expect(defaultRouterId(6400, 'odd host/name')).toBe('odd_host_name:6400');
  });
});

describe('the agents view of routers/', () => {
  it('lists every running router by id', async () => {
    const dcs = new MemoryDcs({ cluster: 'main', clock });
    const lease = await dcs.grantLease(10);
    await dcs.putRouter({ v: 1, id: 'a:1', holding: null, atMs: 1 }, lease);
    const presence = new RouterPresence(dcs, 'b:1', clock, silentLogger());
    await presence.start();
    expect((await dcs.readCluster()).routers.map((r) => r.id)).toEqual(['a:1', 'b:1']);
    await presence.stop();
  });
});

describe('holdReporter', () => {
  const routes = (holdingFor: number | null): Routes => ({ ...noRoutes, holdingFor });

  it('without a pool reports each applied hold as it is', async () => {
    const seen: (number | null)[] = [];
    const report = holdReporter(null, (h) => seen.push(h));
    report(routes(5));
    await new Promise((resolve) => setTimeout(resolve, 0));
    report(routes(null));
    await new Promise((resolve) => setTimeout(resolve, 0));
    expect(seen).toEqual([5, null]);
  });

  it('with a pool reports a hold only once the pool paused, and never after a newer report', async () => {
    let release: () => void = () => undefined;
    const paused = new Promise<void>((resolve) => (release = resolve));
    const pool = { endpoint: { follow: () => paused } } as unknown as Parameters<typeof holdReporter>[0];
    const seen: (number | null)[] = [];
    const report = holdReporter(pool, (h) => seen.push(h));
    report(routes(5));
    await new Promise((resolve) => setTimeout(resolve, 0));
    expect(seen).toEqual([]);
    // the switchover ended before the pool said it paused: the old hold is never reported
    report(routes(null));
    release();
    await new Promise((resolve) => setTimeout(resolve, 0));
    expect(seen).toEqual([null]);
  });
});
