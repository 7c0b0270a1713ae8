/**
 * Which engine `keel router` runs by default (no --engine, i.e. auto): HAProxy
 * where its binary is installed, the builtin engine where it is not, each
 * said in the log and in GET /status. etcd is out of reach here (the router
 * fails closed meanwhile): the engine starts before the first read. Ports
 * 20400-20409.
 */
import { mkdtempSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readRouterStatus } from '../../src/dashboard/router-client.js';
import { probePostgres } from '../../src/postgres/probe.js';
import { isAlive } from '../../src/util/process.js';
import { startRouter, waitForLog, type RouterProcess } from './router-helpers.js';

let dir: string;
const routers: RouterProcess[] = [];

beforeAll(() => {
  dir = mkdtempSync('/tmp/keel-router-engine-test-');
});

afterAll(async () => {
  for (const router of routers) await router.stop();
  if (dir && process.env.KEEL_KEEP_TEST_DIR === undefined) await rm(dir, { recursive: true, force: true });
});

async function defaultRouter(name: string, ports: [number, number, number], extra: string[] = []): Promise<RouterProcess> {
  const router = await startRouter({
    engine: 'auto', etcd: 'http://127.0.0.1:1', cluster: 'engine', rwPort: ports[0], roPort: ports[1],
    logFile: join(dir, `${name}.log`), extra: ['--metrics', `127.0.0.1:${ports[2]}`, ...extra],
  });
  routers.push(router);
  await waitForLog(router, /"msg":"metrics listening"/, 10_000);
  return router;
}

describe('keel router without --engine', () => {
  it('runs HAProxy where it is installed, and says so', async () => {
    const router = await defaultRouter('installed', [20400, 20401, 20402]);
    await waitForLog(router, /"msg":"engine haproxy \(--engine auto: HAProxy is installed at \/usr\/sbin\/haproxy\)"/, 10_000);
    const status = await readRouterStatus('http://127.0.0.1:20402', null);
    expect(status.engine).toBe('haproxy');
    expect(status.engineWhy).toBe('--engine auto: HAProxy is installed at /usr/sbin/haproxy');
    // HAProxy holds the endpoints: a connection is accepted and waits (no leader is known)
    expect(await probePostgres('127.0.0.1', 20400, 500)).toBe(false);
    const pid = /"msg":"HAProxy started"/.test(router.log()) ? (JSON.parse(router.log().split('\n').find((l) => l.includes('"msg":"HAProxy started"'))!) as { pid: number }).pid : null;
    expect(pid !== null && isAlive(pid), 'HAProxy runs').toBe(true);
  });

  it('runs the builtin engine where HAProxy is not installed, and says why', async () => {
    const router = await defaultRouter('missing', [20403, 20404, 20405], ['--haproxy', '/nonexistent/haproxy']);
    await waitForLog(router, /"msg":"engine builtin \(--engine auto: no HAProxy at \/nonexistent\/haproxy, the builtin engine serves\)"/, 10_000);
    const status = await readRouterStatus('http://127.0.0.1:20405', null);
    expect(status.engine).toBe('builtin');
    expect(status.engineWhy).toMatch(/no HAProxy at \/nonexistent\/haproxy/);
  });

  it('falls back to the builtin engine when HAProxy is there but cannot start', async () => {
    // a program that exits at once stands for an HAProxy that fails (a broken package, a missing library)
    const router = await defaultRouter('broken', [20406, 20407, 20408], ['--haproxy', '/bin/false']);
    await waitForLog(router, /"msg":"engine builtin \(--engine auto: HAProxy at \/bin\/false did not start \(KEEL_ROUTER_ENGINE_FAILED/, 20_000);
    expect((await readRouterStatus('http://127.0.0.1:20408', null)).engine).toBe('builtin');
  });
});
