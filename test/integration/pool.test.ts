/**
 * The router's pooled rw endpoint (PgBouncer 1.18, transaction mode) on a real
 * 3-node cluster (etcd, PostgreSQL): clients that keep their connection to the
 * pool write through a planned switchover with no error and no lost write,
 * while a client straight on the old leader is refused writes once it is
 * demoted; the pool follows an unplanned failover; TLS and SCRAM are required;
 * keel status names its DSN and no secret reaches a log.
 * Ports 20500-20549.
 */
import { spawn } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { portOffsets } from '../../src/providers/local-layout.js';
import { sleep } from '../../src/util/clock.js';
import { isPortFree } from '../../src/util/ports.js';
import { loginConfig } from '../../src/workload/connect.js';
import { apiRequest } from '../support/api-client.js';
import { TestCluster } from '../support/cluster.js';

const portBase = 20500;
const poolPort = portBase + portOffsets.routerPool;

/** `keel` without blocking this process's event loop (the writers go on meanwhile). */
function keelAsync(args: string[], timeoutMs = 120_000): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['bin/keel.js', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('exit', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}

/** The SHA-256 fingerprint of the certificate the pool presents, after PostgreSQL's SSLRequest, verified against the CA. */
function servedFingerprint(ca: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(poolPort, '127.0.0.1');
    const timer = setTimeout(() => socket.destroy(new Error('no TLS answer within 5 s')), 5000);
    socket.once('error', reject);
    socket.once('connect', () => socket.write(Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])));
    socket.once('data', (answer) => {
      if (answer.toString() !== 'S') return reject(new Error(`the pool answered ${JSON.stringify(answer.toString())} to SSLRequest`));
      const secure = tls.connect({ socket, ca: readFileSync(ca), servername: 'localhost' }, () => {
        clearTimeout(timer);
        resolve(secure.getPeerX509Certificate()!.fingerprint256);
        secure.destroy();
      });
      secure.once('error', reject);
    });
  });
}

interface Tally {
  acked: number[];
  /** when each acknowledgement came (ms), for the longest pause */
  ackedAtMs: number[];
  errors: string[];
}

/** The longest time without any acknowledged write, in seconds. */
function longestPause(tally: Tally): number {
  const times = [...tally.ackedAtMs].sort((a, b) => a - b);
  return times.slice(1).reduce((longest, t, i) => Math.max(longest, t - times[i]!), 0) / 1000;
}

/**
 * Writers that each keep one connection to the pool: even ones commit one INSERT per statement, odd ones
 * BEGIN, INSERT, INSERT, COMMIT in four round trips. After an error a writer connects again.
 */
function startWriters(tc: TestCluster, count: number, firstId: number): { tally: Tally; stop: () => Promise<void> } {
  const tally: Tally = { acked: [], ackedAtMs: [], errors: [] };
  let stopped = false;
  const deadline = Date.now() + 180_000;
  const run = async (writer: number): Promise<void> => {
    let client: pg.Client | null = null;
    let next = firstId + writer * 1_000_000;
    for (let i = 0; i < 100_000 && !stopped && Date.now() < deadline; i++) {
      try {
        if (client === null) {
          client = new pg.Client({ ...loginConfig(tc.login, '127.0.0.1', poolPort), connectionTimeoutMillis: 5000, query_timeout: 20_000 });
          client.on('error', () => undefined);
          await client.connect();
        }
        const ids = writer % 2 === 0 ? [next] : [next, next + 1];
        next += ids.length;
        if (ids.length === 1) await client.query('INSERT INTO pool_writes (id, writer) VALUES ($1, $2)', [ids[0], writer]);
        else {
          await client.query('BEGIN');
          for (const id of ids) await client.query('INSERT INTO pool_writes (id, writer) VALUES ($1, $2)', [id, writer]);
          await client.query('COMMIT');
        }
        tally.acked.push(...ids);
        tally.ackedAtMs.push(Date.now());
      } catch (err) {
        tally.errors.push(`writer ${writer}: ${(err as Error).message}`);
        await client?.end().catch(() => undefined);
        client = null;
        await sleep(100);
      }
      await sleep(10);
    }
    await client?.end().catch(() => undefined);
  };
  const running = Promise.all(Array.from({ length: count }, (_, w) => run(w)));
  return {
    tally,
    stop: async () => {
      stopped = true;
      await running;
    },
  };
}

/** Every acknowledged id that the table lacks. */
async function lost(tc: TestCluster, tally: Tally): Promise<number[]> {
  const rows = await tc.query<{ id: string }>(poolPort, 'SELECT id FROM pool_writes');
  const present = new Set(rows.map((r) => Number(r.id)));
  return tally.acked.filter((id) => !present.has(id));
}

describe('pooled rw endpoint (PgBouncer)', () => {
  let tc: TestCluster;
  beforeAll(async () => {
    tc = await TestCluster.start({ portBase, nodes: 3 });
    await tc.untilWritable(poolPort, 'CREATE TABLE IF NOT EXISTS pool_writes (id bigint PRIMARY KEY, writer int NOT NULL, at timestamptz NOT NULL DEFAULT now())', 30_000);
  }, 240_000);
  afterAll(async () => {
    await tc?.stop();
    // the router took its PgBouncer with it
    expect(await isPortFree('127.0.0.1', poolPort)).toBe(true);
  }, 120_000);

  it('requires TLS and the password; keel status names the DSN and no secret', async () => {
    const plain = new pg.Client({ ...loginConfig({ user: tc.login.user, password: tc.login.password }, '127.0.0.1', poolPort), connectionTimeoutMillis: 5000 });
    plain.on('error', () => undefined);
    await expect(plain.connect()).rejects.toThrow(/SSL required|TLS/i);
    const wrong = new pg.Client({ ...loginConfig({ ...tc.login, password: 'not-the-password' }, '127.0.0.1', poolPort), connectionTimeoutMillis: 5000 });
    wrong.on('error', () => undefined);
    await expect(wrong.connect()).rejects.toThrow(/password authentication failed|SASL/i);
    expect((await tc.query<{ one: number }>(poolPort, 'SELECT 1 AS one'))[0]!.one).toBe(1);

    const json = await keelAsync(['status', '--dir', tc.layout.dir, '--json']);
    expect(json.status).toBe(0);
    const pooled = (JSON.parse(json.stdout) as { connection: { pooled: string } }).connection.pooled;
    expect(pooled).toBe(`postgresql://app@127.0.0.1:${poolPort}/app?sslmode=verify-full&sslrootcert=${encodeURIComponent(tc.layout.caFiles.cert)}`);
    const text = await keelAsync(['status', '--dir', tc.layout.dir]);
    expect(text.stdout).toContain(`pooled rw ${pooled}`);
    for (const secret of Object.values(tc.layout.readSecrets())) {
      expect(json.stdout + text.stdout).not.toContain(secret);
      expect(readFileSync(tc.layout.routerLog, 'utf8')).not.toContain(secret);
    }
  });

  it('persistent clients write through a switchover with no error and no lost write; the old leader refuses writes', async () => {
    const from = await tc.leader();
    await tc.waitFor('both replicas streaming', (v) => v.members.filter((m) => m.role === 'replica' && m.streaming).length === 2, 60_000);
    const to = (await tc.view()).members.find((m) => m.name !== from.name && m.streaming)!.name;
    const writers = startWriters(tc, 6, 1);
    await sleep(2000);
    const before = writers.tally.acked.length;
    const switchover = await keelAsync(['switchover', '--dir', tc.layout.dir, '--to', to]);
    expect(switchover.stderr).toBe('');
    expect(switchover.status).toBe(0);
    await tc.waitFor(`${to} leading`, (v) => v.leader?.value.name === to, 30_000);
    // writes go on through the new leader for a while
    const afterSwitch = writers.tally.acked.length;
    await sleep(2000);
    await writers.stop();
    console.log(`switchover through the pool: ${writers.tally.errors.length} client error(s), ${writers.tally.acked.length} writes, longest pause ${longestPause(writers.tally).toFixed(2)} s`);
    expect(writers.tally.errors).toEqual([]);
    expect(writers.tally.acked.length).toBeGreaterThan(afterSwitch);
    expect(before).toBeGreaterThan(0);
    expect(await lost(tc, writers.tally)).toEqual([]);
    // a client straight on the old leader: a replica now, it refuses writes
    await tc.waitFor(`${from.name} following ${to}`, (v) => v.members.some((m) => m.name === from.name && m.role === 'replica'), 60_000);
    await expect(tc.query(from.pgPort, 'INSERT INTO pool_writes (id, writer) VALUES (-1, -1)')).rejects.toThrow(/read-only transaction/);
    const router = readFileSync(tc.layout.routerLog, 'utf8');
    expect(router).toMatch(/pool paused/);
    expect(router).toContain(`pool -> ${to}`);
    expect(router).toMatch(/pool resumed/);
    // the router's GET /status says where the pool points and that it is no longer paused
    const status = await apiRequest(`https://127.0.0.1:${portBase + portOffsets.routerApi}/status`, { caFile: tc.layout.caFiles.cert, timeoutMs: 5000 });
    expect(status.json.pool).toMatchObject({ paused: false, target: expect.stringContaining(to) });
    expect(status.json.pool.pauses).toBeGreaterThan(0);
  }, 180_000);

  it('serves a renewed certificate after keel certs rotate, without a restart', async () => {
    const fingerprint = () => new X509Certificate(readFileSync(tc.layout.webServerFiles.cert)).fingerprint256;
    const before = fingerprint();
    expect(await servedFingerprint(tc.layout.caFiles.cert)).toBe(before);
    const client = new pg.Client({ ...loginConfig(tc.login, '127.0.0.1', poolPort), connectionTimeoutMillis: 5000 });
    client.on('error', () => undefined);
    await client.connect();
    const rotate = await keelAsync(['certs', 'rotate', '--dir', tc.layout.dir]);
    expect(rotate.status, rotate.stderr).toBe(0);
    expect(fingerprint()).not.toBe(before);
    const deadline = Date.now() + 10_000;
    let served = await servedFingerprint(tc.layout.caFiles.cert);
    while (served !== fingerprint() && Date.now() < deadline) {
      await sleep(200);
      served = await servedFingerprint(tc.layout.caFiles.cert);
    }
    expect(served).toBe(fingerprint());
    // a connection made before goes on
    expect((await client.query<{ one: number }>('SELECT 1 AS one')).rows[0]!.one).toBe(1);
    await client.end();
  });

  it('follows an unplanned failover: writes come back through the pool, none acknowledged is lost', async () => {
    const dead = await tc.leader();
    await tc.waitFor('both replicas streaming', (v) => v.members.filter((m) => m.role === 'replica' && m.streaming).length === 2, 60_000);
    const writers = startWriters(tc, 4, 10_000_000);
    await sleep(1500);
    const result = await tc.local.provider.fence(dead.name);
    expect(result.confirmed).toBe(true);
    const killedAt = writers.tally.acked.length;
    const next = await tc.waitFor('a new leader', (v) => v.leader !== null && v.leader.value.name !== dead.name, 60_000);
    const backBy = Date.now() + 30_000;
    while (writers.tally.acked.length <= killedAt + 20 && Date.now() < backBy) await sleep(100);
    await writers.stop();
    expect(writers.tally.acked.length, `writes after the failover to ${next.leader!.value.name}`).toBeGreaterThan(killedAt + 20);
    expect(await lost(tc, writers.tally)).toEqual([]);
    console.log(`unplanned failover through the pool: ${writers.tally.errors.length} client error(s), longest pause ${longestPause(writers.tally).toFixed(2)} s`, writers.tally.errors.slice(0, 3));
  }, 180_000);
});
