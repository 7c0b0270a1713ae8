import { describe, expect, it } from 'vitest';
import { cancelLua, haproxyConfig, haproxyThreads } from '../../src/router/engines/haproxy-config.js';
import { checkAnswer, emptyTable, isIpAddress, markDirty, parseServersState, planSlots, splitAnswers, type Wanted } from '../../src/router/engines/haproxy-runtime.js';
import { errorResponse, firstMessageComplete, firstMessageKind } from '../../src/router/engines/pg-wire.js';
import type { Backend } from '../../src/router/route.js';

const node = (n: number, port = 6410 + n): Backend => ({ name: `node${n}`, host: '127.0.0.1', port });
const ready = (b: Backend): Wanted => ({ backend: b, state: 'ready' });

describe('planSlots', () => {
  it('puts a first leader into slot 0: address, then ready', () => {
    const plan = planSlots(emptyTable('be_rw', 4), [ready(node(1))]);
    expect(plan.commands).toEqual(['set server be_rw/s0 addr 127.0.0.1 port 6411', 'set server be_rw/s0 state ready']);
    expect(plan.next.slots[0]).toMatchObject({ member: 'node1', state: 'ready', dirty: false });
  });

  it('the same routes again need no command', () => {
    const first = planSlots(emptyTable('be_rw', 4), [ready(node(1))]);
    expect(planSlots(first.next, [ready(node(1))]).commands).toEqual([]);
  });

  it('a leader change takes the old one out and cuts its sessions before the new one is ready', () => {
    const first = planSlots(emptyTable('be_rw', 4), [ready(node(1))]);
    const plan = planSlots(first.next, [ready(node(2))]);
    expect(plan.commands).toEqual([
      'set server be_rw/s0 state maint',
      'shutdown sessions server be_rw/s0',
      'set server be_rw/s1 addr 127.0.0.1 port 6412',
      'set server be_rw/s1 state ready',
    ]);
    expect(plan.next.slots.map((s) => s.member)).toEqual([null, 'node2', null, null]);
  });

  it('a pending switchover drains the leader: no new connections, old ones stay', () => {
    const first = planSlots(emptyTable('be_rw', 4), [ready(node(1))]);
    expect(planSlots(first.next, [{ backend: node(1), state: 'drain' }]).commands).toEqual(['set server be_rw/s0 state drain']);
  });

  it('no leader: the slot goes to maintenance and loses its sessions', () => {
    const first = planSlots(emptyTable('be_rw', 2), [ready(node(1))]);
    expect(planSlots(first.next, []).commands).toEqual(['set server be_rw/s0 state maint', 'shutdown sessions server be_rw/s0']);
  });

  it('a member that moved to another port leaves and arrives', () => {
    const first = planSlots(emptyTable('be_ro', 2), [ready(node(2))]);
    const plan = planSlots(first.next, [ready(node(2, 7000))]);
    expect(plan.commands).toEqual([
      'set server be_ro/s0 state maint',
      'shutdown sessions server be_ro/s0',
      'set server be_ro/s1 addr 127.0.0.1 port 7000',
      'set server be_ro/s1 state ready',
    ]);
  });

  it('ro keeps the replicas that stay untouched and reports members beyond the slots', () => {
    const first = planSlots(emptyTable('be_ro', 2), [ready(node(2)), ready(node(3))]);
    const plan = planSlots(first.next, [ready(node(3)), ready(node(4)), ready(node(5))]);
    expect(plan.commands).toEqual([
      'set server be_ro/s0 state maint',
      'shutdown sessions server be_ro/s0',
      'set server be_ro/s0 addr 127.0.0.1 port 6414',
      'set server be_ro/s0 state ready',
    ]);
    expect(plan.unplaced).toEqual(['node5 (no free slot)']);
  });

  it('a member whose host is not an IP address is left out: HAProxy wants addresses, and etcd text must not reach its command line', () => {
    const plan = planSlots(emptyTable('be_rw', 2), [ready({ name: 'evil', host: '127.0.0.1 port 1; shutdown sessions server be_ro/s0', port: 5432 })]);
    expect(plan.commands).toEqual([]);
    expect(plan.unplaced).toEqual(['evil (host "127.0.0.1 port 1; shutdown sessions server be_ro/s0" is not an IP address)']);
    expect(planSlots(emptyTable('be_rw', 2), [ready({ name: 'db', host: 'db.example.com', port: 5432 })]).unplaced).toHaveLength(1);
  });

  it('after a failed command every slot is set again in full', () => {
    const first = planSlots(emptyTable('be_rw', 2), [ready(node(1))]);
    expect(planSlots(markDirty(first.next), [ready(node(1))]).commands).toEqual([
      'set server be_rw/s1 state maint',
      'shutdown sessions server be_rw/s1',
      'set server be_rw/s0 addr 127.0.0.1 port 6411',
      'set server be_rw/s0 state ready',
    ]);
  });
});

describe('checkAnswer', () => {
  it.each([
    ['set server be_rw/s0 state ready', '\n', true],
    ['shutdown sessions server be_rw/s0', '\n', true],
    ['set server be_rw/s0 addr 127.0.0.1 port 5432', "no need to change the addr, port changed from '1' to '5432' by 'stats socket command'\n\n", true],
    ['set server be_rw/s0 addr 127.0.0.2 port 5432', "IP changed from '127.0.0.1' to '127.0.0.2', no need to change the port by 'stats socket command'\n\n", true],
    ['set server be_rw/s9 state ready', 'No such server.\n\n', false],
    ['set server nope/s0 state maint', 'No such backend.\n\n', false],
    ['set server be_rw/s0 addr 127.0.0.1 port 5432', 'Permission denied\n\n', false],
    ['bogus', 'Unknown command, but maybe one of the following ones is a better match:\n  show fd\n', false],
    ['show info', 'Name: HAProxy\nPid: 1\n', true],
  ])('%s -> %j', (command, answer, ok) => {
    expect(checkAnswer(command, answer).ok).toBe(ok);
  });

  it('an error keeps the first line of HAProxy\'s message', () => {
    expect(checkAnswer('set server be_rw/s9 state ready', 'No such server.\n\n')).toEqual({ ok: false, error: 'No such server.' });
  });
});

describe('isIpAddress', () => {
  it.each([
    ['127.0.0.1', true],
    ['10.0.12.255', true],
    ['::1', true],
    ['fd00::5:1', true],
    ['256.1.1.1', false],
    ['db.example.com', false],
    ['127.0.0.1;', false],
    ['', false],
  ])('%s -> %s', (host, ok) => {
    expect(isIpAddress(host)).toBe(ok);
  });
});

describe('splitAnswers', () => {
  it('one answer per command of a batched line, empty ones included', () => {
    const output = "\n\nno need to change the addr, port changed from '1' to '5432' by 'stats socket command'\n\n\nNo such server.\n\n";
    expect(splitAnswers(output, 5)).toEqual(['', '', "no need to change the addr, port changed from '1' to '5432' by 'stats socket command'", '', 'No such server.']);
  });

  it('a short answer (HAProxy stopped half-way) is an error, not a guess', () => {
    expect(() => splitAnswers('\n', 3)).toThrow(/expected 3 answers from HAProxy, got 1/);
  });
});

describe('parseServersState', () => {
  // as HAProxy 2.6 prints it: initial `disabled`, ready, drain, forced maintenance
  const answer = [
    '1',
    '# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port',
    '3 be_rw 1 s0 127.0.0.1 0 5 1 1 1 1 0 0 8 0 0 0 - 1 - 0 0 - - 0',
    '3 be_rw 2 s1 127.0.0.1 2 4 1 1 0 1 0 0 8 0 0 0 - 5432 - 0 0 - - 0',
    '3 be_rw 3 s2 127.0.0.1 2 12 1 1 0 1 0 0 8 0 0 0 - 5433 - 0 0 - - 0',
    '3 be_rw 4 s3 127.0.0.1 0 1 1 1 0 1 0 0 8 0 0 0 - 5434 - 0 0 - - 0',
    '',
    '',
  ].join('\n');

  it('reads each slot with its address and state', () => {
    expect(parseServersState(answer)).toEqual([
      { backend: 'be_rw', server: 's0', address: '127.0.0.1', port: 1, state: 'maint' },
      { backend: 'be_rw', server: 's1', address: '127.0.0.1', port: 5432, state: 'ready' },
      { backend: 'be_rw', server: 's2', address: '127.0.0.1', port: 5433, state: 'drain' },
      { backend: 'be_rw', server: 's3', address: '127.0.0.1', port: 5434, state: 'maint' },
    ]);
  });

  it('refuses an answer that is not a server state dump', () => {
    expect(() => parseServersState('No such backend.\n')).toThrow(/not a "show servers state" answer/);
  });
});

describe('haproxy configuration', () => {
  const input = {
    rw: { host: '127.0.0.1', port: 6402 },
    ro: { host: '127.0.0.1', port: 6403 },
    socketPath: '/run/k/admin.sock',
    luaPath: '/run/k/hold.lua',
    slotsPerBackend: 3,
    holders: { rw: '/run/k/hold-rw.sock', ro: '/run/k/hold-ro.sock' },
    connectTimeoutMs: 3000,
    firstBytesTimeoutMs: 10_000,
    maxConnections: 1000,
  };
  const config = haproxyConfig(input);

  it('runs half as many HAProxy threads as there are CPUs, at least one', () => {
    expect([1, 2, 3, 4, 16].map(haproxyThreads)).toEqual([1, 1, 1, 2, 8]);
    expect(config).not.toContain('nbthread');
    expect(haproxyConfig({ ...input, threads: 2 })).toMatch(/^global\n(  .*\n)*  nbthread 2\n/m);
  });

  it("declares slots in maintenance, an admin socket and the holder as each backend's backup server, last", () => {
    expect(config).toContain('stats socket /run/k/admin.sock mode 600 level admin');
    expect(config).toContain('  server s2 127.0.0.1:1 disabled');
    expect(config).not.toContain('server s3 ');
    expect(config).toMatch(/backend be_rw\n {2}balance first\n( {2}server s\d 127\.0\.0\.1:1 disabled\n){3} {2}server hold unix@\/run\/k\/hold-rw\.sock backup\n/);
    expect(config).toMatch(/backend be_ro\n {2}balance leastconn\n( {2}server s\d 127\.0\.0\.1:1 disabled\n){3} {2}server hold unix@\/run\/k\/hold-ro\.sock backup$/m);
    expect(config).not.toContain('keel_hold');
    expect(config).toContain('timeout connect 3000ms');
  });

  it('sends cancel requests on ro to every replica, decided from the first 8 bytes', () => {
    const ro = config.slice(config.indexOf('frontend fe_ro'), config.indexOf('backend be_ro'));
    const rw = config.slice(config.indexOf('frontend fe_rw'), config.indexOf('backend be_rw'));
    expect(ro).toContain('tcp-request content lua.keel_cancel be_ro if { req.payload(4,4),hex -m str 04D2162E }');
    expect(rw).not.toContain('keel_cancel');
    expect(Number.parseInt('04D2162E', 16)).toBe(80877102);
  });

  it('rejects a connection past the cap as it is accepted, with the frontend maxconn above the cap', () => {
    for (const kind of ['rw', 'ro']) {
      const frontend = config.slice(config.indexOf(`frontend fe_${kind}`), config.indexOf(`backend be_${kind}`));
      expect(frontend).toContain('tcp-request connection reject if { fe_conn gt 1000 }');
      expect(frontend).toContain('maxconn 1100');
    }
  });

  it('waits for the whole first message (at most the first-bytes timeout) before any other rule looks at the bytes', () => {
    for (const kind of ['rw', 'ro']) {
      const frontend = config.slice(config.indexOf(`frontend fe_${kind}`), config.indexOf(`backend be_${kind}`));
      expect(frontend).toContain('tcp-request inspect-delay 10000ms');
      const first = frontend.indexOf('tcp-request content reject unless { req.payload_lv(0,4,-4) -m found }');
      expect(first).toBeGreaterThan(0);
      if (kind === 'ro') expect(first).toBeLessThan(frontend.indexOf('lua.keel_cancel'));
    }
  });

  it('the cancel action leaves the holder out of the servers it sends to', () => {
    const lua = cancelLua();
    expect(lua).toContain('pairs(core.backends[backend].servers)');
    expect(lua).toContain('name ~= "hold"');
  });
});

describe('pg-wire', () => {
  const startup = Buffer.from('0000002500030000757365720070000000', 'hex');
  it.each([
    ['startup', Buffer.concat([Buffer.from([0, 0, 0, 40, 0, 3, 0, 0]), Buffer.alloc(32)])],
    ['ssl', Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])],
    ['gssenc', Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30])],
    ['cancel', Buffer.concat([Buffer.from([0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e]), Buffer.alloc(8)])],
    ['incomplete', Buffer.from([0, 0, 0])],
    ['other', Buffer.from('GET / HTTP/1.1\r\n\r\n')],
    ['other', Buffer.from([0xff, 0xff, 0xff, 0xff, 0, 3, 0, 0])],
  ])('%s', (kind, bytes) => {
    expect(firstMessageKind(bytes)).toBe(kind);
  });

  it('a startup packet header is recognised before its body arrives', () => {
    expect(firstMessageKind(startup)).toBe('startup');
  });

  it.each([
    ['nothing', Buffer.alloc(0), false],
    ['3 bytes', Buffer.from([0, 0, 0]), false],
    ['an SSLRequest', Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]), true],
    ['a GSSENCRequest', Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30]), true],
    ['half a CancelRequest', Buffer.from([0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e, 0, 0]), false],
    ['a CancelRequest', Buffer.concat([Buffer.from([0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e]), Buffer.alloc(8)]), true],
    ['a startup header of 40 bytes', Buffer.from([0, 0, 0, 40, 0, 3, 0, 0]), false],
    ['a startup of 40 bytes', Buffer.concat([Buffer.from([0, 0, 0, 40, 0, 3, 0, 0]), Buffer.alloc(32)]), true],
    ['a startup and more', Buffer.concat([Buffer.from([0, 0, 0, 40, 0, 3, 0, 0]), Buffer.alloc(60)]), true],
    ['another protocol', Buffer.from('GET / HTTP/1.1\r\n'), true],
  ])('firstMessageComplete: %s -> %s', (_what, bytes, complete) => {
    expect(firstMessageComplete(bytes)).toBe(complete);
  });

  it('ErrorResponse: type E, length without the type byte, NUL-terminated fields', () => {
    const msg = errorResponse('57P03', 'no leader');
    expect(msg.subarray(0, 1).toString()).toBe('E');
    expect(msg.readUInt32BE(1)).toBe(msg.length - 1);
    expect(msg.subarray(5).toString()).toBe('SFATAL\0VFATAL\0C57P03\0Mno leader\0\0');
  });
});
