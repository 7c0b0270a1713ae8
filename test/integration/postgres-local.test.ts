/**
 * LocalPostgres against the real PostgreSQL 15 + PostGIS: bootstrap, clone,
 * stream, promote, diverge, rewind and follow again.
 */
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { connect } from 'node:net';
import { chmodSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultWalSegmentMb, nodeConfigSchema, type NodeConfig } from '../../src/config/schema.js';
import { stillInFlight } from '../../src/agent/drain.js';
import { LocalPostgres } from '../../src/postgres/local.js';
import { parseControlData, parseControlFile } from '../../src/postgres/controldata.js';
import { isZombie } from '../../src/postgres/datadir.js';
import type { StartOptions, UpstreamTarget } from '../../src/postgres/types.js';
import { silentLogger } from '../../src/util/log.js';
import { freeze } from '../support/freeze.js';
import { stopLocalPostgres } from '../support/local-postgres.js';
import { ensureCertificateAuthority, issueCertificate } from '../../src/tls/pki.js';

const superPassword = 'super-secret-pw-1';
const replPassword = 'repl-secret-pw-1';
const rewindPassword = 'rewind-secret-pw-1';
const appPassword = 'app-secret-pw-0001';
const ports = { node1: 25432, node2: 25433 } as const;

/** The CA and each node's pairs, as keel up makes them: the keys belong to the OS user that runs PostgreSQL. */
async function issueTls(dir: string, name: 'node1' | 'node2'): Promise<void> {
  const ca = await ensureCertificateAuthority({ cert: join(dir, 'ca.crt'), key: join(dir, 'ca.key') }, 'keel itest CA');
  const owner = process.getuid?.() === 0 ? { uid: Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' })), gid: Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' })) } : null;
  await issueCertificate(ca, { cert: join(dir, name, 'tls', 'node.crt'), key: join(dir, name, 'tls', 'node.key') }, { commonName: 'itest-agent', names: ['127.0.0.1', 'localhost'], usage: 'both', keyOwner: owner });
  await issueCertificate(ca, { cert: join(dir, name, 'tls', 'replication.crt'), key: join(dir, name, 'tls', 'replication.key') }, { commonName: 'replicator', usage: 'client', keyOwner: owner });
}

function configFor(dir: string, name: 'node1' | 'node2'): NodeConfig {
  return nodeConfigSchema.parse({
    name,
    cluster: 'itest',
    etcd: { endpoints: ['http://127.0.0.1:2379'] },
    api: { listen: '127.0.0.1:8008' },
    tls: { ca: join(dir, 'ca.crt'), cert: join(dir, name, 'tls', 'node.crt'), key: join(dir, name, 'tls', 'node.key') },
    postgres: {
      dataDir: join(dir, name, 'postgres', 'data'),
      port: ports[name],
      superuser: { password: superPassword },
      replication: { cert: join(dir, name, 'tls', 'replication.crt'), key: join(dir, name, 'tls', 'replication.key') },
      rewind: { password: rewindPassword },
      app: { password: appPassword },
    },
  });
}

/** The superuser over the node's local socket: the only way it may log in. */
function socketDir(dir: string, port: number): string {
  const name = ({ [ports.node1]: 'node1', [ports.node2]: 'node2', 25435: 'node5' } as Record<number, string>)[port];
  return join(dir, name ?? 'unknown', 'postgres');
}

/** pg_control's fields read from the file itself are those pg_controldata prints (and the file is read itself, not passed on). */
function expectFileReadAsProgram(dataDir: string): void {
  const direct = parseControlFile(readFileSync(join(dataDir, 'global', 'pg_control')));
  expect(direct).not.toBeNull();
  const output = execFileSync('/usr/lib/postgresql/15/bin/pg_controldata', ['-D', dataDir], { encoding: 'utf8', env: { LC_ALL: 'C' } });
  expect(direct).toEqual(parseControlData(output));
}

function upstream(name: 'node1' | 'node2'): UpstreamTarget {
  return { name, host: '127.0.0.1', port: ports[name] };
}

function asPrimary(name: string): StartOptions {
  return { replica: false, upstream: null, slotName: name, parameters: {} };
}

function following(name: string, target: UpstreamTarget, parameters: StartOptions['parameters'] = {}): StartOptions {
  return { replica: true, upstream: target, slotName: name, parameters };
}

let testDir = '';

async function query<Row extends object>(port: number, text: string, database = 'app'): Promise<Row[]> {
  const client = new pg.Client({ host: socketDir(testDir, port), port, user: 'postgres', password: superPassword, database });
  await client.connect();
  try {
    return (await client.query<Row>(text)).rows;
  } finally {
    await client.end();
  }
}

async function eventually<T>(probe: () => Promise<T>, accept: (value: T) => boolean, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: T | undefined;
  let lastError: unknown;
  while (Date.now() < deadline) {
    try {
      last = await probe();
      if (accept(last)) return last;
    } catch (err) {
      lastError = err;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`condition not met in ${timeoutMs} ms; last value ${JSON.stringify(last)}; last error ${String(lastError)}`);
}

describe('LocalPostgres with real PostgreSQL', () => {
  let dir: string;
  let node1: LocalPostgres;
  let node2: LocalPostgres;

  beforeAll(async () => {
    dir = mkdtempSync('/tmp/keel-pg-');
    testDir = dir;
    // The postgres OS user must traverse it when the tests run as root.
    chmodSync(dir, 0o755);
    await issueTls(dir, 'node1');
    await issueTls(dir, 'node2');
    node1 = new LocalPostgres(configFor(dir, 'node1'), silentLogger());
    node2 = new LocalPostgres(configFor(dir, 'node2'), silentLogger());
  });

  afterAll(async () => {
    for (const node of [node1, node2]) await stopLocalPostgres(node);
    if (dir && !process.env.KEEL_KEEP_TEST_DIR) rmSync(dir, { recursive: true, force: true });
  });

  it('bootstraps a primary with PostGIS in the application database', async () => {
    expect(await node1.dataDirState()).toBe('missing');
    expect(await node1.controlData()).toBeNull();
    await node1.initdb();
    expect(await node1.dataDirState()).toBe('present');
    const control = await node1.controlData();
    expect(control).toMatchObject({ clusterState: 'shut down', timeline: 1, dataChecksums: true });
    expectFileReadAsProgram(join(dir, 'node1', 'postgres', 'data'));

    await node1.start(asPrimary('node1'));
    expect(await node1.postmasterPid()).toBeGreaterThan(0);
    await node1.createClusterObjects();
    await node1.createClusterObjects(); // idempotent

    const [row] = await query<{ v: string }>(ports.node1, 'SELECT postgis_full_version() AS v');
    expect(row?.v).toMatch(/POSTGIS="3/);
    // node.yml sets no bootstrap.walSegmentMb: Keel's default, not initdb's 16 MB
    const [segment] = await query<{ size: string }>(ports.node1, "SELECT current_setting('wal_segment_size') AS size");
    expect(segment?.size).toBe(`${defaultWalSegmentMb}MB`);

    const state = await node1.runtimeState();
    expect(state).toMatchObject({ inRecovery: false, timeline: 1, receivedLsn: null, streaming: false, primaryConninfo: '' });
    expect(state?.walLsn).toBeGreaterThan(0);
  });

  it('clones a replica that streams through its slot', async () => {
    await node1.syncSlots(['node2', 'stale']);
    await node1.syncSlots(['node2']);
    expect((await node1.runtimeState())?.slots).toEqual(['node2']);

    await node2.basebackup(upstream('node1'));
    await node2.start(following('node2', upstream('node1')));
    await query(ports.node1, 'CREATE TABLE places (id int PRIMARY KEY, geom geometry(Point, 4326)); INSERT INTO places VALUES (1, ST_SetSRID(ST_MakePoint(4.9, 52.4), 4326))');

    const rows = await eventually(() => query<{ id: number }>(ports.node2, 'SELECT id FROM places'), (r) => r.length === 1);
    expect(rows).toEqual([{ id: 1 }]);

    const replica = await eventually(() => node2.runtimeState(), (s) => s?.streaming === true);
    expect(replica).toMatchObject({ inRecovery: true, timeline: 1, upstreamHost: '127.0.0.1', upstreamPort: ports.node1, primarySlotName: 'node2', walLsn: null });
    expect(replica?.primaryConninfo).not.toContain(replPassword);

    const primary = await eventually(() => node1.runtimeState(), (s) => (s?.replicas.length ?? 0) === 1);
    expect(primary?.replicas[0]).toMatchObject({ applicationName: 'node2', state: 'streaming', syncState: 'async' });
    const slots = await query<{ active: boolean }>(ports.node1, "SELECT active FROM pg_replication_slots WHERE slot_name = 'node2'");
    expect(slots).toEqual([{ active: true }]);
  });

  it('promotes the replica to a writable primary on timeline 2, its synchronous standbys named in the same reload', async () => {
    await node2.promote({ synchronousStandbyNames: 'ANY 1 ("node1")' });
    const state = await node2.runtimeState();
    expect(state).toMatchObject({ inRecovery: false, timeline: 2, synchronousStandbyNames: 'ANY 1 ("node1")' });
    await node2.setSynchronousStandbyNames(''); // node1 streams no more: a commit would wait for it
    await query(ports.node2, 'INSERT INTO places VALUES (2, NULL)');
  });

  it('rewinds the diverged old primary and streams from the new one', async () => {
    await query(ports.node1, 'INSERT INTO places VALUES (99, NULL)'); // diverges from timeline 2
    await node1.stop('fast');
    expect(await node1.postmasterPid()).toBeNull();
    await node1.stop('fast'); // not running: no error

    await node2.syncSlots(['node1']);
    await node1.rewind(upstream('node2'));
    await node1.start(following('node1', upstream('node2')));

    const state = await eventually(() => node1.runtimeState(), (s) => s?.streaming === true && s.timeline === 2);
    expect(state).toMatchObject({ inRecovery: true, upstreamPort: ports.node2, primarySlotName: 'node1' });
    const rows = await eventually(() => query<{ id: number }>(ports.node1, 'SELECT id FROM places ORDER BY id'), (r) => r.length === 2);
    expect(rows).toEqual([{ id: 1 }, { id: 2 }]);
  });

  it('follows with new parameters and sets synchronous_standby_names without restarting', async () => {
    const pid = await node1.postmasterPid();
    const oddName = "it's \\ odd'; port = 1";
    await node1.follow(following('node1', upstream('node2'), { work_mem: '8MB', application_name: oddName }));
    const [row] = await query<{ work_mem: string; name: string; port: string }>(
      ports.node1,
      "SELECT current_setting('work_mem') AS work_mem, current_setting('application_name') AS name, current_setting('port') AS port",
    );
    expect(row).toEqual({ work_mem: '8MB', name: oddName, port: String(ports.node1) });
    expect(await node1.postmasterPid()).toBe(pid);

    await node2.setSynchronousStandbyNames('node1');
    expect((await node2.runtimeState())?.synchronousStandbyNames).toBe('node1');
    const primary = await eventually(() => node2.runtimeState(), (s) => s?.replicas[0]?.syncState === 'sync');
    expect(primary?.replicas[0]?.applicationName).toBe('node1');
    await query(ports.node2, 'INSERT INTO places VALUES (3, NULL)'); // the synchronous standby acknowledges
    await node2.setSynchronousStandbyNames('');
  });

  it("a follow that changes the retry interval alone returns once the agent's own session has read it", async () => {
    // the upstream stays the same: only a reload that waits for the files to be read (not for values) sees the change
    for (const shortRetry of [true, false, true, false]) {
      await node1.follow({ ...following('node1', upstream('node2')), shortRetry });
      expect((await node1.runtimeState())?.walRetrieveRetryMs).toBe(shortRetry ? 17 : 1000);
    }
  });

  it('keeps a running instance in the wanted role and fails with the log when a start fails', async () => {
    const pid = await node1.postmasterPid();
    await node1.start(following('node1', upstream('node2')));
    expect(await node1.postmasterPid()).toBe(pid);

    // node2 holds port 25433: a third instance there cannot bind it.
    const node3 = new LocalPostgres({ ...configFor(dir, 'node2'), postgres: { ...configFor(dir, 'node2').postgres, dataDir: join(dir, 'node3', 'postgres', 'data') } }, silentLogger());
    await node3.initdb();
    const failure = await node3.start(asPrimary('node3')).catch((err: unknown) => err);
    expect(failure).toMatchObject({ code: 'KEEL_POSTGRES_FAILED', message: expect.stringContaining('Address already in use') });
    expect(await node3.postmasterPid()).toBeNull();
  });

  it('starts again at once when the killed postmaster is still an unreaped zombie', async () => {
    const base = configFor(dir, 'node1');
    const config: NodeConfig = { ...base, name: 'node5', postgres: { ...base.postgres, port: 25435, dataDir: join(dir, 'node5', 'postgres', 'data') } };
    const node5 = new LocalPostgres(config, silentLogger());
    await node5.initdb();
    await node5.start(asPrimary('node5'));
    await node5.stop('fast');

    // A parent that never reaps: sh starts the postmaster, then becomes `sleep`.
    const runAs = process.getuid?.() === 0 ? { uid: Number(execFileSync('id', ['-u', 'postgres']).toString()), gid: Number(execFileSync('id', ['-g', 'postgres']).toString()) } : {};
    const parent = spawn('/bin/sh', ['-c', '"$0" -D "$1" >/dev/null 2>&1 & echo $!; exec sleep 60', join(config.postgres.binDir, 'postgres'), node5.dataDir], {
      stdio: ['ignore', 'pipe', 'ignore'],
      ...runAs,
    });
    try {
      const zombiePid = Number((await new Promise<Buffer>((resolve) => parent.stdout.once('data', resolve))).toString().trim());
      await eventually(() => query<{ ok: number }>(25435, 'SELECT 1 AS ok', 'postgres'), (rows) => rows.length === 1);
      process.kill(zombiePid, 'SIGKILL');
      await eventually(async () => isZombie(zombiePid), (z) => z);

      await node5.start(asPrimary('node5'));
      const pid = await node5.postmasterPid();
      expect(pid).not.toBeNull();
      expect(pid).not.toBe(zombiePid);
      expect(await query<{ ok: number }>(25435, 'SELECT 1 AS ok', 'postgres')).toEqual([{ ok: 1 }]);
    } finally {
      parent.kill('SIGKILL');
      await node5.stop('fast').catch(() => undefined);
      await node5.close();
    }
  });

  it('refuses a directory the postgres user cannot reach', async () => {
    expect(process.getuid?.(), 'the tests run as root (README), so that PostgreSQL runs as the postgres user').toBe(0);
    const closed = mkdtempSync('/tmp/keel-pg-closed-'); // 0700 root: postgres cannot enter
    try {
      const node3 = new LocalPostgres(configFor(closed, 'node1'), silentLogger());
      await expect(node3.initdb()).rejects.toMatchObject({ code: 'KEEL_DIR_UNUSABLE' });
    } finally {
      rmSync(closed, { recursive: true, force: true });
    }
  });

  it('parses pg_controldata of both nodes and never writes a password into files it owns', async () => {
    // A standby's control file names the timeline of its last restartpoint, which may still be 1.
    const replica = await node1.controlData();
    expect(replica?.clusterState).toBe('in archive recovery');
    expect([1, 2]).toContain(replica?.timeline);
    expect(replica?.minRecoveryLsn).toBeGreaterThan(0);
    expect(replica?.systemId).toBe((await node2.controlData())?.systemId);
    expect(await node2.controlData()).toMatchObject({ clusterState: 'in production', timeline: 2 });
    // read from the file itself, as pg_controldata reads it
    expectFileReadAsProgram(join(dir, 'node1', 'postgres', 'data'));
    expectFileReadAsProgram(join(dir, 'node2', 'postgres', 'data'));
    // the standby knows timeline 2 from its history file even while its control file may still say 1
    expect(await node1.newestTimeline()).toBe(2);
    expect(await node2.newestTimeline()).toBe(2);

    for (const name of ['node1', 'node2']) {
      const nodeDir = join(dir, name, 'postgres');
      const files = [
        join(nodeDir, 'data', 'postgresql.conf'),
        join(nodeDir, 'data', 'postgresql.auto.conf'),
        join(nodeDir, 'data', 'pg_hba.conf'),
        join(nodeDir, 'postgres.log'),
      ];
      for (const file of files) {
        const text = readFileSync(file, 'utf8');
        expect(text, file).not.toContain(superPassword);
        expect(text, file).not.toContain(replPassword);
        expect(text, file).not.toContain(rewindPassword);
        expect(text, file).not.toContain(appPassword);
      }
      expect(readdirSync(nodeDir).filter((f) => f.includes('pwfile'))).toEqual([]);
    }
  });

  it('a planned shutdown waits for transactions of sessions of the last 10 s, not for those of older sessions', async () => {
    const old = await openInTransaction();
    try {
      const [session] = (await node2.busyClients()).sessions;
      expect(session).toMatchObject({ pid: old.pid, inTransaction: true });
      const [began] = await query<{ ms: number }>(ports.node2, `SELECT (extract(epoch FROM xact_start) * 1000)::float8 AS ms FROM pg_stat_activity WHERE pid = ${old.pid}`);
      expect(session!.sinceMs).toBe(began!.ms);
      await new Promise((r) => setTimeout(r, 10_500));
      // still in its transaction, but connected over 10 s ago
      expect((await query<{ state: string }>(ports.node2, "SELECT state FROM pg_stat_activity WHERE state = 'idle in transaction'")).length).toBe(1);
      expect((await node2.busyClients()).sessions).toEqual([]);
      const young = await openInTransaction();
      try {
        expect((await node2.busyClients()).sessions.map((s) => s.pid)).toEqual([young.pid]);
      } finally {
        await young.client.end();
      }
    } finally {
      await old.client.end();
    }
  });

  it('the drain lets a session that commits without a break go once the transaction seen at the hold ends', async () => {
    const client = new pg.Client({ host: socketDir(dir, ports.node2), port: ports.node2, user: 'postgres', password: superPassword, database: 'app' });
    await client.connect();
    let writing = true;
    // back-to-back transactions of 50 ms each for at most 5 s: the session is never idle when looked at
    const loop = (async () => {
      for (const until = Date.now() + 5000; writing && Date.now() < until; ) await client.query('BEGIN; SELECT pg_sleep(0.05); COMMIT');
    })();
    try {
      let first = await node2.busyClients();
      for (let i = 0; i < 50 && first.sessions.length === 0; i++) first = await node2.busyClients();
      const atHold = stillInFlight(new Map(), first.sessions, first.nowMs);
      expect(atHold.size).toBe(1);
      const [seen] = [...atHold.values()];
      let tracked = atHold;
      const startedAt = Date.now();
      while (tracked.size > 0 && Date.now() - startedAt < 3000) {
        await new Promise((r) => setTimeout(r, 10));
        tracked = stillInFlight(tracked, (await node2.busyClients()).sessions, first.nowMs);
      }
      // done within a transaction or two
      expect(tracked.size).toBe(0);
      expect(Date.now() - startedAt).toBeLessThan(1000);
      // and a reading that finds the session busy again, in a newer transaction, lets it go too (a reading may also fall
      // between two of its transactions, when it shows as idle: that one ends the wait as well)
      let again = await node2.busyClients();
      for (let i = 0; i < 100 && !again.sessions.some((s) => s.pid === seen!.pid && s.inTransaction && s.sinceMs > seen!.sinceMs); i++) {
        again = await node2.busyClients();
      }
      expect(again.sessions.some((s) => s.pid === seen!.pid && s.inTransaction && s.sinceMs > seen!.sinceMs)).toBe(true);
      expect(stillInFlight(atHold, again.sessions, first.nowMs).size).toBe(0);
    } finally {
      writing = false;
      await loop;
      await client.end();
    }
  });

  it('the drain sees a backend still in its handshake, which pg_stat_activity does not show yet', async () => {
    const before = new Set((await node2.busyClients()).sessions.map((s) => s.pid));
    // an SSLRequest, its answer, then nothing: the backend waits for what comes next
    const socket = connect({ path: join(socketDir(dir, ports.node2), `.s.PGSQL.${ports.node2}`) });
    try {
      await once(socket, 'connect');
      socket.write(Buffer.from([0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f]));
      await once(socket, 'data');
      const busy = await node2.busyClients();
      const fresh = busy.sessions.filter((s) => !before.has(s.pid));
      expect(fresh).toEqual([{ pid: expect.any(Number), sinceMs: busy.nowMs, inTransaction: false }]);
      expect(await query<{ pid: number }>(ports.node2, `SELECT pid FROM pg_stat_activity WHERE pid = ${fresh[0]!.pid}`)).toEqual([]);
      socket.destroy();
      // gone with its client
      let still = true;
      for (const until = Date.now() + 5000; still && Date.now() < until; await new Promise((r) => setTimeout(r, 20))) {
        still = (await node2.busyClients()).sessions.some((s) => s.pid === fresh[0]!.pid);
      }
      expect(still).toBe(false);
    } finally {
      socket.destroy();
    }
  });

  it('the drain counts connections that wait for the postmaster to accept them, which no process shows yet', async () => {
    // the reading goes through the session already open: it needs no new connection
    expect((await node2.busyClients()).unaccepted).toBe(0);
    const postmaster = (await node2.postmasterPid())!;
    await freeze(postmaster);
    const socket = connect({ host: '127.0.0.1', port: ports.node2 });
    try {
      // the kernel completes the handshake and queues the connection; the frozen postmaster does not take it
      await once(socket, 'connect');
      expect((await node2.busyClients()).unaccepted).toBe(1);
    } finally {
      process.kill(postmaster, 'SIGCONT');
      socket.destroy();
    }
    await eventually(() => node2.busyClients(), (busy) => busy.unaccepted === 0);
  });

  async function openInTransaction(): Promise<{ client: pg.Client; pid: number }> {
    const client = new pg.Client({ host: socketDir(dir, ports.node2), port: ports.node2, user: 'postgres', password: superPassword, database: 'app' });
    await client.connect();
    await client.query('BEGIN');
    const { rows } = await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
    return { client, pid: rows[0]!.pid };
  }
});
