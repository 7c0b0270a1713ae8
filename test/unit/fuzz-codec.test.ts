/**
 * Property tests of the etcd value codec: decoding never throws, whatever a
 * key holds (a value read from etcd may be anything), and every valid value
 * comes back from decode(encode(value)) as it was. Bounded runs: seconds.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { defaultDynamicConfig, type DynamicConfig } from '../../src/config/schema.js';
import {
  decodeConfig,
  decodeController,
  decodeCreation,
  decodeDraining,
  decodeEvent,
  decodeHistory,
  decodeInitialize,
  decodeLeader,
  decodeMember,
  decodeSpec,
  decodeStatus,
  decodeSwitchover,
  decodeSync,
  encode,
  encodeConfig,
  ignoredConfigParameters,
  keys,
  type Decoded,
} from '../../src/dcs/codec.js';
import { buildClusterView, type RawKv } from '../../src/dcs/view.js';
import type { MemberValue } from '../../src/model/values.js';

const numRuns = 300;

const decoders: Array<[string, (text: string) => Decoded<unknown>]> = [
  ['initialize', decodeInitialize],
  ['leader', decodeLeader],
  ['member', decodeMember],
  ['status', decodeStatus],
  ['sync', decodeSync],
  ['switchover', decodeSwitchover],
  ['history', decodeHistory],
  ['event', decodeEvent],
  ['config', decodeConfig],
  ['spec', decodeSpec],
  ['controller', decodeController],
  ['draining', decodeDraining],
  ['creation', decodeCreation],
];

/** JSON text of any shape, objects that claim v=1 with arbitrary fields, and plain strings. */
const anyText = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 200 }),
  fc.jsonValue({ maxDepth: 4 }).map((value) => JSON.stringify(value)),
  fc.dictionary(fc.string({ maxLength: 20 }), fc.jsonValue({ maxDepth: 3 }), { maxKeys: 8 }).map((fields) => JSON.stringify({ ...fields, v: 1 })),
  // the keys a merge or a record might trip over
  fc.constantFrom('{"v":1,"__proto__":{"x":1}}', '{"v":1,"postgresql_parameters":{"__proto__":"x","constructor":1}}', '{"v":1,"constructor":{"prototype":{}}}'),
);

function isDecoded(result: unknown): boolean {
  const r = result as { ok?: unknown; reason?: unknown };
  return r.ok === true || (r.ok === false && typeof r.reason === 'string');
}

describe('decode never throws', () => {
  it.each(decoders)('%s, on arbitrary text', (_name, decodeFn) => {
    fc.assert(
      fc.property(anyText, (text) => {
        expect(isDecoded(decodeFn(text))).toBe(true);
      }),
      { numRuns },
    );
    expect(Object.getOwnPropertyNames(Object.prototype)).not.toContain('x');
  });

  it('nor does ignoredConfigParameters, nor buildClusterView over arbitrary keys and values', () => {
    const k = keys('geo');
    const key = fc.oneof(
      fc.constantFrom(k.config, k.leader, k.sync, k.status, k.switchover, k.history, k.initialize, k.spec),
      fc.string({ maxLength: 12 }).map((name) => k.member(name)),
      fc.string({ maxLength: 12 }).map((name) => k.draining(name)),
      fc.string({ maxLength: 12 }).map((name) => k.creation(name)),
      fc.string({ maxLength: 30 }).map((rest) => `${k.prefix}${rest}`),
    );
    const kv = fc.record({ key, value: anyText, modRevision: fc.nat().map(String), lease: fc.constantFrom('0', '7a', 'abc') });
    fc.assert(
      fc.property(fc.array(kv, { maxLength: 12 }), (kvs: RawKv[]) => {
        for (const entry of kvs) expect(Array.isArray(ignoredConfigParameters(entry.value))).toBe(true);
        const reasons: string[] = [];
        const view = buildClusterView('geo', '1', kvs, (_key, _rev, reason) => reasons.push(reason));
        expect(reasons.every((reason) => typeof reason === 'string')).toBe(true);
        // a member in the view is always bound to a lease and named as its key
        for (const m of view.members) expect(kvs.some((e) => e.key === k.member(m.name) && e.lease !== '0')).toBe(true);
      }),
      { numRuns },
    );
  });
});

// ---- valid values ------------------------------------------------------------

const name = fc.stringMatching(/^[a-z][a-z0-9_]{0,30}$/);
const lsn = fc.nat({ max: Number.MAX_SAFE_INTEGER });
const epochMs = fc.nat({ max: 4_102_444_800_000 });
const tagValue = fc.oneof(fc.string({ maxLength: 10 }), fc.integer(), fc.boolean());

const memberValue: fc.Arbitrary<MemberValue> = fc.record({
  v: fc.constant(1 as const),
  name,
  role: fc.constantFrom('primary', 'replica', 'unknown') as fc.Arbitrary<MemberValue['role']>,
  state: fc.string({ maxLength: 20 }),
  running: fc.boolean(),
  streaming: fc.boolean(),
  timeline: fc.option(fc.integer({ min: 1, max: 1_000_000 })),
  walLsn: fc.option(lsn),
  receivedLsn: fc.option(lsn),
  replayedLsn: fc.option(lsn),
  upstream: fc.option(name),
  zone: fc.string({ maxLength: 20 }),
  tags: fc.dictionary(fc.stringMatching(/^[a-z][a-z0-9_]{0,10}$/), tagValue, { maxKeys: 4 }),
  apiUrl: fc.string({ maxLength: 30 }),
  pgHost: fc.string({ maxLength: 30 }),
  pgPort: fc.integer({ min: 1, max: 65535 }),
  reason: fc.string({ maxLength: 60 }),
  systemId: fc.option(fc.string({ minLength: 1, maxLength: 20 })),
  agentPid: fc.option(fc.integer({ min: 1, max: 4_194_304 })),
  postmasterPid: fc.option(fc.integer({ min: 1, max: 4_194_304 })),
  dataDir: fc.string({ maxLength: 40 }),
  updatedAtMs: epochMs,
});

const roundTrips: Array<[string, fc.Arbitrary<object>, (text: string) => Decoded<unknown>]> = [
  ['initialize', fc.record({ v: fc.constant(1), by: name, systemId: fc.option(fc.string({ minLength: 1, maxLength: 20 })) }), decodeInitialize],
  ['leader', fc.record({ v: fc.constant(1), name }), decodeLeader],
  ['member', memberValue, decodeMember],
  ['status', fc.record({ v: fc.constant(1), leader: name, timeline: fc.integer({ min: 1, max: 1_000_000 }), walLsn: lsn, updatedAtMs: epochMs }), decodeStatus],
  ['sync', fc.record({ v: fc.constant(1), leader: name, members: fc.array(name, { maxLength: 5 }), quorum: fc.nat({ max: 16 }) }), decodeSync],
  ['switchover', fc.record({ v: fc.constant(1), from: fc.option(name), to: fc.option(name), failover: fc.boolean(), requestedAtMs: epochMs }), decodeSwitchover],
  [
    'history',
    fc.record({
      v: fc.constant(1),
      entries: fc.array(fc.record({ timeline: fc.integer({ min: 1, max: 1000 }), switchLsn: lsn, leader: name, atMs: epochMs, reason: fc.string({ maxLength: 40 }) }), { maxLength: 5 }),
    }),
    decodeHistory,
  ],
  ['event', fc.record({ v: fc.constant(1), atMs: epochMs, source: fc.string({ maxLength: 20 }), kind: fc.string({ maxLength: 20 }), message: fc.string({ maxLength: 80 }) }), decodeEvent],
  ['draining', fc.record({ v: fc.constant(1), name, sinceMs: epochMs, reason: fc.string({ maxLength: 40 }) }), decodeDraining],
  [
    'creation',
    fc.record({ v: fc.constant(1), name, zone: fc.string({ minLength: 1, maxLength: 20 }), instanceClass: fc.string({ minLength: 1, maxLength: 20 }), replaces: fc.option(name), sinceMs: epochMs, by: fc.string({ minLength: 1, maxLength: 20 }) }),
    decodeCreation,
  ],
];

describe('decode(encode(value)) is the value', () => {
  it.each(roundTrips)('%s', (_name, values, decodeFn) => {
    fc.assert(
      fc.property(values, (value) => {
        expect(decodeFn(encode(value as never))).toEqual({ ok: true, value });
      }),
      { numRuns },
    );
  });

  it('config, with parameters from the allow-list', () => {
    const parameters = fc.record(
      {
        work_mem: fc.integer({ min: 64, max: 2_000_000 }).map((kb) => `${kb}kB`),
        max_connections: fc.integer({ min: 10, max: 5000 }),
        jit: fc.boolean(),
        random_page_cost: fc.double({ min: 0, max: 100, noNaN: true }).filter((x) => !Object.is(x, -0)),
        statement_timeout: fc.integer({ min: 0, max: 3600 }).map((s) => `${s}s`),
        timezone: fc.constantFrom('UTC', 'Europe/Paris', 'America/New_York'),
      },
      { requiredKeys: [] },
    );
    const config: fc.Arbitrary<DynamicConfig> = fc
      .record({
        ttl: fc.integer({ min: 5, max: 300 }),
        loopWaitTenths: fc.integer({ min: 2, max: 600 }),
        maximum_lag_on_failover: fc.nat(),
        use_rewind: fc.boolean(),
        synchronous_mode: fc.constantFrom('off', 'on', 'strict') as fc.Arbitrary<DynamicConfig['synchronous_mode']>,
        synchronous_node_count: fc.integer({ min: 1, max: 16 }),
        member_slots_ttl: fc.integer({ min: 0, max: 7 * 24 * 3600 }),
        postgresql_parameters: parameters,
      })
      .filter((c) => (c.loopWaitTenths / 10) * 2 <= c.ttl)
      .map(({ loopWaitTenths, ...rest }) => ({ ...defaultDynamicConfig, ...rest, loop_wait: loopWaitTenths / 10 }));
    fc.assert(
      fc.property(config, (value) => {
        expect(decodeConfig(encodeConfig(value))).toEqual({ ok: true, value });
      }),
      { numRuns },
    );
  });
});
