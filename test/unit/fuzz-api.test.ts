/**
 * Property tests of the REST API's inputs through fastify's inject() (no
 * sockets): arbitrary bodies, content types and query strings to PATCH
 * /config, POST /switchover and POST /failover, and arbitrary queries to the
 * health checks and reads, never give a 500, and nothing reaches Object.prototype.
 * Bounded runs: seconds.
 */
import { Writable } from 'node:stream';
import fc from 'fast-check';
import type { FastifyInstance } from 'fastify';
import { pino } from 'pino';
import { beforeAll, describe, expect, it } from 'vitest';
import { buildApi, type AgentHandle } from '../../src/api/server.js';
import { MemoryDcs } from '../../src/dcs/memory.js';
import { leaseDeadlineMs } from '../../src/model/lease.js';
import { member, NOW, primaryMember, snapshot } from './fixtures.js';

const numRuns = 300;
const TOKEN = 'tok-fuzz-5c2e81d0a9';
const pristine = Object.getOwnPropertyNames(Object.prototype).sort();

let app: FastifyInstance;
const errorLines: string[] = [];

beforeAll(async () => {
  const clock = { now: () => NOW };
  const dcs = new MemoryDcs({ cluster: 'main', clock });
  const lease = await dcs.grantLease(10);
  await dcs.acquireLeader('node1', lease);
  await dcs.putMember(primaryMember('node1', { walLsn: 5000, updatedAtMs: NOW }), lease);
  await dcs.putMember(member('node2', { receivedLsn: 4000, replayedLsn: 4000, updatedAtMs: NOW }), lease);
  await dcs.putStatus({ v: 1, leader: 'node1', timeline: 1, walLsn: 5000, updatedAtMs: NOW });
  const view = await dcs.readCluster();
  const handle: AgentHandle = {
    state: 'replica',
    lastReason: 'following leader node1',
    lastSnapshot: snapshot({ me: { name: 'node2', nofailover: false }, cluster: view, nowMs: NOW }),
    lease: { id: lease, lastRenewalMs: NOW, renewals: 1, renewalFailures: 0, deadlineMs: () => leaseDeadlineMs({ id: lease, ttlSeconds: 10, lastRenewalMs: NOW, marginMs: 2000 }) },
    decisionCounts: new Map(),
    promotions: 0,
    runManual: async () => undefined,
  };
  const sink = new Writable({
    write(chunk, _enc, done) {
      if (String(chunk).includes('"level":50')) errorLines.push(String(chunk));
      done();
    },
  });
  app = buildApi(handle, { node: { name: 'node2', cluster: 'main', tags: { nofailover: false } }, token: TOKEN, dcs, clock, logger: pino({ level: 'info' }, sink) });
  await app.ready();
});

const keyish = fc.oneof(
  fc.constantFrom('__proto__', 'constructor', 'prototype', 'ttl', 'candidate', 'leader', 'postgresql_parameters', 'scheduled_at', 'work_mem', ''),
  fc.string({ maxLength: 10 }),
);
/** JSON text, including prototype keys (which fastify's own parser refuses) and text that is not JSON. */
const bodyText = fc.oneof(
  fc.jsonValue({ maxDepth: 4 }).map((value) => JSON.stringify(value)),
  fc.dictionary(keyish, fc.oneof(fc.jsonValue({ maxDepth: 2 }), fc.constantFrom('node1', 'node2', 'node3', 'Node2', 'x") ,("y')), { maxKeys: 4 }).map((o) => JSON.stringify(o)),
  fc.tuple(keyish, keyish, fc.jsonValue({ maxDepth: 1 })).map(([a, b, leaf]) => `{${JSON.stringify(a)}:{${JSON.stringify(b)}:${JSON.stringify(leaf)}}}`),
  fc.string({ unit: 'binary', maxLength: 100 }),
  fc.constant(''),
  // nested far deeper than any setting, within the 64 KiB body limit
  fc.integer({ min: 1, max: 10_000 }).map((depth) => `${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`),
  fc.integer({ min: 1, max: 30_000 }).map((depth) => `{"ttl":${'['.repeat(depth)}${']'.repeat(depth)}}`),
);
const contentType = fc.constantFrom('application/json', 'application/merge-patch+json', 'text/plain', 'application/x-www-form-urlencoded', 'application/json; charset=utf-8', undefined);
const query = fc.oneof(
  fc.constant(''),
  fc.dictionary(keyish, fc.string({ maxLength: 12 }), { maxKeys: 3 }).map((q) => `?${new URLSearchParams(q).toString()}`),
  fc.string({ maxLength: 30 }).map((raw) => `?${encodeURI(raw)}`),
  fc.constantFrom('?lag=16MB', '?lag=-1', '?lag=1e999', '?tag_nofailover=false', '?lag=abc&lag=def', '?__proto__[x]=1', '?constructor[prototype][x]=1'),
);
const ifMatch = fc.option(fc.oneof(fc.string({ maxLength: 12 }), fc.nat().map((n) => `"${n}"`)), { nil: undefined });

describe('the REST API under arbitrary input', () => {
  it('PATCH /config, POST /switchover and /failover never answer 500', async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom('/config', '/switchover', '/failover'), bodyText, contentType, query, ifMatch, async (path, payload, type, q, match) => {
        const headers: Record<string, string> = { authorization: `Bearer ${TOKEN}` };
        if (type !== undefined) headers['content-type'] = type;
        if (match !== undefined && path === '/config') headers['if-match'] = match;
        const res = await app.inject({ method: path === '/config' ? 'PATCH' : 'POST', url: `${path}${q}`, headers, payload });
        expect(res.statusCode, `${path} ${payload} -> ${res.body}`).toBeLessThan(500);
        if (res.statusCode >= 400) expect(JSON.parse(res.body).code).toMatch(/^KEEL_[A-Z_]+$/);
        expect(Object.getOwnPropertyNames(Object.prototype).sort()).toEqual(pristine);
      }),
      { numRuns },
    );
    expect(errorLines).toEqual([]);
  });

  it('health checks and reads never answer 500 (only 200, 503 for no, 400 or 404), whatever the query', async () => {
    const paths = ['/', '/primary', '/replica', '/read-only', '/health', '/liveness', '/readiness', '/cluster', '/history', '/config', '/patroni', '/metrics'];
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...paths), fc.constantFrom('GET', 'HEAD', 'OPTIONS'), query, async (path, method, q) => {
        const res = await app.inject({ method: method as 'GET', url: `${path}${q}` });
        // 503 is a health check's "no" (this node is a replica), never a failure
        expect([200, 400, 404, 503], `${method} ${path}${q} -> ${res.statusCode} ${res.body}`).toContain(res.statusCode);
        if (res.statusCode >= 400 && method === 'GET' && res.body.startsWith('{"code"')) expect(JSON.parse(res.body).code).not.toBe('KEEL_INTERNAL');
      }),
      { numRuns },
    );
    expect(errorLines).toEqual([]);
  });
});
