/**
 * The router's limits on both engines, against a real one-node cluster: a
 * client that does not send its whole first message within
 * --first-bytes-timeout is closed (a slowloris holds nothing for long), an
 * SSLRequest still reaches PostgreSQL unchanged, and an endpoint that holds
 * --max-connections closes each new connection at once.
 */
import { mkdtempSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import net from 'node:net';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { probePostgres } from '../../src/postgres/probe.js';
import { sleep } from '../../src/util/clock.js';
import { TestCluster } from '../support/cluster.js';
import { closedWithin, pgClient, queryOnce, rawConnect, startRouter, waitForLog, type RouterProcess } from './router-helpers.js';

const engines = ['builtin', 'haproxy'] as const;
type Engine = (typeof engines)[number];
const portBase = 19500;
const routerPorts: Record<Engine, [number, number]> = { builtin: [19520, 19521], haproxy: [19522, 19523] };
const firstBytesSeconds = 2;
const maxConnections = 4;
const sslRequest = Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);

let dir: string;
let tc: TestCluster;
const routers = {} as Record<Engine, RouterProcess>;

/** Everything the server sends until it closes or timeoutMs passes. */
function collect(socket: net.Socket): { bytes: () => Buffer } {
  const chunks: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  socket.on('error', () => undefined);
  return { bytes: () => Buffer.concat(chunks) };
}

/** The first byte PostgreSQL answers to an SSLRequest (S or N), read straight from `port`. */
async function sslAnswer(port: number): Promise<string | null> {
  const socket = await rawConnect(port);
  const seen = collect(socket);
  socket.write(sslRequest);
  const deadline = Date.now() + 10_000;
  while (seen.bytes().length === 0 && !socket.destroyed && Date.now() < deadline) await sleep(20);
  socket.destroy();
  return seen.bytes().length > 0 ? seen.bytes().subarray(0, 1).toString('latin1') : null;
}

/** What a new connection that sends an SSLRequest gets: PostgreSQL's answer, or a close (or reset) without one. */
function sslOutcome(port: number): Promise<'answered' | 'closed unanswered' | 'no answer within 10 s'> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    const done = (outcome: 'answered' | 'closed unanswered' | 'no answer within 10 s'): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(outcome);
    };
    const timer = setTimeout(() => done('no answer within 10 s'), 10_000);
    socket.once('connect', () => socket.write(sslRequest));
    socket.once('data', () => done('answered'));
    socket.once('error', () => done('closed unanswered'));
    socket.once('close', () => done('closed unanswered'));
  });
}

beforeAll(async () => {
  dir = mkdtempSync('/tmp/keel-router-limits-');
  tc = await TestCluster.start({ portBase, nodes: 1 });
  for (const engine of engines) {
    const [rwPort, roPort] = routerPorts[engine];
    routers[engine] = await startRouter({
      engine, ...tc.etcdAccess('router'), cluster: 'test', rwPort, roPort, logFile: join(dir, `router-${engine}.log`),
      extra: ['--first-bytes-timeout', String(firstBytesSeconds), '--max-connections', String(maxConnections), '--wait-timeout', '5'],
    });
  }
  // both endpoints of both routers serve (ro falls back to the leader of a one-node cluster)
  for (const engine of engines) {
    for (const port of routerPorts[engine]) await queryOnce(port, tc.login, 'SELECT 1', 30_000);
  }
});

afterAll(async () => {
  for (const engine of engines) await routers[engine]?.stop();
  await tc?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe.each(engines)('router limits (%s)', (engine) => {
  it.each([
    ['sends nothing', Buffer.alloc(0)],
    ['sends 3 bytes and stops', Buffer.from([0, 0, 0])],
    ['sends a startup header and stops', Buffer.from([0, 0, 0, 40, 0, 3, 0, 0])],
  ])('a client that %s is closed after the first-bytes timeout, on rw and ro', async (_what, bytes) => {
    for (const port of routerPorts[engine]) {
      const socket = await rawConnect(port);
      const seen = collect(socket);
      if (bytes.length > 0) socket.write(bytes);
      const closedAfterMs = await closedWithin(socket, 20_000);
      socket.destroy();
      expect(closedAfterMs, `port ${port}`).not.toBeNull();
      // closed by the timeout, not at once
      expect(closedAfterMs!).toBeGreaterThanOrEqual(firstBytesSeconds * 1000 - 500);
      expect(seen.bytes().length).toBe(0);
    }
  });

  it('an SSLRequest reaches PostgreSQL unchanged and is answered as PostgreSQL answers it', async () => {
    const direct = await sslAnswer(tc.pgPort('node1'));
    expect(['S', 'N']).toContain(direct);
    for (const port of routerPorts[engine]) {
      expect(await sslAnswer(port)).toBe(direct);
      expect(await probePostgres('127.0.0.1', port, 10_000)).toBe(true);
    }
  });

  it('a session that sent its startup in time is not cut by the timeout', async () => {
    const client = pgClient(routerPorts[engine][0], tc.login);
    await client.connect();
    try {
      await sleep(firstBytesSeconds * 1000 + 1000);
      expect((await client.query('SELECT 42 AS n')).rows).toEqual([{ n: 42 }]);
    } finally {
      await client.end().catch(() => undefined);
    }
  });

  it('an endpoint holding --max-connections closes a new connection at once; ro has its own count; one gone lets one in', async () => {
    const [rwPort, roPort] = routerPorts[engine];
    const held: pg.Client[] = [];
    expect(await sslOutcome(rwPort)).toBe('answered');
    try {
      for (let i = 0; i < maxConnections; i++) {
        const client = pgClient(rwPort, tc.login);
        await client.connect();
        await client.query('SELECT 1');
        held.push(client);
      }
      // refused: closed (HAProxy resets it) without PostgreSQL's answer to the SSLRequest
      expect(await sslOutcome(rwPort)).toBe('closed unanswered');
      const refusedClient = pgClient(rwPort, tc.login, 10_000);
      await expect(refusedClient.connect()).rejects.toThrow();
      await refusedClient.end().catch(() => undefined);
      expect(await queryOnce(roPort, tc.login, 'SELECT 1 AS n')).toEqual([{ n: 1 }]);
      if (engine === 'builtin') await waitForLog(routers.builtin, /rw: refused \d+ connection\(s\): the endpoint holds 4/, 10_000);

      await held.pop()!.end();
      // the router sees the close within moments; bounded retries
      let admitted = false;
      for (let attempt = 0; attempt < 50 && !admitted; attempt++) {
        admitted = await queryOnce(rwPort, tc.login, 'SELECT 1').then(() => true, () => false);
        if (!admitted) await sleep(100);
      }
      expect(admitted).toBe(true);
    } finally {
      for (const client of held) await client.end().catch(() => undefined);
    }
  });
});
