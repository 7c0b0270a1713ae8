/**
 * The REST API's HTTP semantics against a fake agent handle and the in-memory
 * store (fastify.inject: no sockets).
 */
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { FastifyInstance, InjectOptions } from 'fastify';
import type { Snapshot } from '../../src/agent/snapshot.js';
import { buildApi, type AgentHandle, type ApiOptions } from '../../src/api/server.js';
import { parseByteSize } from '../../src/model/size.js';
import { mergePatch } from '../../src/config/patch.js';
import { defaultDynamicConfig } from '../../src/config/schema.js';
import { MemoryDcs } from '../../src/dcs/memory.js';
import { KeelError } from '../../src/errors.js';
import { member, NOW, primaryMember, primaryRuntime, replicaRuntime, snapshot } from './fixtures.js';
import { leaseDeadlineMs } from '../../src/model/lease.js';

const TOKEN = 'tok-3f9a1c77e5b2d4a8';
const PASSWORD = 'pw-superuser-8d1e0b';
const auth = { authorization: `Bearer ${TOKEN}` };

type Fake = { -readonly [K in keyof AgentHandle]: AgentHandle[K] } & { lease: { id: string | null; lastRenewalMs: number | null; renewals: number; renewalFailures: number; deadlineMs(): number } };

interface World {
  app: FastifyInstance;
  dcs: MemoryDcs;
  handle: Fake;
  clock: { now: () => number; ms: number };
  logLines: string[];
  bodies: string[];
  call(options: InjectOptions): Promise<{ status: number; json: any; body: string; headers: Record<string, unknown> }>;
}

/**
 * node1 leads (walLsn 5000); node2 streams (replayed 4000); node3 runs but does
 * not stream. `me` picks which node the API belongs to.
 */
async function world(me: 'node1' | 'node2' | 'node3', tags: Record<string, string | number | boolean> = { nofailover: false }, token: string | null = TOKEN): Promise<World> {
  const clock = { ms: NOW, now: () => clock.ms };
  const dcs = new MemoryDcs({ cluster: 'main', clock });
  const lease = await dcs.grantLease(10);
  await dcs.acquireLeader('node1', lease);
  await dcs.putMember(primaryMember('node1', { walLsn: 5000, updatedAtMs: NOW, reason: `password=${PASSWORD} leading` }), lease);
  await dcs.putMember(member('node2', { receivedLsn: 4000, replayedLsn: 4000, updatedAtMs: NOW, tags: { nofailover: false, rack: 'r1' } }), lease);
  await dcs.putMember(member('node3', { streaming: false, receivedLsn: 4000, replayedLsn: 4000, updatedAtMs: NOW }), lease);
  await dcs.putStatus({ v: 1, leader: 'node1', timeline: 1, walLsn: 5000, updatedAtMs: NOW });
  await dcs.appendHistory({ timeline: 2, switchLsn: 0x3000060, leader: 'node1', atMs: NOW - 60_000, reason: 'no leader; I am the healthiest replica' });
  const view = await dcs.readCluster();
  const runtime =
    me === 'node1'
      ? primaryRuntime({ walLsn: 5000 })
      : replicaRuntime({ receivedLsn: 4000, replayedLsn: 4000, streaming: me === 'node2' });
  const base = snapshot({ me: { name: me, nofailover: false }, cluster: view, nowMs: NOW - 300 });
  const snap: Snapshot = { ...base, pg: { ...base.pg, runtime } };
  const handle: Fake = {
    state: me === 'node1' ? 'primary' : 'replica',
    lastReason: `following leader node1 (conninfo password=${PASSWORD})`,
    lastSnapshot: snap,
    lease: {
      id: me === 'node1' ? lease : 'other',
      lastRenewalMs: NOW - 1000,
      renewals: 12,
      renewalFailures: 1,
      // granted with 10 s, 2 s margin, as LeaseKeeper computes it
      deadlineMs() {
        return this.lastRenewalMs === null ? Number.NEGATIVE_INFINITY : leaseDeadlineMs({ id: this.id, ttlSeconds: 10, lastRenewalMs: this.lastRenewalMs, marginMs: 2000 });
      },
    },
    decisionCounts: new Map([['primary:', 40], ['primary:syncSlots', 1]]),
    promotions: 1,
    runManual: vi.fn(async () => undefined),
  };
  const logLines: string[] = [];
  const sink = new Writable({ write(chunk, _enc, done) { logLines.push(String(chunk)); done(); } });
  const logger = pino({ level: 'debug', redact: { paths: ['token', '*.token', 'headers.authorization'], censor: '***' } }, sink);
  const options: ApiOptions = { node: { name: me, cluster: 'main', tags: { nofailover: false, ...tags } }, token: token ?? undefined, dcs, clock, logger };
  const app = buildApi(handle, options);
  const bodies: string[] = [];
  const call: World['call'] = async (opts) => {
    const res = await app.inject(opts);
    bodies.push(res.body, JSON.stringify(res.headers));
    let json: unknown = null;
    try { json = JSON.parse(res.body); } catch { /* metrics and HEAD */ }
    return { status: res.statusCode, json, body: res.body, headers: res.headers };
  };
  return { app, dcs, handle, clock, logLines, bodies, call };
}

const primaryPaths = ['/', '/primary', '/read-write', '/leader', '/master'];
const methods = ['GET', 'HEAD', 'OPTIONS'] as const;

async function statusOf(w: World, url: string): Promise<number[]> {
  const out: number[] = [];
  for (const method of methods) out.push((await w.call({ method, url })).status);
  return out;
}

describe('health checks', () => {
  it('answer 200 on the leader for primary, read-only, health, liveness and readiness; 503 for replica; same for GET, HEAD and OPTIONS', async () => {
    const w = await world('node1');
    for (const path of primaryPaths) expect(await statusOf(w, path)).toEqual([200, 200, 200]);
    expect(await statusOf(w, '/replica')).toEqual([503, 503, 503]);
    for (const path of ['/read-only', '/health', '/liveness', '/readiness']) expect(await statusOf(w, path)).toEqual([200, 200, 200]);
    const res = await w.call({ method: 'GET', url: '/primary' });
    expect(res.json).toMatchObject({ name: 'node1', role: 'leader', postgres: 'running', leader: 'node1', timeline: 1, lsn: '0/1388' });
    expect((await w.call({ method: 'HEAD', url: '/primary' })).body).toBe('');
  });

  it('answer 200 on a streaming replica for replica, read-only and readiness, 503 for primary', async () => {
    const w = await world('node2');
    for (const path of primaryPaths) expect(await statusOf(w, path)).toEqual([503, 503, 503]);
    for (const path of ['/replica', '/read-only', '/health', '/liveness', '/readiness']) expect(await statusOf(w, path)).toEqual([200, 200, 200]);
    expect((await w.call({ method: 'GET', url: '/replica' })).json).toMatchObject({ role: 'replica', streaming: true, lag_bytes: 1000 });
  });

  it('bound the replica lag with ?lag= in bytes or units, against the leader\'s published position', async () => {
    const w = await world('node2');
    expect((await w.call({ method: 'GET', url: '/replica?lag=999' })).status).toBe(503);
    expect((await w.call({ method: 'GET', url: '/replica?lag=1000' })).status).toBe(200);
    expect((await w.call({ method: 'OPTIONS', url: '/replica?lag=16MB' })).status).toBe(200);
    expect((await w.call({ method: 'HEAD', url: '/read-only?lag=0.5kB' })).status).toBe(503);
    expect((await w.call({ method: 'HEAD', url: '/read-only?lag=1kB' })).status).toBe(200);
    expect((await w.call({ method: 'GET', url: '/readiness?lag=100' })).status).toBe(503);
    const bad = await w.call({ method: 'GET', url: '/replica?lag=lots' });
    expect(bad.status).toBe(400);
    expect(bad.json).toMatchObject({ code: 'KEEL_USAGE' });
    expect(bad.json.message).toContain('lag');
  });

  it('a replica with unknown lag fails a lag bound (fail closed) but passes without one', async () => {
    const w = await world('node2');
    w.handle.lastSnapshot = { ...w.handle.lastSnapshot!, cluster: null };
    expect((await w.call({ method: 'GET', url: '/replica' })).status).toBe(200);
    expect((await w.call({ method: 'GET', url: '/replica?lag=16MB' })).status).toBe(503);
  });

  it('filter on tags with ?tag_key=value', async () => {
    const w = await world('node2', { rack: 'r1', weight: 3 });
    expect((await w.call({ method: 'GET', url: '/replica?tag_rack=r1' })).status).toBe(200);
    expect((await w.call({ method: 'GET', url: '/replica?tag_rack=r1&tag_weight=3&tag_nofailover=false' })).status).toBe(200);
    expect((await w.call({ method: 'OPTIONS', url: '/replica?tag_rack=r2' })).status).toBe(503);
    expect((await w.call({ method: 'GET', url: '/read-only?tag_missing=x' })).status).toBe(503);
    expect((await w.call({ method: 'GET', url: '/replica?tag_rack=r1&lag=10' })).status).toBe(503);
  });

  it('keep a noloadbalance replica out of /replica but not out of /readiness', async () => {
    const w = await world('node2', { noloadbalance: true });
    expect((await w.call({ method: 'GET', url: '/replica' })).status).toBe(503);
    expect((await w.call({ method: 'GET', url: '/readiness' })).status).toBe(200);
  });

  it('a replica that does not stream is healthy but neither replica nor ready', async () => {
    const w = await world('node3');
    expect((await w.call({ method: 'GET', url: '/replica' })).status).toBe(503);
    expect((await w.call({ method: 'GET', url: '/readiness' })).status).toBe(503);
    expect((await w.call({ method: 'GET', url: '/health' })).status).toBe(200);
  });

  it('stopped PostgreSQL: every check but liveness fails', async () => {
    const w = await world('node1');
    const snap = w.handle.lastSnapshot!;
    w.handle.lastSnapshot = { ...snap, pg: { ...snap.pg, runtime: null, postmasterPid: null } };
    for (const path of ['/primary', '/replica', '/read-only', '/health', '/readiness']) expect(await statusOf(w, path)).toEqual([503, 503, 503]);
    expect((await w.call({ method: 'GET', url: '/liveness' })).status).toBe(200);
    expect((await w.call({ method: 'GET', url: '/health' })).json).toMatchObject({ role: 'stopped', postgres: 'stopped' });
  });

  it('the leader stops answering /primary once its lease cannot be trusted, or is not the one the key is bound to', async () => {
    const w = await world('node1');
    // deadline = last renewal + ttl - margin (2 s): 10 s ttl, renewed 1 s ago
    w.clock.ms = NOW + 6_999;
    expect((await w.call({ method: 'OPTIONS', url: '/primary' })).status).toBe(200);
    w.clock.ms = NOW + 7_000;
    expect((await w.call({ method: 'OPTIONS', url: '/primary' })).status).toBe(503);
    w.clock.ms = NOW;
    w.handle.lease.id = null;
    expect((await w.call({ method: 'OPTIONS', url: '/primary' })).status).toBe(503);
    w.handle.lease.id = 'a-newer-lease';
    expect((await w.call({ method: 'OPTIONS', url: '/primary' })).status).toBe(503);
    expect((await w.call({ method: 'GET', url: '/primary' })).json.role).toBe('primary');
  });

  it('liveness fails when the loop has not run for a ttl (leader) or two (others)', async () => {
    const leader = await world('node1');
    leader.handle.lease.lastRenewalMs = NOW + 10_000;
    leader.clock.ms = NOW - 300 + 10_000;
    expect((await leader.call({ method: 'GET', url: '/liveness' })).status).toBe(200);
    leader.clock.ms += 1;
    expect((await leader.call({ method: 'GET', url: '/liveness' })).status).toBe(503);
    expect((await leader.call({ method: 'GET', url: '/primary' })).status).toBe(503);
    const replica = await world('node2');
    replica.clock.ms = NOW - 300 + 20_000;
    expect((await replica.call({ method: 'GET', url: '/liveness' })).status).toBe(200);
    replica.clock.ms += 1;
    expect((await replica.call({ method: 'GET', url: '/liveness' })).status).toBe(503);
    expect((await replica.call({ method: 'GET', url: '/replica' })).status).toBe(503);
  });

  it('before the first loop: every check 503, role unknown', async () => {
    const w = await world('node2');
    w.handle.lastSnapshot = null;
    for (const path of ['/primary', '/replica', '/read-only', '/health', '/liveness', '/readiness']) expect(await statusOf(w, path)).toEqual([503, 503, 503]);
    expect((await w.call({ method: 'GET', url: '/status' })).json).toMatchObject({ role: 'unknown', loop_age_ms: null });
  });
});

describe('byte sizes for ?lag=', () => {
  it.each([
    ['0', 0], ['1048576', 1048576], ['16MB', 16 * 1024 ** 2], ['16mb', 16 * 1024 ** 2], ['512kB', 512 * 1024], ['1k', 1024],
    ['1.5GB', 1.5 * 1024 ** 3], ['2TB', 2 * 1024 ** 4], ['100B', 100], [' 7 MB ', 7 * 1024 ** 2],
  ])('%s = %d bytes', (text, bytes) => expect(parseByteSize(text)).toBe(bytes));
  it.each(['', 'MB', '-1', '16 XB', '1e6', '0x10', '16MBs'])('%j is refused', (text) => expect(parseByteSize(text)).toBeNull());
});

describe('cluster, history and config', () => {
  it('GET /cluster lists the members in a Patroni-like shape, with a pending switchover', async () => {
    const w = await world('node2');
    const res = await w.call({ method: 'GET', url: '/cluster' });
    expect(res.status).toBe(200);
    expect(res.json.scope).toBe('main');
    expect(res.json.leader).toBe('node1');
    expect(res.json.members.map((m: { name: string; role: string; state: string; lag: number | null }) => [m.name, m.role, m.state, m.lag])).toEqual([
      ['node1', 'leader', 'running', null],
      ['node2', 'replica', 'streaming', 1000],
      ['node3', 'replica', 'running', 1000],
    ]);
    expect(res.json.members[1]).toMatchObject({ api_url: 'http://127.0.0.1:802', host: '127.0.0.1', port: 5502, timeline: 1, tags: { rack: 'r1' } });
    expect(res.json.scheduled_switchover).toBeUndefined();
    await w.call({ method: 'POST', url: '/switchover', headers: auth, payload: { candidate: 'node2' } });
    expect((await w.call({ method: 'GET', url: '/cluster' })).json.scheduled_switchover).toMatchObject({ from: 'node1', to: 'node2', failover: false });
  });

  it('GET /history lists timeline switches', async () => {
    const w = await world('node2');
    const res = await w.call({ method: 'GET', url: '/history' });
    expect(res.json).toEqual([
      { timeline: 2, lsn: 0x3000060, lsn_text: '0/3000060', new_leader: 'node1', timestamp: new Date(NOW - 60_000).toISOString(), reason: 'no leader; I am the healthiest replica' },
    ]);
  });

  it('GET /config gives the defaults and an ETag before anything was written', async () => {
    const w = await world('node2');
    const res = await w.call({ method: 'GET', url: '/config' });
    expect(res.status).toBe(200);
    expect(res.json).toMatchObject({ ttl: 10, loop_wait: 1, synchronous_mode: 'on' });
    expect(res.headers.etag).toBe('"0"');
  });

  it('PATCH /config needs the token, merges, validates and compare-and-swaps', async () => {
    const w = await world('node2');
    expect((await w.call({ method: 'PATCH', url: '/config', payload: { ttl: 20 } })).status).toBe(401);
    expect((await w.call({ method: 'PATCH', url: '/config', headers: { authorization: 'Bearer nope-nope-nope' }, payload: { ttl: 20 } })).status).toBe(403);

    const first = await w.call({ method: 'PATCH', url: '/config', headers: auth, payload: { ttl: 20, postgresql_parameters: { work_mem: '8MB', max_connections: 200 } } });
    expect(first.status).toBe(200);
    expect(first.json).toMatchObject({ ttl: 20, loop_wait: 1, postgresql_parameters: { work_mem: '8MB', max_connections: 200 } });
    const etag = first.headers.etag as string;
    expect((await w.dcs.readCluster()).config?.value.ttl).toBe(20);

    // merge-patch: null removes (back to the default), nested objects merge
    const second = await w.call({
      method: 'PATCH', url: '/config', headers: { ...auth, 'content-type': 'application/merge-patch+json', 'if-match': etag },
      payload: JSON.stringify({ ttl: null, postgresql_parameters: { work_mem: null } }),
    });
    expect(second.status).toBe(200);
    expect(second.json).toMatchObject({ ttl: 10, postgresql_parameters: { max_connections: 200 } });
    expect(second.json.postgresql_parameters.work_mem).toBeUndefined();

    const stale = await w.call({ method: 'PATCH', url: '/config', headers: { ...auth, 'if-match': etag }, payload: { ttl: 30 } });
    expect(stale.status).toBe(409);
    expect(stale.json.code).toBe('KEEL_CONFLICT');
  });

  it('PATCH /config answers 409 when the key changes between the read and the write', async () => {
    const w = await world('node2');
    vi.spyOn(w.dcs, 'putConfig').mockResolvedValueOnce(false);
    const res = await w.call({ method: 'PATCH', url: '/config', headers: auth, payload: { ttl: 20 } });
    expect(res.status).toBe(409);
    expect(res.json).toMatchObject({ code: 'KEEL_CONFLICT' });
  });

  it.each([
    [{ ttl: 2 }, 'ttl'],
    [{ ttl: 'ten' }, 'ttl'],
    [{ loop_wait: 8 }, 'loop_wait'],
    [{ synchronous_mode: 'maybe' }, 'synchronous_mode'],
    [{ tll: 10 }, 'tll'],
    [{ postgresql_parameters: { work_mem: { nested: 1 } } }, 'postgresql_parameters.work_mem'],
  ])('PATCH /config %j is 400 KEEL_CONFIG_INVALID naming %s', async (patch, field) => {
    const w = await world('node2');
    const res = await w.call({ method: 'PATCH', url: '/config', headers: auth, payload: patch });
    expect(res.status).toBe(400);
    expect(res.json.code).toBe('KEEL_CONFIG_INVALID');
    expect(res.json.message).toContain(field);
    expect(res.json.hint).toBeTruthy();
    expect((await w.dcs.readCluster()).config).toBeNull();
  });

  it('PATCH /config refuses a body that is not an object, and malformed JSON', async () => {
    const w = await world('node2');
    expect((await w.call({ method: 'PATCH', url: '/config', headers: { ...auth, 'content-type': 'application/json' }, payload: '[1]' })).json.code).toBe('KEEL_CONFIG_INVALID');
    const broken = await w.call({ method: 'PATCH', url: '/config', headers: { ...auth, 'content-type': 'application/json' }, payload: '{"ttl":' });
    expect(broken.status).toBe(400);
    expect(broken.json.code).toBe('KEEL_USAGE');
  });

  it.each([
    '{"__proto__": {"polluted": true}}',
    '{"constructor": {"prototype": {"polluted": true}}}',
    '{"constructor": 1}',
    '{"prototype": {"polluted": true}}',
    '{"ttl": 20, "postgresql_parameters": {"__proto__": {"polluted": true}}}',
    '{"ttl": 20, "postgresql_parameters": {"constructor": "x"}}',
  ])('PATCH /config %s is 400 KEEL_CONFIG_INVALID, changes nothing and pollutes nothing', async (payload) => {
    const w = await world('node2');
    await w.dcs.putConfig({ ...defaultDynamicConfig, ttl: 30 }, null);
    const before = await w.dcs.readCluster();
    const res = await w.call({ method: 'PATCH', url: '/config', headers: { ...auth, 'content-type': 'application/json' }, payload });
    expect(res.status).toBe(400);
    expect(res.json.code).toBe('KEEL_CONFIG_INVALID');
    expect(res.json.message).toMatch(/__proto__|constructor|prototype/);
    const after = await w.dcs.readCluster();
    expect(after.config).toEqual(before.config);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(Object.getOwnPropertyNames(Object.prototype)).not.toContain('polluted');
  });

  it('PATCH /config refuses a parameter that runs commands, naming it, and writes nothing', async () => {
    const w = await world('node2');
    const res = await w.call({ method: 'PATCH', url: '/config', headers: auth, payload: { ttl: 20, postgresql_parameters: { work_mem: '64MB', archive_command: 'curl x | sh' } } });
    expect(res.status).toBe(400);
    expect(res.json.code).toBe('KEEL_CONFIG_INVALID');
    expect(res.json.message).toContain('archive_command');
    expect(res.json.message).toContain('node.yml');
    expect((await w.dcs.readCluster()).config).toBeNull();
  });

  it('mergePatch follows RFC 7386', () => {
    expect(mergePatch({ a: 1, b: { c: 2, d: 3 } }, { a: null, b: { c: null, e: 4 }, f: [1] })).toEqual({ b: { d: 3, e: 4 }, f: [1] });
    expect(mergePatch({ a: 1 }, 'x')).toBe('x');
  });
});

describe('write endpoints', () => {
  const writes: InjectOptions[] = [
    { method: 'POST', url: '/switchover', payload: { candidate: 'node2' } },
    { method: 'POST', url: '/failover', payload: { candidate: 'node2' } },
    { method: 'POST', url: '/restart' },
    { method: 'POST', url: '/reinitialize' },
    { method: 'PATCH', url: '/config', payload: { ttl: 20 } },
  ];

  it.each(writes)('$method $url: 401 without a token, 403 with a wrong one or a different scheme', async (req) => {
    const w = await world('node1');
    const none = await w.call(req);
    expect(none.status).toBe(401);
    expect(none.json).toMatchObject({ code: 'KEEL_UNAUTHORIZED' });
    expect(none.headers['www-authenticate']).toBe('Bearer realm="keel"');
    expect(none.json.hint).toBeTruthy();
    expect((await w.call({ ...req, headers: { authorization: 'Basic dXNlcjpwYXNz' } })).status).toBe(401);
    const wrong = await w.call({ ...req, headers: { authorization: `Bearer ${TOKEN}x` } });
    expect(wrong.status).toBe(403);
    expect(wrong.json).toMatchObject({ code: 'KEEL_FORBIDDEN' });
    expect((await w.call({ ...req, headers: { authorization: `Bearer ${TOKEN.slice(0, -1)}` } })).status).toBe(403);
    expect(w.handle.runManual).not.toHaveBeenCalled();
    expect((await w.dcs.readCluster()).switchover).toBeNull();
  });

  it('a node without a token refuses every write (403), never accepts one', async () => {
    const w = await world('node1', {}, null);
    for (const req of writes) expect((await w.call({ ...req, headers: auth })).status).toBe(403);
  });

  it('POST /switchover records the request (202) and refuses a second one while it is pending (409)', async () => {
    const w = await world('node1');
    const res = await w.call({ method: 'POST', url: '/switchover', headers: auth, payload: { leader: 'node1', candidate: 'node2' } });
    expect(res.status).toBe(202);
    expect(res.json).toMatchObject({ from: 'node1', to: 'node2', failover: false });
    expect((await w.dcs.readCluster()).switchover?.value).toMatchObject({ from: 'node1', to: 'node2', failover: false, requestedAtMs: NOW });
    const again = await w.call({ method: 'POST', url: '/switchover', headers: auth, payload: {} });
    expect(again.status).toBe(409);
    expect(again.json.code).toBe('KEEL_CONFLICT');
  });

  it('POST /switchover without a body names the healthiest replica the leader may hand over to', async () => {
    const w = await world('node1');
    const res = await w.call({ method: 'POST', url: '/switchover', headers: auth });
    expect(res.status).toBe(202);
    expect(res.json).toMatchObject({ from: 'node1', to: 'node2' });
  });

  it.each([
    [{ candidate: 'node9' }, 'KEEL_UNKNOWN_MEMBER', 'node9'],
    [{ candidate: 'node1' }, 'KEEL_TARGET_INELIGIBLE', 'already leads'],
    [{ leader: 'node2', candidate: 'node3' }, 'KEEL_TARGET_INELIGIBLE', 'node2 does not lead'],
    [{ leader: 'node7' }, 'KEEL_UNKNOWN_MEMBER', 'node7'],
    [{ candidate: 'node3' }, 'KEEL_TARGET_INELIGIBLE', 'node3: it does not stream from node1'],
  ])('POST /switchover %j is 412 %s', async (payload, code, text) => {
    const w = await world('node1');
    const res = await w.call({ method: 'POST', url: '/switchover', headers: auth, payload });
    expect(res.status).toBe(412);
    expect(res.json.code).toBe(code);
    expect(res.json.message).toContain(text);
    expect((await w.dcs.readCluster()).switchover).toBeNull();
  });

  it('412 with the reason for a target too far behind, and for no eligible replica at all', async () => {
    const w = await world('node1');
    const lease = await w.dcs.grantLease(10);
    await w.dcs.putMember(member('node2', { receivedLsn: 1, replayedLsn: 1, updatedAtMs: NOW }), lease);
    await w.dcs.putStatus({ v: 1, leader: 'node1', timeline: 1, walLsn: 5 * 1024 * 1024, updatedAtMs: NOW });
    const far = await w.call({ method: 'POST', url: '/failover', headers: auth, payload: { candidate: 'node2' } });
    expect(far.status).toBe(412);
    expect(far.json.message).toMatch(/node2 is \d+ bytes behind/);
    await w.dcs.deleteMember('node3');
    const none = await w.call({ method: 'POST', url: '/switchover', headers: auth, payload: {} });
    expect(none.status).toBe(412);
    expect(none.json.message).toContain('no replica may take over');
  });

  it('POST /switchover without a leader is 503 KEEL_NO_LEADER; POST /failover needs a candidate', async () => {
    const w = await world('node2');
    await w.dcs.releaseLeader('node1');
    expect((await w.call({ method: 'POST', url: '/switchover', headers: auth, payload: {} })).json.code).toBe('KEEL_NO_LEADER');
    const missing = await w.call({ method: 'POST', url: '/failover', headers: auth, payload: {} });
    expect(missing.status).toBe(400);
    expect(missing.json.message).toContain('candidate');
    const ok = await w.call({ method: 'POST', url: '/failover', headers: auth, payload: { candidate: 'node2' } });
    expect(ok.status).toBe(202);
    expect(ok.json).toMatchObject({ from: null, to: 'node2', failover: true });
  });

  it('refuses options Keel does not implement instead of ignoring them', async () => {
    const w = await world('node1');
    const res = await w.call({ method: 'POST', url: '/switchover', headers: auth, payload: { candidate: 'node2', scheduled_at: '2030-01-01T00:00:00Z' } });
    expect(res.status).toBe(400);
    expect(res.json.message).toContain('scheduled_at');
    expect((await w.call({ method: 'POST', url: '/restart', headers: auth, payload: { schedule: 'now' } })).status).toBe(400);
  });

  it('POST /restart and /reinitialize run the manual action; its KeelError sets the status', async () => {
    const w = await world('node2');
    const restart = await w.call({ method: 'POST', url: '/restart', headers: auth });
    expect(restart.status).toBe(202);
    expect(w.handle.runManual).toHaveBeenCalledWith('restart');
    // a JSON content type with no body is no body, as curl users expect
    expect((await w.call({ method: 'POST', url: '/restart', headers: { ...auth, 'content-type': 'application/json' } })).status).toBe(202);
    expect((await w.call({ method: 'POST', url: '/reinitialize', headers: auth, payload: {} })).status).toBe(202);
    expect(w.handle.runManual).toHaveBeenLastCalledWith('reinitialize');
    w.handle.runManual = vi.fn(async () => {
      throw new KeelError('KEEL_TARGET_INELIGIBLE', 'node2 leads: reinitialize only a replica');
    });
    const refused = await w.call({ method: 'POST', url: '/reinitialize', headers: auth });
    expect(refused.status).toBe(412);
    expect(refused.json).toEqual({ code: 'KEEL_TARGET_INELIGIBLE', message: 'node2 leads: reinitialize only a replica', hint: expect.any(String) });
    w.handle.runManual = vi.fn(async () => {
      throw new KeelError('KEEL_CONFLICT', 'the agent is busy with another action');
    });
    expect((await w.call({ method: 'POST', url: '/restart', headers: auth })).status).toBe(409);
    w.handle.runManual = vi.fn(async () => {
      throw new Error(`boom: password=${PASSWORD}`);
    });
    const boom = await w.call({ method: 'POST', url: '/restart', headers: auth });
    expect(boom.status).toBe(500);
    expect(boom.body).not.toContain('boom');
  });
});

describe('metrics and hygiene', () => {
  it('GET /metrics exposes Keel metrics and the process metrics from its own registry', async () => {
    const w = await world('node1');
    const res = await w.call({ method: 'GET', url: '/metrics' });
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toContain('text/plain');
    const text = res.body;
    expect(text).toMatch(/keel_role\{role="leader",cluster="main",member="node1"\} 1/);
    expect(text).toMatch(/keel_role\{role="replica",cluster="main",member="node1"\} 0/);
    expect(text).toMatch(/keel_timeline\{cluster="main",member="node1"\} 1/);
    expect(text).toMatch(/keel_replication_lag_bytes\{[^}]*\} 0/);
    expect(text).toMatch(/keel_lease_renewals_total\{[^}]*\} 12/);
    expect(text).toMatch(/keel_lease_renewal_failures_total\{[^}]*\} 1/);
    expect(text).toMatch(/keel_decisions_total\{decision="primary:none",[^}]*\} 40/);
    expect(text).toMatch(/keel_decisions_total\{decision="primary:syncSlots",[^}]*\} 1/);
    expect(text).toMatch(/keel_failovers_total\{[^}]*\} 1/);
    expect(text).toMatch(/keel_postgres_running\{[^}]*\} 1/);
    expect(text).toContain('process_cpu_seconds_total');
    // a second API in the same process: no "already registered" clash
    const other = await world('node2');
    const second = await other.call({ method: 'GET', url: '/metrics' });
    expect(second.body).toMatch(/keel_replication_lag_bytes\{[^}]*\} 1000/);
    w.handle.lease.renewals = 13;
    expect((await w.call({ method: 'GET', url: '/metrics' })).body).toMatch(/keel_lease_renewals_total\{[^}]*\} 13/);
  });

  it('unknown paths are 404 in the error shape', async () => {
    const w = await world('node1');
    const res = await w.call({ method: 'GET', url: '/nope?x=1' });
    expect(res.status).toBe(404);
    expect(res.json).toEqual({ code: 'KEEL_USAGE', message: 'no endpoint GET /nope', hint: expect.any(String) });
  });

  let w: World;
  beforeEach(async () => {
    w = await world('node1');
  });
  afterEach(async () => {
    await w.app.close();
  });

  it('no response body, header or log line carries the token or a password', async () => {
    const urls = ['/', '/primary', '/replica', '/read-only', '/health', '/liveness', '/readiness', '/status', '/patroni', '/cluster', '/history', '/config', '/metrics'];
    for (const url of urls) for (const method of methods) await w.call({ method, url });
    for (const headers of [auth, { authorization: `Bearer ${TOKEN}x` }, {}]) {
      await w.call({ method: 'PATCH', url: '/config', headers, payload: { ttl: 20 } });
      await w.call({ method: 'PATCH', url: '/config', headers, payload: { ttl: 1 } });
      await w.call({ method: 'POST', url: '/switchover', headers, payload: { candidate: 'node9' } });
      await w.call({ method: 'POST', url: '/failover', headers, payload: { candidate: 'node2' } });
      await w.call({ method: 'POST', url: '/restart', headers });
    }
    expect(w.bodies.length).toBeGreaterThan(50);
    expect(w.logLines.length).toBeGreaterThan(0);
    for (const text of [...w.bodies, ...w.logLines]) {
      expect(text).not.toContain(TOKEN);
      expect(text).not.toContain(TOKEN.slice(0, -1));
      expect(text).not.toContain(PASSWORD);
    }
    const status = await w.call({ method: 'GET', url: '/status' });
    expect(status.json.reason).toContain('password=***');
    const cluster = await w.call({ method: 'GET', url: '/cluster' });
    expect(cluster.json.members[0].reason).toContain('password=***');
  });
});
