/**
 * `keel router`, both engines, against real PostgreSQL. Two etcds: the real
 * cluster's (a TestCluster, whose leader is fenced at the end), and a
 * scripted one where the test writes the leader and member keys itself and
 * points them at the real nodes, so that "no leader", a leader change, a
 * pending switchover, an unreachable backend and a stopped etcd happen
 * exactly when the test says, without waiting for agents.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type pg from 'pg';
import { defaultDynamicConfig } from '../../src/config/schema.js';
import { startEtcd, stopEtcd } from '../../src/dcs/etcd-server.js';
import { EtcdDcs } from '../../src/dcs/etcd.js';
import type { MemberValue } from '../../src/model/values.js';
import { probePostgres } from '../../src/postgres/probe.js';
import { sleep } from '../../src/util/clock.js';
import { silentLogger } from '../../src/util/log.js';
import { TestCluster } from '../support/cluster.js';
import type { Login } from '../../src/workload/connect.js';
import { closedWithin, landing, pgClient, queryOnce, rawConnect, runKeel, startRouter, waitForLog, type RouterProcess } from './router-helpers.js';

const engines = ['builtin', 'haproxy'] as const;
type Engine = (typeof engines)[number];
const portBase = 17100;
const realPorts: Record<Engine, [number, number]> = { builtin: [17190, 17191], haproxy: [17192, 17193] };
const scriptEtcdPort = 17200;
const scriptPorts: Record<Engine, [number, number]> = { builtin: [17202, 17203], haproxy: [17204, 17205] };
/** a test server that accepts and stays silent: a backend for idle connections */
const sinkPort = 17208;
/** nothing listens here: an unreachable backend */
const ghostPort = 17209;
/** a listener whose accept queue is full, so connecting to it hangs: a backend lost in the network */
const blackholePort = 17207;

/** Python (Debian has it) listens without accepting and fills its own backlog; resolves once SYNs go unanswered. */
async function startBlackhole(port: number): Promise<ChildProcess> {
  const code = [
    'import socket, time',
    `s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', ${port})); s.listen(0)`,
    'fill = [socket.socket() for _ in range(3)]',
    '[c.setblocking(False) for c in fill]',
    `[c.connect_ex(('127.0.0.1', ${port})) for c in fill]`,
    'time.sleep(0.5); print("ready", flush=True); time.sleep(60)',
  ].join('\n');
  const child = spawn('python3', ['-c', code], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the black hole did not start within 5 s')), 5000);
    child.stdout!.once('data', () => {
      clearTimeout(timer);
      resolve();
    });
  });
  return child;
}

let dir: string;
let tc: TestCluster;
let login: Login;
const real = {} as Record<Engine, RouterProcess>;
const scripted = {} as Record<Engine, RouterProcess>;
let scriptEtcdPid: number | null = null;
let script: EtcdDcs;
let lease: string;
let sink: net.Server;
const sinkSockets = new Set<net.Socket>();
let leader: { name: string; port: number };
let replicas: { name: string; port: number }[];

/** A member key for the scripted etcd. Its timestamp lies ahead so it never goes stale during the test. */
function scriptedMember(name: string, role: 'primary' | 'replica', port: number): MemberValue {
  const primary = role === 'primary';
  return {
    v: 1, name, role, state: role, running: true, streaming: !primary, timeline: 1,
    walLsn: primary ? 1000 : null, receivedLsn: primary ? null : 1000, replayedLsn: primary ? null : 1000,
    upstream: null, zone: 'a', tags: {}, apiUrl: 'http://127.0.0.1:1', pgHost: '127.0.0.1', pgPort: port,
    reason: 'scripted by the test', systemId: null, agentPid: null, postmasterPid: null, dataDir: '/nonexistent',
    updatedAtMs: Date.now() + 3_600_000,
  };
}

/** Makes the scripted etcd say exactly this, then waits until both scripted routers applied a matching route. */
async function setScript(state: { leader: string | null; members: MemberValue[] }, applied: RegExp): Promise<void> {
  const marks = engines.map((e) => scripted[e].log().length);
  const view = await script.readCluster();
  const current = view.leader?.value.name ?? null;
  if (current !== null && current !== state.leader) await script.releaseLeader(current);
  for (const m of view.members) if (!state.members.some((s) => s.name === m.name)) await script.deleteMember(m.name);
  for (const m of state.members) await script.putMember(m, lease);
  if (state.leader !== null && current !== state.leader) expect(await script.acquireLeader(state.leader, lease)).toBe(true);
  await Promise.all(engines.map((e, i) => waitForLog(scripted[e], applied, 10_000, marks[i])));
}

const baseMembers = (): MemberValue[] => [
  scriptedMember(leader.name, 'primary', leader.port),
  ...replicas.map((r) => scriptedMember(r.name, 'replica', r.port)),
];
const baseState = () => setScript({ leader: leader.name, members: baseMembers() }, new RegExp(`"rw":"${leader.name}","holdRw":false`));

beforeAll(async () => {
  dir = mkdtempSync('/tmp/keel-router-test-');
  tc = await TestCluster.start({ portBase });
  login = tc.login;
  const view = await tc.view();
  const leaderName = view.leader!.value.name;
  leader = { name: leaderName, port: tc.pgPort(leaderName) };
  replicas = view.members.filter((m) => m.name !== leaderName).map((m) => ({ name: m.name, port: m.pgPort }));
  await tc.query(leader.port, 'CREATE TABLE router_rows (id int)');

  const etcd = await startEtcd({ name: 'script', dataDir: `${dir}/etcd`, clientPort: scriptEtcdPort, peerPort: scriptEtcdPort + 1, logFile: `${dir}/etcd.log` });
  scriptEtcdPid = etcd.pid;
  script = new EtcdDcs({ endpoints: [etcd.endpoint], cluster: 'script', requestTimeoutMs: 2000, logger: silentLogger() });
  // a short ttl keeps the fail-closed test short
  await script.putConfig({ ...defaultDynamicConfig, ttl: 5, loop_wait: 1 }, null);
  lease = await script.grantLease(3600);

  sink = net.createServer((socket) => {
    sinkSockets.add(socket);
    socket.on('error', () => undefined);
    socket.once('close', () => sinkSockets.delete(socket));
  });
  await new Promise<void>((resolve) => sink.listen({ host: '127.0.0.1', port: sinkPort, backlog: 2048 }, resolve));

  await Promise.all(
    engines.flatMap((engine) => [
      startRouter({ engine, ...tc.etcdAccess('router'), cluster: 'test', rwPort: realPorts[engine][0], roPort: realPorts[engine][1], logFile: `${dir}/real-${engine}.log` }).then((r) => (real[engine] = r)),
      startRouter({
        engine, etcd: etcd.endpoint, cluster: 'script', rwPort: scriptPorts[engine][0], roPort: scriptPorts[engine][1],
        // above the 1000 idle connections of the load test
        logFile: `${dir}/scripted-${engine}.log`, extra: ['--wait-timeout', '3', '--max-connections', '1500'],
      }).then((r) => (scripted[engine] = r)),
    ]),
  );
  await baseState();
}, 180_000);

afterAll(async () => {
  for (const r of [...Object.values(real), ...Object.values(scripted)]) await r.stop();
  for (const socket of sinkSockets) socket.destroy();
  await new Promise((resolve) => (sink ? sink.close(resolve) : resolve(undefined)));
  await script?.close().catch(() => undefined);
  if (scriptEtcdPid !== null) {
    process.kill(scriptEtcdPid, 'SIGCONT');
    await stopEtcd(scriptEtcdPid, 10_000);
  }
  await tc?.stop();
  // KEEL_KEEP_TEST_DIR=1 keeps the routers' and etcd's logs for a post-mortem
  if (dir && process.env.KEEL_KEEP_TEST_DIR === undefined) await rm(dir, { recursive: true, force: true });
}, 120_000);

describe('keel router command line', () => {
  it('bad flags are usage errors (exit 2)', () => {
    const bad = runKeel(['router', '--etcd', 'not-a-url', '--cluster', 'x', '--rw', '127.0.0.1:17198', '--ro', '127.0.0.1:17199']);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/KEEL_USAGE: --etcd not-a-url is not a URL/);
    const engine = runKeel(['router', '--etcd', 'http://127.0.0.1:1', '--cluster', 'x', '--rw', '127.0.0.1:17198', '--ro', '127.0.0.1:17199', '--engine', 'nginx']);
    expect(engine.status).toBe(2);
    expect(engine.stderr).toMatch(/KEEL_USAGE.*nginx/);
    const address = runKeel(['router', '--etcd', 'http://127.0.0.1:1', '--cluster', 'x', '--rw', '17198', '--ro', '127.0.0.1:17199']);
    expect(address.stderr).toMatch(/KEEL_USAGE: --rw "17198" is not host:port/);
  });

  it.each(engines)('%s: a port in use is KEEL_PORT_IN_USE (exit 2)', (engine) => {
    const taken = runKeel(['router', '--etcd', 'http://127.0.0.1:1', '--cluster', 'x', '--engine', engine, '--rw', `127.0.0.1:${realPorts.builtin[0]}`, '--ro', '127.0.0.1:17199']);
    expect(taken.status).toBe(2);
    expect(taken.stderr).toMatch(/KEEL_PORT_IN_USE: the rw address 127.0.0.1:17190 is already in use/);
  });

  it('a missing HAProxy is KEEL_BINARY_MISSING (exit 2)', () => {
    const missing = runKeel(['router', '--etcd', 'http://127.0.0.1:1', '--cluster', 'x', '--engine', 'haproxy', '--haproxy', '/nonexistent/haproxy', '--rw', '127.0.0.1:17198', '--ro', '127.0.0.1:17199']);
    expect(missing.status).toBe(2);
    expect(missing.stderr).toMatch(/KEEL_BINARY_MISSING: HAProxy is not installed at \/nonexistent\/haproxy/);
  });
});

describe.each(engines)('%s engine, real cluster', (engine) => {
  it('rw reaches the leader, ro a replica', async () => {
    expect(await landing(real[engine].rwPort, login)).toEqual({ port: leader.port, replica: false });
    const ro = await landing(real[engine].roPort, login);
    expect(ro.replica).toBe(true);
    expect(replicas.map((r) => r.port)).toContain(ro.port);
  });

  it('an INSERT through ro fails with PostgreSQL\'s read-only error (25006)', async () => {
    // the table must have reached the replica, or the error would be "no such table"
    for (const r of replicas) await tc.untilWritable(r.port, 'SELECT 1 FROM router_rows', 10_000);
    await expect(queryOnce(real[engine].roPort, login, 'INSERT INTO router_rows VALUES (1)')).rejects.toMatchObject({ code: '25006' });
    await queryOnce(real[engine].rwPort, login, 'INSERT INTO router_rows VALUES (1)');
  });
});

describe.each(engines)('%s engine, cancel requests', (engine) => {
  it('a cancel request through ro reaches the replica that runs the query', async () => {
    const clients = await Promise.all(
      [0, 1, 2, 3].map(async () => {
        const client = pgClient(real[engine].roPort, login);
        await client.connect();
        return client;
      }),
    );
    try {
      const ports = await Promise.all(clients.map(async (c) => (await c.query<{ port: number }>('SELECT inet_server_port() AS port')).rows[0]!.port));
      // least connections spreads the sessions over both replicas
      expect(new Set(ports).size).toBe(replicas.length);
      const outcomes = clients.map((c) =>
        c.query('SELECT pg_sleep(60)').then(
          () => 'finished',
          (err: { code?: string }) => err.code ?? 'no code',
        ),
      );
      await sleep(300);
      // grouped by replica: a choice that alternates (ties go round robin) sends some cancels to the wrong one
      const byReplica = clients.map((client, i) => ({ client, port: ports[i]! })).sort((a, b) => a.port - b.port).map((x) => x.client);
      for (const client of byReplica) {
        const { processID, secretKey } = client as unknown as { processID: number; secretKey: number };
        const request = Buffer.alloc(16);
        request.writeUInt32BE(16, 0);
        request.writeUInt32BE(80877102, 4);
        request.writeUInt32BE(processID, 8);
        request.writeUInt32BE(secretKey >>> 0, 12);
        const socket = await rawConnect(real[engine].roPort);
        socket.end(request);
        expect(await closedWithin(socket, 5000)).not.toBeNull();
      }
      const settled = await Promise.race([Promise.all(outcomes), sleep(15_000).then(() => 'still sleeping after 15 s')]);
      // 57014: canceling statement due to user request
      expect(settled).toEqual(['57014', '57014', '57014', '57014']);
    } finally {
      for (const client of clients) {
        (client as unknown as { connection: { stream: net.Socket } }).connection.stream.destroy();
      }
    }
  }, 60_000);
});

describe('both engines, scripted etcd', () => {
  it('no leader: a new rw connection waits and is forwarded once a leader appears', async () => {
    await setScript({ leader: null, members: baseMembers() }, /"rw":null,"holdRw":true/);
    const waits = engines.map((engine) => {
      const client = pgClient(scripted[engine].rwPort, login);
      const started = Date.now();
      let connectedAfterMs: number | null = null;
      const connected = client.connect().then(() => (connectedAfterMs = Date.now() - started));
      return { engine, client, connected, connectedAfter: () => connectedAfterMs };
    });
    await sleep(1000);
    for (const w of waits) expect(w.connectedAfter(), w.engine).toBeNull();
    await baseState();
    for (const w of waits) {
      expect(await w.connected, w.engine).toBeGreaterThanOrEqual(900);
      const { rows } = await w.client.query<{ port: number }>('SELECT inet_server_port() AS port');
      expect(rows[0]!.port, w.engine).toBe(leader.port);
      await w.client.end();
    }
  });

  it('after the wait timeout a waiting client gets 57P03 "the cluster has no leader"', async () => {
    await setScript({ leader: null, members: baseMembers() }, /"rw":null,"holdRw":true/);
    try {
      await Promise.all(
        engines.map(async (engine) => {
          const started = Date.now();
          // a client that opens without TLS reads the error as a server's answer to its start-up packet
          const client = pgClient(scripted[engine].rwPort, { user: login.user, password: login.password });
          await expect(client.connect(), engine).rejects.toMatchObject({ code: '57P03', message: expect.stringMatching(/the cluster has no leader \(waited 3 s\)/) });
          expect(Date.now() - started, engine).toBeGreaterThanOrEqual(2500);
          expect(Date.now() - started, engine).toBeLessThan(20_000);
        }),
      );
    } finally {
      await baseState();
    }
  });

  it('a TLS client (libpq, verify-full) waiting past the timeout is refused with an error in place of the TLS answer, not left hanging', async () => {
    await setScript({ leader: null, members: baseMembers() }, /"rw":null,"holdRw":true/);
    try {
      const psql = spawnSync('/usr/lib/postgresql/15/bin/psql', ['-XAtq', '-d', `host=127.0.0.1 port=${scripted.builtin.rwPort} user=app dbname=app sslmode=verify-full sslrootcert=${tc.layout.caFiles.cert}`, '-c', 'SELECT 1'], {
        encoding: 'utf8',
        env: { PATH: process.env.PATH ?? '/usr/bin', PGPASSWORD: login.password, PGCONNECT_TIMEOUT: '30' },
        timeout: 40_000,
      });
      expect(psql.status).not.toBe(0);
      // libpq drops the text of an error sent during the TLS exchange (it could come from anyone in the middle)
      expect(psql.stderr).toMatch(/server sent an error response during SSL exchange/);
    } finally {
      await baseState();
    }
  });

  it('a leader change closes the connections to the old leader and sends new ones to the new leader', async () => {
    const [next] = replicas as [{ name: string; port: number }];
    const clients = await Promise.all(
      engines.map(async (engine) => {
        const client = pgClient(scripted[engine].rwPort, login);
        await client.connect();
        let endedAtMs: number | null = null;
        client.on('end', () => (endedAtMs = Date.now()));
        return { engine, client, endedAt: () => endedAtMs };
      }),
    );
    const changedAtMs = Date.now();
    const members = [scriptedMember(leader.name, 'replica', leader.port), scriptedMember(next.name, 'primary', next.port)];
    try {
      await setScript({ leader: next.name, members }, new RegExp(`"rw":"${next.name}","holdRw":false`));
      for (const c of clients) {
        // switching time is bench/router.bench.ts's figure; a generous ceiling here
        for (let i = 0; i < 200 && c.endedAt() === null; i++) await sleep(50);
        expect(c.endedAt(), `${c.engine}: the old connection is closed`).not.toBeNull();
        expect(c.endedAt()! - changedAtMs, c.engine).toBeLessThan(10_000);
        expect((await landing(scripted[c.engine].rwPort, login)).port, c.engine).toBe(next.port);
      }
    } finally {
      await baseState();
    }
  });

  it('a connection that waited for the leader is closed when the leader changes, as any other rw connection', async () => {
    const [next] = replicas as [{ name: string; port: number }];
    await setScript({ leader: null, members: baseMembers() }, /"rw":null,"holdRw":true/);
    // held while there is no leader (with HAProxy: by the router's holder, its backup server), then forwarded
    const clients = engines.map((engine) => {
      const client = pgClient(scripted[engine].rwPort, login);
      let endedAtMs: number | null = null;
      client.on('end', () => (endedAtMs = Date.now()));
      client.on('error', () => undefined);
      return { engine, client, connected: client.connect(), endedAt: () => endedAtMs };
    });
    try {
      await sleep(300);
      await baseState();
      for (const c of clients) {
        await c.connected;
        expect((await c.client.query<{ port: number }>('SELECT inet_server_port() AS port')).rows[0]!.port, c.engine).toBe(leader.port);
      }
      const changedAtMs = Date.now();
      const members = [scriptedMember(leader.name, 'replica', leader.port), scriptedMember(next.name, 'primary', next.port)];
      await setScript({ leader: next.name, members }, new RegExp(`"rw":"${next.name}","holdRw":false`));
      for (const c of clients) {
        for (let i = 0; i < 200 && c.endedAt() === null; i++) await sleep(50);
        expect(c.endedAt(), `${c.engine}: the forwarded connection to the old leader is closed`).not.toBeNull();
        expect(c.endedAt()! - changedAtMs, c.engine).toBeLessThan(10_000);
      }
    } finally {
      for (const c of clients) await c.client.end().catch(() => undefined);
      await baseState();
    }
  });

  it('a replica that becomes leader keeps the reads open on it through ro; new reads go to the others', async () => {
    const [next] = replicas as [{ name: string; port: number }];
    // through each router's ro, a session on `next` (leastconn and round robin send the next connection elsewhere)
    const opened: pg.Client[] = [];
    const onNext = {} as Record<Engine, pg.Client>;
    for (const engine of engines) {
      for (let i = 0; i < 6 && onNext[engine] === undefined; i++) {
        const client = pgClient(scripted[engine].roPort, login);
        await client.connect();
        opened.push(client);
        if ((await client.query('SELECT inet_server_port() AS port')).rows[0].port === next.port) onNext[engine] = client;
      }
      expect(onNext[engine], `${engine}: a session on ${next.name} through ro`).toBeDefined();
    }
    const members = (nextRole: 'primary' | 'replica') => [scriptedMember(leader.name, 'replica', leader.port), scriptedMember(next.name, nextRole, next.port), ...replicas.slice(1).map((r) => scriptedMember(r.name, 'replica', r.port))];
    const draining = `"ro":\\[[^\\]]*\\],"roDraining":\\["${next.name}"\\]`;
    try {
      // as in a switchover: the replica takes the key, then is promoted, its history entry written before it publishes itself as primary
      await setScript({ leader: next.name, members: members('replica') }, new RegExp(`"rw":null,"holdRw":true,${draining}`));
      await script.appendHistory({ timeline: 2, switchLsn: 1000, leader: next.name, atMs: Date.now(), reason: 'scripted promotion' });
      await setScript({ leader: next.name, members: members('primary') }, new RegExp(`"rw":"${next.name}","holdRw":false,${draining}`));
      for (const engine of engines) {
        expect((await onNext[engine].query('SELECT inet_server_port() AS port')).rows[0].port, `${engine}: the open read goes on`).toBe(next.port);
        for (let i = 0; i < 4; i++) expect((await landing(scripted[engine].roPort, login)).port, `${engine}: no new read on the new leader`).not.toBe(next.port);
      }
    } finally {
      for (const client of opened) await client.end().catch(() => undefined);
      // the newest history entry names the leader again, long ago: no leader of the scripts below keeps reads
      await script.appendHistory({ timeline: 3, switchLsn: 1000, leader: leader.name, atMs: 0, reason: 'scripted' });
      await baseState();
    }
  });

  it('a pending switchover holds new rw connections while open ones go on', async () => {
    const open = await Promise.all(engines.map(async (engine) => {
      const client = pgClient(scripted[engine].rwPort, login);
      await client.connect();
      return client;
    }));
    const marks = engines.map((e) => scripted[e].log().length);
    // as its leader marks it once prepared (a checkpoint, the other standbys moved): routers hold from then on
    expect(await script.requestSwitchover({ v: 1, from: leader.name, to: replicas[0]!.name, failover: false, requestedAtMs: Date.now(), holdFromMs: Date.now() })).toBe(true);
    try {
      await Promise.all(engines.map((e, i) => waitForLog(scripted[e], /switchover from \S+ pending: holding new rw/, 10_000, marks[i])));
      for (const client of open) expect((await client.query('SELECT 1 AS one')).rows[0].one).toBe(1);
      const held = engines.map((engine) => probePostgres('127.0.0.1', scripted[engine].rwPort, 1000));
      expect(await Promise.all(held)).toEqual([false, false]);
    } finally {
      await script.clearSwitchover();
      for (const client of open) await client.end();
    }
    await Promise.all(engines.map((e) => waitForLog(scripted[e], new RegExp(`"rw":"${leader.name}","holdRw":false`), 10_000, marks[0 + engines.indexOf(e)])));
    for (const engine of engines) expect((await landing(scripted[engine].rwPort, login)).port).toBe(leader.port);
  });

  it('an unreachable backend: the client\'s connection is closed promptly, not left hanging', async () => {
    const probe = async (engine: Engine): Promise<number | null> => {
      const socket = await rawConnect(scripted[engine].rwPort);
      socket.write(Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]));
      return closedWithin(socket, 15_000);
    };
    // connection refused: at once
    await setScript({ leader: 'ghost', members: [scriptedMember('ghost', 'primary', ghostPort)] }, /"rw":"ghost","holdRw":false/);
    try {
      for (const engine of engines) {
        const closedAfterMs = await probe(engine);
        expect(closedAfterMs, engine).not.toBeNull();
        expect(closedAfterMs!, engine).toBeLessThan(10_000);
      }
      // no answer at all: after the 3 s connect timeout
      const hole = await startBlackhole(blackholePort);
      try {
        await setScript({ leader: 'hole', members: [scriptedMember('hole', 'primary', blackholePort)] }, /"rw":"hole","holdRw":false/);
        const closedAfterMs = await Promise.all(engines.map(probe));
        for (const [i, engine] of engines.entries()) {
          expect(closedAfterMs[i], engine).not.toBeNull();
          expect(closedAfterMs[i]!, engine).toBeGreaterThanOrEqual(2500);
          expect(closedAfterMs[i]!, engine).toBeLessThan(15_000);
        }
      } finally {
        hole.kill('SIGKILL');
      }
    } finally {
      await baseState();
    }
  });

  it('garbage bytes, abrupt disconnects and 1000 idle connections per router do not stop it serving others', async () => {
    const members = [scriptedMember(leader.name, 'primary', leader.port), scriptedMember('sink', 'replica', sinkPort)];
    await setScript({ leader: leader.name, members }, /"ro":\["sink"\]/);
    const idle: net.Socket[] = [];
    try {
      for (const engine of engines) {
        const { rwPort, roPort } = scripted[engine];
        // each sends a whole StartupMessage (a router holds a connection until its first message is complete) and then nothing
        const startup = Buffer.concat([Buffer.from([0, 0, 0, 40, 0, 3, 0, 0]), Buffer.from('user\0postgres\0database\0app\0\0\0\0\0\0\0\0', 'latin1').subarray(0, 32)]);
        for (let batch = 0; batch < 10; batch++) {
          const sockets = await Promise.all(Array.from({ length: 100 }, () => rawConnect(roPort)));
          for (const socket of sockets) socket.write(startup);
          idle.push(...sockets);
        }
        const abuse = Array.from({ length: 30 }, async (_, i) => {
          const socket = await rawConnect(i % 2 === 0 ? rwPort : roPort);
          socket.on('error', () => undefined);
          if (i % 3 === 0) socket.write(randomBytes(4096));
          if (i % 3 === 1) socket.write(Buffer.from([0, 0, 0, 40, 0, 3, 0, 0, 0x75])); // half a StartupMessage
          socket.destroy();
        });
        await Promise.all(abuse);
        const garbage = await rawConnect(rwPort);
        garbage.write(Buffer.from('GET / HTTP/1.1\r\nHost: keel\r\n\r\n'));
        expect(await closedWithin(garbage, 5000), `${engine}: PostgreSQL hangs up on garbage`).not.toBeNull();
        expect(await landing(rwPort, login), engine).toEqual({ port: leader.port, replica: false });
      }
      for (let i = 0; i < 50 && sinkSockets.size < 2000; i++) await sleep(100);
      expect(sinkSockets.size).toBeGreaterThanOrEqual(2000);
      for (const engine of engines) expect(await probePostgres('127.0.0.1', scripted[engine].rwPort, 2000), engine).toBe(true);
    } finally {
      for (const socket of idle) socket.destroy();
      await baseState();
    }
  });

  it('fails closed when etcd cannot be read for longer than ttl, and opens again when it can', async () => {
    const open = await Promise.all(engines.map(async (engine) => {
      const client = pgClient(scripted[engine].rwPort, login);
      await client.connect();
      return client;
    }));
    const marks = engines.map((e) => scripted[e].log().length);
    process.kill(scriptEtcdPid!, 'SIGSTOP');
    try {
      // ttl is 5 s in the scripted config
      await Promise.all(engines.map((e, i) => waitForLog(scripted[e], /failing closed/, 9000, marks[i])));
      for (const [i, engine] of engines.entries()) {
        await expect(open[i]!.query('SELECT 1'), `${engine}: the open rw connection is closed`).rejects.toThrow();
        expect(await probePostgres('127.0.0.1', scripted[engine].rwPort, 1000), `${engine}: a new rw connection is held`).toBe(false);
        expect((await landing(scripted[engine].roPort, login)).replica, `${engine}: reads go on`).toBe(true);
      }
    } finally {
      process.kill(scriptEtcdPid!, 'SIGCONT');
      for (const client of open) await client.end().catch(() => undefined);
    }
    for (const engine of engines) expect((await landing(scripted[engine].rwPort, login, 15_000)).port, engine).toBe(leader.port);
  });
});

describe('both engines, real cluster: the leader dies', () => {
  it('rw follows the new leader; connections to the old one are closed', async () => {
    const old = await Promise.all(engines.map(async (engine) => {
      const client = pgClient(real[engine].rwPort, login);
      await client.connect();
      let ended = false;
      client.on('end', () => (ended = true));
      return { engine, client, ended: () => ended };
    }));
    const marks = engines.map((e) => real[e].log().length);
    expect((await tc.local.provider.fence(leader.name)).confirmed).toBe(true);
    // until its key expires the dead leader refuses connections (the client hears at once); from then on
    // new connections wait for the next leader instead of failing
    const away = new RegExp(`"rw":(null|"(?!${leader.name}")[a-z0-9_]+")`);
    await Promise.all(engines.map((e, i) => waitForLog(real[e], away, 30_000, marks[i])));
    const next = await Promise.all(engines.map((engine) => landing(real[engine].rwPort, login, 30_000)));
    const newLeader = await tc.leader();
    expect(newLeader.name).not.toBe(leader.name);
    for (const [i, engine] of engines.entries()) {
      expect(next[i], engine).toEqual({ port: newLeader.pgPort, replica: false });
      expect(old[i]!.ended(), `${engine}: the connection to the dead leader is closed`).toBe(true);
      await old[i]!.client.end().catch(() => undefined);
    }
  });

  it('routers stop on SIGTERM with exit status 0', async () => {
    for (const engine of engines) expect(await scripted[engine].stop(), engine).toBe(0);
  });
});
