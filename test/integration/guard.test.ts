/**
 * The fencing guard (`keel guard`) against real etcd and PostgreSQL + PostGIS:
 * a leader whose agent alone freezes stops acknowledging writes before any
 * other member holds the leader key; an agent killed and started again takes
 * its guard over without a restart of PostgreSQL or a change of leader; and
 * the guard alone against a real data directory stops a primary once its feed
 * lapses, leaves a standby alone and never signals a PID that is not that
 * data directory's postmaster.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify as toYaml } from 'yaml';
import { nodeConfigSchema, type NodeConfig } from '../../src/config/schema.js';
import { monoNowMs } from '../../src/guard/clock.js';
import { LineSplitter, parseGuardMessage, serializeMessage, type AgentMessage, type StateMessage } from '../../src/guard/protocol.js';
import { isPostmasterAlive } from '../../src/postgres/datadir.js';
import { LocalPostgres } from '../../src/postgres/local.js';
import { guardBin } from '../../src/providers/local.js';
import { sleep } from '../../src/util/clock.js';
import { silentLogger } from '../../src/util/log.js';
import { isAlive, readPidFile, terminate } from '../../src/util/process.js';
import { Observer } from '../../src/workload/observer.js';
import { ackRowSteps, ackTableSql, Writer } from '../../src/workload/writer.js';
import { appConnection, TestCluster } from '../support/cluster.js';

/** One request to a guard's socket, as the agent speaks it; resolves with the guard's answer. */
async function askGuard(socketPath: string, message: AgentMessage = { v: 1, type: 'hello', agentPid: process.pid }): Promise<StateMessage> {
  return new Promise((resolve, reject) => {
    const socket = connect(socketPath);
    const splitter = new LineSplitter();
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no answer from the guard at ${socketPath}`));
    }, 5000);
    socket.setEncoding('utf8');
    socket.on('connect', () => socket.write(serializeMessage(message)));
    socket.on('data', (chunk: string) => {
      const [line] = splitter.push(chunk);
      if (line === undefined) return;
      clearTimeout(timer);
      socket.destroy();
      const parsed = parseGuardMessage(line);
      if (parsed.ok && parsed.message.type === 'state') resolve(parsed.message);
      else reject(new Error(`the guard answered ${line}`));
    });
    socket.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

const feedFor = (deadlineMonoMs: number, agentPid = process.pid): AgentMessage => ({ v: 1, type: 'feed', agentPid, leaseId: null, deadlineMonoMs });

async function until<T>(what: string, probe: () => T | Promise<T>, timeoutMs: number): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** The shared observer: every leader change, by the watch and by a poll, timed as it arrives. */
async function watchLeader(cluster: TestCluster): Promise<Observer> {
  const observer = new Observer(cluster.dcs, [cluster.layout.etcdEndpoint(cluster.file)], cluster.file.cluster, { tls: cluster.layout.clientTls('operator') });
  await observer.start();
  return observer;
}

describe('the fencing guard in a cluster', () => {
  let cluster: TestCluster;
  const guardLog = (name: string) => readFileSync(cluster.layout.guardLog(name), 'utf8');

  beforeAll(async () => {
    // Asynchronous replication: nothing but fencing stops an old primary from acknowledging writes.
    cluster = await TestCluster.start({ portBase: 19000, synchronousMode: 'off' });
  });
  afterAll(async () => {
    await cluster?.stop();
  });

  it('starts one guard per node before its agent, fed by that agent', async () => {
    for (const name of cluster.layout.nodeNames()) {
      const socket = cluster.layout.guardSocket(name);
      expect(statSync(socket).mode & 0o777).toBe(0o600);
      const state = await askGuard(socket);
      expect(state.guardPid).toBe(cluster.local.provider.guardPid(name));
      expect(state.fedByPid).toBe(readPidFile(cluster.layout.agentPidFile(name)));
      expect(state.tripped).toBe(false);
      expect(state.deadlineMonoMs! - state.monoNowMs).toBeGreaterThan(0);
    }
  });

  it('a guard that dies is started again by the supervisor and fed again by its agent', async () => {
    const leader = await cluster.leader();
    const name = cluster.layout.nodeNames().find((n) => n !== leader.name)!;
    const socket = cluster.layout.guardSocket(name);
    const old = cluster.local.provider.guardPid(name)!;
    process.kill(old, 'SIGKILL');
    const restarted = await until('a new guard', () => {
      const pid = cluster.local.provider.guardPid(name);
      return pid !== null && pid !== old ? pid : null;
    }, 15_000);
    const agent = readPidFile(cluster.layout.agentPidFile(name));
    const state = await until('the agent to feed the new guard', async () => {
      const s = await askGuard(socket).catch(() => null);
      return s !== null && s.fedByPid === agent ? s : null;
    }, 30_000);
    expect(state.guardPid).toBe(restarted);
    expect(readPidFile(cluster.layout.guardPidFile(name))).toBe(restarted);
    expect(guardLog(name)).toContain('removed a stale guard socket');
  });

  it("an agent killed and started again at once takes its guard over: same postmaster, nobody else takes the key", async () => {
    const leader = await cluster.leader();
    const name = leader.name;
    const socket = cluster.layout.guardSocket(name);
    const postmaster = readPidFile(join(cluster.layout.dataDir(name), 'postmaster.pid'))!;
    const guardPid = cluster.local.provider.guardPid(name);
    const oldAgent = readPidFile(cluster.layout.agentPidFile(name))!;
    const oldLeaseId = (await cluster.view()).leader!.leaseId;
    expect((await askGuard(socket)).fedByPid).toBe(oldAgent);
    const watch = await watchLeader(cluster);
    try {
      process.kill(oldAgent, 'SIGKILL');
      await until('the old agent to be gone', () => !isAlive(oldAgent), 5000);
      await cluster.local.provider.start(name);
      const newAgent = await until('the new agent', () => {
        const pid = readPidFile(cluster.layout.agentPidFile(name));
        return pid !== oldAgent && pid !== null && isAlive(pid) ? pid : null;
      }, 10_000);
      await until('the new agent to feed the guard', async () => (await askGuard(socket)).fedByPid === newAgent, 30_000);
      // past the killed agent's whole ttl: had the key not been rebound, it would have expired and gone to a replica
      await sleep(13_000);
      expect(watch.samples.filter((e) => e.leader !== name)).toEqual([]);
      const view = await cluster.view();
      expect(view.leader?.value.name).toBe(name);
      expect(view.leader?.leaseId).not.toBe(oldLeaseId);
      // PostgreSQL was never stopped: the same postmaster runs and takes writes
      expect(readPidFile(join(cluster.layout.dataDir(name), 'postmaster.pid'))).toBe(postmaster);
      expect(isPostmasterAlive(postmaster)).toBe(true);
      await cluster.query(leader.pgPort, 'CREATE TABLE IF NOT EXISTS guard_takeover (id int)');
      await cluster.query(leader.pgPort, 'INSERT INTO guard_takeover VALUES (1)');
      const state = await askGuard(socket);
      expect(state.guardPid).toBe(guardPid);
      expect(state).toMatchObject({ fedByPid: newAgent, tripped: false, fences: 0 });
      expect(guardLog(name)).toContain('a new agent took the guard over');
    } finally {
      await watch.stop();
    }
  });

  it("a leader whose agent alone is frozen stops acknowledging writes before another member holds the leader key", async () => {
    await cluster.waitFor('two streaming replicas', (v) => v.members.filter((m) => m.role === 'replica' && m.streaming).length === 2, 60_000);
    const old = await cluster.leader();
    const oldPostmaster = readPidFile(join(cluster.layout.dataDir(old.name), 'postmaster.pid'))!;
    await cluster.query(old.pgPort, ackTableSql('guard_writes'));
    const watch = await watchLeader(cluster);
    // straight to the old primary, one row per transaction on one connection; after a failure (cut off, refused, read-only) it reconnects
    // and tries again: the old primary must never take a write again
    const writer = new Writer({
      connection: { ...appConnection('127.0.0.1', old.pgPort, cluster.login), connectionTimeoutMillis: 1000 },
      mode: 'persistent',
      writer: 0,
      via: 'direct',
      node: old.name,
      next: ackRowSteps('guard_writes', 1, 0),
      keepRecords: true,
      thinkMs: 0,
      retryMs: 100,
    });
    /** when each acknowledgement arrived */
    const acks = () => writer.records.filter((r) => r.ok).map((r) => r.doneMs);
    writer.start();
    const agent = readPidFile(cluster.layout.agentPidFile(old.name))!;
    let thawed = false;
    try {
      await until('writes to flow', () => acks().length >= 20, 30_000);
      process.kill(agent, 'SIGSTOP');
      const view = await cluster.waitFor(
        'another member to lead',
        (v) => v.leader !== null && v.leader.value.name !== old.name && v.members.some((m) => m.name === v.leader!.value.name && m.role === 'primary'),
        90_000,
      );
      const next = view.leader!.value.name;
      // the writer goes on knocking at the old primary's port for a while
      await sleep(3000);
      const takenAtMs = watch.firstLeaderOtherThan(old.name);
      expect(takenAtMs).not.toBeNull();
      const lastAckMs = acks().at(-1)!;
      expect(acks().filter((at) => at >= takenAtMs!).length, 'writes acknowledged by the old primary once another member held the key').toBe(0);
      expect(lastAckMs).toBeLessThan(takenAtMs!);
      console.log(`${old.name}'s last acknowledged write came ${takenAtMs! - lastAckMs} ms before ${next} held the leader key (${acks().length} writes)`);
      expect(isPostmasterAlive(oldPostmaster)).toBe(false);
      expect(guardLog(old.name)).toContain('tripped: the lease deadline passed without a feed; stopped PostgreSQL');
      expect(watch.samples.filter((e) => e.leader !== null && e.leader !== old.name).map((e) => e.leader)).toContain(next);

      process.kill(agent, 'SIGCONT');
      thawed = true;
      await cluster.waitFor(
        `${old.name} to rejoin as a replica of ${next}`,
        (v) => {
          const m = v.members.find((x) => x.name === old.name);
          const leader = v.members.find((x) => x.name === next);
          return m !== undefined && leader !== undefined && m.role === 'replica' && m.streaming && m.timeline === leader.timeline;
        },
        120_000,
      );
      expect((await cluster.view()).leader?.value.name).toBe(next);
      // it never took a write again, and its guard, fed a later deadline by the thawed agent, no longer trips
      expect(acks().filter((at) => at >= takenAtMs!).length, 'writes acknowledged by the old primary once another member held the key').toBe(0);
      expect(await askGuard(cluster.layout.guardSocket(old.name))).toMatchObject({ fedByPid: agent, tripped: false, fences: 1 });
    } finally {
      if (!thawed) process.kill(agent, 'SIGCONT');
      await writer.stop();
      await watch.stop();
    }
  });
});

describe('the guard alone against a real data directory', () => {
  let dir: string;
  let config: NodeConfig;
  let postgres: LocalPostgres;
  const guards: { child: ChildProcess; output: string[] }[] = [];
  const others: ChildProcess[] = [];

  const dataDir = () => config.postgres.dataDir;
  const socketPath = () => config.guard!.socket;
  const watchdogFile = () => join(dir, 'watchdog');
  const watchdogBytes = () => (existsSync(watchdogFile()) ? readFileSync(watchdogFile(), 'utf8') : '');

  function writeConfig(name: string, over: Partial<NodeConfig['postgres']> = {}): { file: string; config: NodeConfig } {
    const nodeDir = join(dir, name);
    mkdirSync(nodeDir, { recursive: true });
    chmodSync(nodeDir, 0o755);
    const parsed = nodeConfigSchema.parse({
      name,
      cluster: 'guardtest',
      etcd: { endpoints: ['http://127.0.0.1:19099'] },
      api: { listen: '127.0.0.1:19098' },
      postgres: { dataDir: join(nodeDir, 'data'), port: 19090, superuser: { password: 'guard-test-pw-1' }, replication: { password: 'guard-test-pw-2' }, ...over },
      guard: { socket: join(nodeDir, 'guard.sock') },
    });
    const file = join(nodeDir, 'node.yml');
    const { bootstrap: _b, ...doc } = parsed;
    writeFileSync(file, toYaml(doc), { mode: 0o600 });
    return { file, config: parsed };
  }

  async function startGuard(file: string, socket: string, extra: string[] = []) {
    const child = spawn(process.execPath, [guardBin, '--config', file, ...extra], { stdio: ['ignore', 'pipe', 'pipe'] });
    const guard = { child, output: [] as string[] };
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => guard.output.push(...chunk.split('\n').filter((l) => l.length > 0)));
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => guard.output.push(chunk));
    guards.push(guard);
    await until(`the guard to answer on ${socket}`, () => askGuard(socket).then(() => true, () => false), 10_000);
    return guard;
  }

  const messages = (guard: { output: string[] }) => guard.output.map((line) => (JSON.parse(line) as { msg: string }).msg);

  beforeAll(async () => {
    dir = mkdtempSync('/tmp/keel-guard-');
    chmodSync(dir, 0o755);
    config = writeConfig('node1').config;
    postgres = new LocalPostgres(config, silentLogger());
    await postgres.initdb();
    await postgres.start({ replica: false, upstream: null, slotName: 'node1', parameters: {} });
  });
  afterAll(async () => {
    for (const guard of guards) if (guard.child.pid !== undefined) await terminate(guard.child.pid, 5000);
    for (const child of others) if (child.pid !== undefined) await terminate(child.pid, 1000, 'SIGKILL');
    if (postgres) {
      if ((await postgres.postmasterPid()) !== null) await postgres.stop('immediate').catch(() => undefined);
      await postgres.close();
    }
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('removes a stale socket at start, listens with mode 0600, never fences unfed and lives through SIGHUP', async () => {
    // a socket file left by a process killed while it listened
    const stale = spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(socketPath())})`]);
    others.push(stale);
    await until('the stale socket', () => existsSync(socketPath()), 5000);
    stale.kill('SIGKILL');
    await until('the stale listener to die', () => stale.exitCode !== null || stale.signalCode !== null, 5000);
    const guard = await startGuard(join(dir, 'node1', 'node.yml'), socketPath(), ['--hardware-watchdog', watchdogFile()]);
    expect(messages(guard)).toContain('removed a stale guard socket');
    expect(statSync(socketPath()).mode & 0o777).toBe(0o600);
    const postmaster = (await postgres.postmasterPid())!;
    guard.child.kill('SIGHUP');
    await sleep(1500);
    expect(guard.child.exitCode).toBeNull();
    expect(isPostmasterAlive(postmaster)).toBe(true);
    expect(await askGuard(socketPath())).toMatchObject({ deadlineMonoMs: null, fedByPid: null, tripped: false, fences: 0 });
    // the hardware watchdog is not even opened before the first feed: an unfed guard must not reset the host
    expect(existsSync(watchdogFile())).toBe(false);
  });

  it('stops a real primary once its feed lapses, with one log line, and lets the hardware watchdog lapse', async () => {
    const guard = guards[0]!;
    const postmaster = (await postgres.postmasterPid())!;
    const state = await askGuard(socketPath(), feedFor(monoNowMs() + 2500));
    expect(state.fedByPid).toBe(process.pid);
    await sleep(1800);
    expect(isPostmasterAlive(postmaster)).toBe(true);
    expect(watchdogBytes().length).toBeGreaterThanOrEqual(2);
    await until('the postmaster to be stopped', () => !isPostmasterAlive(postmaster), 10_000);
    // the guard says so once it has seen the postmaster gone, a moment after the process went
    await until('the guard to say it tripped', () => messages(guard).some((m) => m.startsWith('tripped')), 5000);
    const trips = messages(guard).filter((m) => m.startsWith('tripped'));
    expect(trips).toEqual(['tripped: the lease deadline passed without a feed; stopped PostgreSQL (immediate shutdown)']);
    expect(await askGuard(socketPath())).toMatchObject({ tripped: true, fences: 1 });
    // tripped: no more keep-alives, so a real watchdog device would reset the host
    const bytes = watchdogBytes().length;
    await sleep(2500);
    expect(watchdogBytes().length).toBe(bytes);
    expect(watchdogBytes()).not.toContain('V');
  });

  it('leaves a standby alone after its feed lapsed (standby.signal: it cannot write)', async () => {
    await postgres.start({ replica: true, upstream: null, slotName: 'node1', parameters: {} });
    const postmaster = (await postgres.postmasterPid())!;
    expect(existsSync(join(dataDir(), 'standby.signal'))).toBe(true);
    const state = await askGuard(socketPath(), feedFor(monoNowMs() + 300));
    expect(state.tripped).toBe(false);
    await sleep(2500);
    expect(isPostmasterAlive(postmaster)).toBe(true);
    expect(await askGuard(socketPath())).toMatchObject({ tripped: false, fences: 1 });
    expect(messages(guards[0]!)).toContain('the lease deadline passed without a feed; PostgreSQL is a standby (standby.signal): nothing to stop');
  });

  it("never signals a PID that is not its data directory's postmaster", async () => {
    // another guard, whose data directory's postmaster.pid names node1's real postmaster
    const realPostmaster = (await postgres.postmasterPid())!;
    const other = writeConfig('node2');
    mkdirSync(other.config.postgres.dataDir, { recursive: true });
    writeFileSync(join(other.config.postgres.dataDir, 'postmaster.pid'), `${realPostmaster}\n${dataDir()}\n`);
    const otherGuard = await startGuard(other.file, other.config.guard!.socket);
    await askGuard(other.config.guard!.socket, feedFor(monoNowMs() + 200));
    await until('the refusal', () => messages(otherGuard).includes('postmaster.pid names another process: never signalled'), 5000);
    await sleep(1000);
    expect(isPostmasterAlive(realPostmaster)).toBe(true);

    // node1's own postmaster.pid naming a process that works in the data directory but is no postgres
    await postgres.stop('fast');
    rmSync(join(dataDir(), 'standby.signal'), { force: true });
    const impostor = spawn('sleep', ['300'], { cwd: dataDir(), stdio: 'ignore' });
    others.push(impostor);
    writeFileSync(join(dataDir(), 'postmaster.pid'), `${impostor.pid}\n${dataDir()}\n`);
    const before = messages(guards[0]!).length;
    await askGuard(socketPath(), feedFor(monoNowMs() + 200));
    await until('the refusal', () => messages(guards[0]!).slice(before).includes('postmaster.pid names another process: never signalled'), 5000);
    await sleep(1000);
    expect(isAlive(impostor.pid!)).toBe(true);
    expect(impostor.exitCode).toBeNull();
    expect(impostor.signalCode).toBeNull();
    expect(await askGuard(socketPath())).toMatchObject({ fences: 1 });
    rmSync(join(dataDir(), 'postmaster.pid'), { force: true });
  });

  it('exits cleanly on SIGTERM: socket removed, hardware watchdog closed with the magic V', async () => {
    const guard = guards[0]!;
    await askGuard(socketPath(), feedFor(monoNowMs() + 60_000));
    const exited = new Promise<number | null>((resolve) => guard.child.once('exit', (code) => resolve(code)));
    guard.child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(existsSync(socketPath())).toBe(false);
    expect(watchdogBytes().endsWith('V')).toBe(true);
  });
});
