import { describe, expect, it } from 'vitest';
import { defaultDynamicConfig } from '../../src/config/schema.js';
import {
  decodeConfig,
  decodeCreation,
  decodeEvent,
  decodeHistory,
  decodeInitialize,
  decodeLeader,
  decodeMember,
  decodeStatus,
  decodeSwitchover,
  decodeSync,
  encode,
  encodeConfig,
  encodeLeader,
  eventKeyName,
  ignoredConfigParameters,
  keys,
  rangeEndOf,
  type Decoded,
} from '../../src/dcs/codec.js';
import type { MemberValue } from '../../src/model/values.js';
import { buildClusterView, InvalidValueReporter, type RawKv } from '../../src/dcs/view.js';

const member: MemberValue = {
  v: 1,
  name: 'node1',
  role: 'replica',
  state: 'streaming',
  running: true,
  streaming: true,
  timeline: 3,
  walLsn: null,
  receivedLsn: 50331648,
  replayedLsn: 50331600,
  upstream: 'node2',
  zone: 'a',
  tags: { nofailover: false, weight: 2, rack: 'r1' },
  apiUrl: 'http://127.0.0.1:8008',
  pgHost: '127.0.0.1',
  pgPort: 5432,
  reason: 'following leader node2',
  systemId: '7301234567890123456',
  agentPid: 1234,
  postmasterPid: 1240,
  dataDir: '/var/lib/keel/node1',
  updatedAtMs: 1_700_000_000_000,
};

function reasonOf<T>(decoded: Decoded<T>): string {
  expect(decoded.ok).toBe(false);
  return decoded.ok ? '' : decoded.reason;
}

describe('dcs codec round trips', () => {
  const cases: Array<[string, object, (text: string) => Decoded<unknown>]> = [
    ['initialize', { v: 1, by: 'node1', systemId: null }, decodeInitialize],
    ['leader', { v: 1, name: 'node1' }, decodeLeader],
    ['member', member, decodeMember],
    ['status', { v: 1, leader: 'node1', timeline: 2, walLsn: 123456, updatedAtMs: 5 }, decodeStatus],
    ['sync', { v: 1, leader: 'node1', members: ['node2'], quorum: 1 }, decodeSync],
    ['switchover', { v: 1, from: 'node1', to: null, failover: false, requestedAtMs: 9 }, decodeSwitchover],
    [
      'history',
      { v: 1, entries: [{ timeline: 2, switchLsn: 100, leader: 'node2', atMs: 7, reason: 'failover' }] },
      decodeHistory,
    ],
    ['event', { v: 1, atMs: 1, source: 'node1', kind: 'promote', message: 'promoted' }, decodeEvent],
    ['creation', { v: 1, name: 'node4', zone: 'a', instanceClass: 'local-medium', replaces: 'node1', sinceMs: 7, by: 'host-42' }, decodeCreation],
    ['creation of an added node', { v: 1, name: 'node5', zone: 'b', instanceClass: 'm', replaces: null, sinceMs: 8, by: 'host-42' }, decodeCreation],
  ];
  it.each(cases)('%s decodes what encode wrote', (_name, value, decodeFn) => {
    expect(decodeFn(encode(value as never))).toEqual({ ok: true, value });
  });

  it('config drops v and fills defaults', () => {
    const decoded = decodeConfig(JSON.stringify({ v: 1, ttl: 20 }));
    expect(decoded).toEqual({ ok: true, value: { ...defaultDynamicConfig, ttl: 20 } });
    expect(decodeConfig(encodeConfig(defaultDynamicConfig))).toEqual({ ok: true, value: defaultDynamicConfig });
  });

  it('encodeConfig refuses settings readers would reject', () => {
    expect(() => encodeConfig({ ...defaultDynamicConfig, ttl: 2 })).toThrow(/KEEL|ttl/);
  });

  it('leader bytes are canonical', () => {
    expect(encodeLeader('node1')).toBe('{"v":1,"name":"node1"}');
    expect(encode({ name: 'node1', v: 1 } as never)).not.toBe(encodeLeader('node1'));
  });

  it('tolerates extra fields written by a newer agent', () => {
    expect(decodeLeader('{"v":1,"name":"n","since":3}')).toEqual({ ok: true, value: { v: 1, name: 'n' } });
  });
});

describe('dcs codec rejections', () => {
  it('malformed JSON', () => {
    expect(reasonOf(decodeLeader('not json'))).toMatch(/not JSON/);
    expect(reasonOf(decodeMember(''))).toMatch(/not JSON/);
  });
  it('non-object JSON', () => {
    expect(reasonOf(decodeLeader('"node1"'))).toMatch(/not a JSON object/);
    expect(reasonOf(decodeLeader('[1]'))).toMatch(/not a JSON object/);
    expect(reasonOf(decodeLeader('null'))).toMatch(/not a JSON object/);
  });
  it('wrong or missing version', () => {
    expect(reasonOf(decodeLeader('{"v":99,"name":"n"}'))).toMatch(/v=99/);
    expect(reasonOf(decodeLeader('{"name":"n"}'))).toMatch(/v=undefined/);
    expect(reasonOf(decodeConfig('{"v":"1"}'))).toMatch(/v="1"/);
  });
  it('wrong shapes name the field', () => {
    expect(reasonOf(decodeLeader('{"v":1}'))).toMatch(/name/);
    expect(reasonOf(decodeMember(JSON.stringify({ ...member, role: 'boss' })))).toMatch(/role/);
    expect(reasonOf(decodeMember(JSON.stringify({ ...member, walLsn: -1 })))).toMatch(/walLsn/);
    expect(reasonOf(decodeMember(JSON.stringify({ ...member, pgPort: '5432' })))).toMatch(/pgPort/);
    // names follow node.yml's rule: they become slot names and words in synchronous_standby_names
    expect(reasonOf(decodeMember(JSON.stringify({ ...member, name: 'x") ,("y' })))).toMatch(/name/);
    expect(reasonOf(decodeSync('{"v":1,"leader":"node1","members":["Node2"],"quorum":1}'))).toMatch(/members/);
    expect(reasonOf(decodeSync('{"v":1,"leader":"a","members":"b"}'))).toMatch(/members/);
    expect(reasonOf(decodeHistory('{"v":1,"entries":[{"timeline":0}]}'))).toMatch(/entries/);
    expect(reasonOf(decodeInitialize('{"v":1,"by":"a"}'))).toMatch(/systemId/);
    const creation = { v: 1, name: 'node4', zone: 'a', instanceClass: 'm', replaces: null, sinceMs: 1, by: 'c' };
    expect(reasonOf(decodeCreation(JSON.stringify({ ...creation, replaces: undefined })))).toMatch(/replaces/);
    expect(reasonOf(decodeCreation(JSON.stringify({ ...creation, by: '' })))).toMatch(/by/);
    expect(reasonOf(decodeCreation(JSON.stringify({ ...creation, sinceMs: -1 })))).toMatch(/sinceMs/);
    expect(reasonOf(decodeCreation(JSON.stringify({ ...creation, v: 2 })))).toMatch(/v=2/);
  });
  it('config rejects unknown settings and broken invariants', () => {
    expect(reasonOf(decodeConfig('{"v":1,"ttll":10}'))).toMatch(/ttll/);
    expect(reasonOf(decodeConfig('{"v":1,"ttl":10,"loop_wait":8}'))).toMatch(/loop_wait/);
  });
});

describe('refused postgresql parameters in a stored config', () => {
  // as an older Keel, or someone with etcdctl, could have written it
  const stored = JSON.stringify({ v: 1, ttl: 20, postgresql_parameters: { work_mem: '64MB', archive_command: 'curl x | sh', shared_buffers: '1kB', jit: { nested: 1 } } });

  it('are left out: the rest of the config, other parameters included, still counts', () => {
    expect(decodeConfig(stored)).toEqual({ ok: true, value: { ...defaultDynamicConfig, ttl: 20, postgresql_parameters: { work_mem: '64MB' } } });
  });

  it('are named with why, and nothing is named for a clean or undecodable value', () => {
    const ignored = ignoredConfigParameters(stored);
    expect(ignored).toHaveLength(3);
    expect(ignored.join('\n')).toMatch(/"jit": not a string, number or boolean/);
    expect(ignored.join('\n')).toMatch(/archive_command cannot be set cluster-wide: it runs a shell command/);
    expect(ignored.join('\n')).toMatch(/shared_buffers = "1kB": out of range/);
    expect(ignoredConfigParameters(encodeConfig(defaultDynamicConfig))).toEqual([]);
    expect(ignoredConfigParameters('not json')).toEqual([]);
  });

  it('are never written: encodeConfig refuses them', () => {
    expect(() => encodeConfig({ ...defaultDynamicConfig, postgresql_parameters: { restore_command: 'x' } })).toThrow(/restore_command/);
  });
});

describe('buildClusterView', () => {
  const k = keys('geo');
  const kv = (key: string, value: string, lease = '0', modRevision = '5'): RawKv => ({ key, value, lease, modRevision });

  it('drops a member key bound to no lease, with a reason; a leased one counts', () => {
    const reports: string[] = [];
    const view = buildClusterView('geo', '9', [
      kv(k.member('node1'), encode(member), '7a'),
      kv(k.member('node2'), encode({ ...member, name: 'node2' }), '0'),
    ], (key, _rev, reason) => reports.push(`${key}: ${reason}`));
    expect(view.members.map((m) => m.name)).toEqual(['node1']);
    expect(reports).toEqual(['/keel/geo/members/node2: a member key bound to no lease (agents bind theirs to their lease)']);
  });

  it('keeps a config with refused parameters, without them, and says so once', () => {
    const warnings: Array<[Record<string, unknown>, string]> = [];
    const reporter = new InvalidValueReporter((fields, message) => warnings.push([fields, message]));
    const value = JSON.stringify({ v: 1, postgresql_parameters: { work_mem: '64MB', shared_preload_libraries: 'evil' } });
    for (let i = 0; i < 3; i++) {
      const view = buildClusterView('geo', '9', [kv(k.config, value)], reporter.report);
      expect(view.config?.value.postgresql_parameters).toEqual({ work_mem: '64MB' });
    }
    expect(warnings).toHaveLength(1);
    expect(warnings[0]![1]).toBe('ignoring part of a value in etcd (the rest applies)');
    expect(String(warnings[0]![0].reason)).toMatch(/shared_preload_libraries cannot be set cluster-wide: it loads code/);
  });
});

describe('dcs key names', () => {
  const k = keys('geo');
  it('lays out the prefix', () => {
    expect(k.prefix).toBe('/keel/geo/');
    expect(k.leader).toBe('/keel/geo/leader');
    expect(k.member('node1')).toBe('/keel/geo/members/node1');
    expect(k.member('node1').startsWith(k.membersPrefix)).toBe(true);
    expect(k.eventsPrefix).toBe('/keel/geo/events/');
    expect(k.creation('node4')).toBe('/keel/geo/creations/node4');
    expect(k.creation('node4').startsWith(k.creationsPrefix)).toBe(true);
  });
  it('range ends bound exactly the prefix', () => {
    expect(rangeEndOf('/keel/geo/')).toBe('/keel/geo0');
    expect(k.eventsEnd).toBe('/keel/geo/events0');
    const inEvents = eventKeyName(k.eventsPrefix, 1, 'x', '0000');
    expect(inEvents > k.eventsPrefix && inEvents < k.eventsEnd).toBe(true);
    // every other key sorts outside [eventsPrefix, eventsEnd)
    for (const key of [k.leader, k.member('zz'), k.status, k.switchover, k.config, k.history, k.initialize, k.sync, k.creation('node4')]) {
      expect(key >= k.prefix && key < k.prefixEnd).toBe(true);
      expect(key >= k.eventsPrefix && key < k.eventsEnd).toBe(false);
    }
    expect(keys('geo2').leader < k.prefixEnd && keys('geo2').leader >= k.prefix).toBe(false);
  });
  it('event keys sort by time and stay one level deep', () => {
    const a = eventKeyName(k.eventsPrefix, 999, 'node/1', 'ab12');
    const b = eventKeyName(k.eventsPrefix, 1_700_000_000_000, 'cli', '0000');
    expect(a).toBe('/keel/geo/events/0000000000999-node_1-ab12');
    expect(a < b).toBe(true);
  });
});
