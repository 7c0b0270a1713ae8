/**
 * The REST API's token hook, its shared etcd read and its limits, without
 * sockets (fastify.inject) and with a clock the test moves.
 */
import { pino } from 'pino';
import { describe, expect, it, vi } from 'vitest';
import { apiUrl } from '../../src/agent/member.js';
import { bearerToken, needsToken } from '../../src/api/auth.js';
import { apiLimits, defaultApiLimits, timeoutCheckIntervalMs } from '../../src/api/limits.js';
import { SharedRead } from '../../src/api/read-cache.js';
import { buildApi, type AgentHandle } from '../../src/api/server.js';
import { MemoryDcs } from '../../src/dcs/memory.js';
import { nodeConfigSchema } from '../../src/config/schema.js';
import { NOW } from './fixtures.js';

const TOKEN = 'node1-token-0123456789abcdef0123456789';
const auth = { authorization: `Bearer ${TOKEN}` };

const handle: AgentHandle = {
  state: 'replica',
  lastReason: 'starting',
  lastSnapshot: null,
  lease: { id: null, lastRenewalMs: null, renewals: 0, renewalFailures: 0, deadlineMs: () => Number.NEGATIVE_INFINITY },
  decisionCounts: new Map(),
  promotions: 0,
  runManual: async () => undefined,
};

function api(options: { readAuth?: boolean; readCacheMs?: number } = {}) {
  const clock = { ms: NOW, now: () => clock.ms };
  const dcs = new MemoryDcs({ cluster: 'main', clock });
  const app = buildApi(handle, { node: { name: 'node1', cluster: 'main', tags: { nofailover: false } }, token: TOKEN, dcs, clock, logger: pino({ level: 'silent' }), ...options });
  return { app, dcs, clock };
}

describe('which requests need the token', () => {
  it.each([
    ['GET', false, false], ['HEAD', false, false], ['OPTIONS', false, false],
    ['POST', false, true], ['PATCH', false, true], ['PUT', false, true], ['DELETE', false, true], ['PROPFIND', false, true],
    ['GET', true, true], ['HEAD', true, true], ['OPTIONS', true, true], ['POST', true, true],
  ] as const)('%s with readAuth %s: %s', (method, readAuth, needed) => {
    expect(needsToken(method, readAuth)).toBe(needed);
  });

  it.each([
    [undefined, null], ['', null], ['Bearer', null], ['Bearer ', null], ['Basic abc', null], ['Bearer a b', null],
    ['Bearer abc', 'abc'], ['bearer\tabc ', 'abc'], [['Bearer abc'], null],
  ] as const)('Authorization %j holds the token %j', (header, token) => {
    expect(bearerToken(header as string | string[] | undefined)).toBe(token);
  });
});

describe('the token hook', () => {
  it('refuses a write before its body is parsed or measured: 401, not 400 or 413, and closes the connection', async () => {
    const { app } = api();
    for (const payload of ['not json {', 'x'.repeat(200 * 1024)]) {
      const res = await app.inject({ method: 'POST', url: '/switchover', headers: { 'content-type': 'application/json' }, payload });
      expect(res.statusCode).toBe(401);
      expect(res.json()).toMatchObject({ code: 'KEEL_UNAUTHORIZED' });
      expect(res.headers.connection).toBe('close');
      expect(res.headers['www-authenticate']).toBe('Bearer realm="keel"');
    }
    const wrong = await app.inject({ method: 'PATCH', url: '/config', headers: { authorization: `Bearer ${TOKEN}x`, 'content-type': 'application/json' }, payload: 'not json {' });
    expect(wrong.statusCode).toBe(403);
    expect(wrong.headers.connection).toBe('close');
    // with the token the body is read and refused for what it is
    expect((await app.inject({ method: 'POST', url: '/switchover', headers: { ...auth, 'content-type': 'application/json' }, payload: 'not json {' })).statusCode).toBe(400);
  });

  it('a write to no endpoint needs the token too', async () => {
    const { app } = api();
    expect((await app.inject({ method: 'POST', url: '/nope' })).statusCode).toBe(401);
    expect((await app.inject({ method: 'POST', url: '/nope', headers: auth })).statusCode).toBe(404);
  });

  it('without readAuth, reads and health checks are open', async () => {
    const { app } = api();
    for (const url of ['/health', '/cluster', '/config', '/status', '/metrics']) expect((await app.inject({ method: 'GET', url })).statusCode, url).not.toBe(401);
    expect((await app.inject({ method: 'OPTIONS', url: '/primary' })).statusCode).toBe(503);
  });

  it('with readAuth, every read needs the token, health checks included', async () => {
    const { app } = api({ readAuth: true });
    for (const url of ['/health', '/primary', '/cluster', '/config', '/status', '/metrics', '/nope']) {
      for (const method of ['GET', 'HEAD', 'OPTIONS'] as const) {
        expect((await app.inject({ method, url })).statusCode, `${method} ${url}`).toBe(401);
        expect((await app.inject({ method, url, headers: { authorization: 'Bearer wrong' } })).statusCode, `${method} ${url}`).toBe(403);
      }
      expect((await app.inject({ method: 'GET', url, headers: auth })).statusCode, url).not.toBe(401);
    }
    expect((await app.inject({ method: 'GET', url: '/status', headers: auth })).statusCode).toBe(200);
  });
});

describe('one etcd read serves the GETs of a moment', () => {
  function counted(clock: { now: () => number }, maxAgeMs = 250) {
    const reads: { resolve: (v: number) => void; reject: (e: Error) => void }[] = [];
    const shared = new SharedRead(() => new Promise<number>((resolve, reject) => reads.push({ resolve, reject })), clock, maxAgeMs);
    return { shared, reads };
  }

  it('callers during a read wait for it; a new read after maxAgeMs', async () => {
    const clock = { ms: 0, now: () => clock.ms };
    const { shared, reads } = counted(clock);
    const first = [shared.get(), shared.get()];
    clock.ms = 100;
    first.push(shared.get());
    expect(reads).toHaveLength(1);
    reads[0]!.resolve(1);
    expect(await Promise.all(first)).toEqual([1, 1, 1]);
    clock.ms = 249;
    expect(await shared.get()).toBe(1);
    clock.ms = 250;
    const next = shared.get();
    expect(reads).toHaveLength(2);
    reads[1]!.resolve(2);
    expect(await next).toBe(2);
  });

  it('a failed read is not kept; invalidate forgets; a clock that went back reads again; 0 reads every time', async () => {
    const clock = { ms: 1000, now: () => clock.ms };
    const { shared, reads } = counted(clock);
    const failing = shared.get();
    reads[0]!.reject(new Error('etcd unreachable'));
    await expect(failing).rejects.toThrow('etcd unreachable');
    const again = shared.get();
    expect(reads).toHaveLength(2);
    reads[1]!.resolve(7);
    expect(await again).toBe(7);
    shared.invalidate();
    void shared.get();
    expect(reads).toHaveLength(3);
    reads[2]!.resolve(8);
    clock.ms = 900;
    void shared.get();
    expect(reads).toHaveLength(4);
    reads[3]!.resolve(9);

    const never = counted(clock, 0);
    void never.shared.get();
    void never.shared.get();
    expect(never.reads).toHaveLength(2);
  });

  it('a flood of GET /cluster, /history and /config is one etcd read; a PATCH through the API shows at once', async () => {
    const { app, dcs, clock } = api();
    const readCluster = vi.spyOn(dcs, 'readCluster');
    const urls = ['/cluster', '/history', '/config'];
    const answers = await Promise.all(Array.from({ length: 150 }, (_, i) => app.inject({ method: 'GET', url: urls[i % 3]! })));
    expect(answers.every((r) => r.statusCode === 200)).toBe(true);
    expect(readCluster).toHaveBeenCalledTimes(1);
    clock.ms += 250;
    await app.inject({ method: 'GET', url: '/cluster' });
    expect(readCluster).toHaveBeenCalledTimes(2);
    const patched = await app.inject({ method: 'PATCH', url: '/config', headers: { ...auth, 'content-type': 'application/json' }, payload: { ttl: 20 } });
    expect(patched.statusCode).toBe(200);
    const shown = await app.inject({ method: 'GET', url: '/config' });
    expect(shown.json().ttl).toBe(20);
    expect(shown.headers.etag).toBe(patched.headers.etag);
  });
});

describe('limits and the published URL', () => {
  it('fills defaults, keeps what is set, and never lets the headers wait longer than the whole request', () => {
    expect(apiLimits({})).toEqual(defaultApiLimits);
    expect(apiLimits({ idleTimeoutMs: 1000, maxConnections: 8 })).toEqual({ ...defaultApiLimits, idleTimeoutMs: 1000, maxConnections: 8 });
    expect(apiLimits({ requestTimeoutMs: 2000 })).toMatchObject({ requestTimeoutMs: 2000, headersTimeoutMs: 2000 });
    expect(timeoutCheckIntervalMs(defaultApiLimits)).toBe(1000);
    expect(timeoutCheckIntervalMs({ ...defaultApiLimits, headersTimeoutMs: 500 })).toBe(250);
  });

  it('node.yml refuses a headers timeout above the request timeout, and a token shorter than 32 characters', () => {
    const base = { name: 'node1', cluster: 'main', etcd: { endpoints: ['http://127.0.0.1:2379'] }, postgres: { dataDir: '/d', port: 5432, superuser: { password: 'p'.repeat(16) }, replication: { password: 'p'.repeat(16) } } };
    expect(nodeConfigSchema.safeParse({ ...base, api: { listen: '127.0.0.1:8008', headersTimeoutMs: 5000, requestTimeoutMs: 4000 } }).success).toBe(false);
    expect(nodeConfigSchema.safeParse({ ...base, api: { listen: '127.0.0.1:8008', token: 'short-token' } }).success).toBe(false);
    const ok = nodeConfigSchema.safeParse({ ...base, api: { listen: '127.0.0.1:8008', token: TOKEN, requestTimeoutMs: 4000, maxConnections: 16 } });
    expect(ok.success, JSON.stringify(ok.error?.issues)).toBe(true);
    expect(ok.data!.api.readAuth).toBe(false);
  });

  it('the member publishes https when the node has its certificate', () => {
    const tls = { ca: '/tls/ca.crt', cert: '/tls/node.crt', key: '/tls/node.key' };
    expect(apiUrl({ api: { listen: '0.0.0.0:8008', connectAddress: '10.0.1.21:8008', readAuth: false }, tls })).toBe('https://10.0.1.21:8008');
    expect(apiUrl({ api: { listen: '127.0.0.1:8008', readAuth: false } })).toBe('http://127.0.0.1:8008');
    expect(apiUrl({ api: { listen: '[::1]:8008', readAuth: false }, tls })).toBe('https://[::1]:8008');
  });
});
