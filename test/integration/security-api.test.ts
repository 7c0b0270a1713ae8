/**
 * The agent's REST API secured, on real sockets against a real etcd: HTTPS
 * with node certificates issued by a cluster CA (plain HTTP and an unknown CA
 * fail), per-node tokens checked before a body is read (a 60 MB body is
 * answered 401 and the connection closed long before it is sent), readAuth,
 * the timeouts (a slowloris is closed) and the connection cap, a certificate
 * reloaded in place; and the router's first-bytes timeout against a slowloris
 * on rw and ro (builtin engine, a child process).
 *
 * The APIs run in this process over a stand-in agent handle, each with its
 * own EtcdDcs: the cluster harness starts PostgreSQL too, which these checks
 * do not need. Ports 19530-19536.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import https from 'node:https';
import net from 'node:net';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import tls from 'node:tls';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ApiLimits } from '../../src/api/limits.js';
import { startApi, type AgentHandle, type RunningApi } from '../../src/api/server.js';
import type { TlsFiles } from '../../src/config/schema.js';
import { EtcdDcs } from '../../src/dcs/etcd.js';
import { startEtcd, stopEtcd, type RunningEtcd } from '../../src/dcs/etcd-server.js';
import { localServerNames, nodeApiToken, placeholderSecrets, type Secrets } from '../../src/providers/local-layout.js';
import { ensureCertificate, ensureCertificateAuthority, issueCertificate } from '../../src/tls/pki.js';
import { sleep, systemClock } from '../../src/util/clock.js';
import { silentLogger } from '../../src/util/log.js';
import { apiRequest } from '../support/api-client.js';
import { closedWithin, rawConnect, startRouter, type RouterProcess } from './router-helpers.js';

const ports = { etcdClient: 19530, etcdPeer: 19531, node1: 19532, node2: 19533, rw: 19535, ro: 19536 };
/** node1: short timeouts, for the slowloris checks */
const node1Limits: ApiLimits = { requestTimeoutMs: 4000, headersTimeoutMs: 2000, idleTimeoutMs: 1500, connectionTimeoutMs: 10_000, maxConnections: 64 };
/** node2: readAuth and a small connection cap, with time enough to hold the connections */
const node2Limits: ApiLimits = { requestTimeoutMs: 30_000, headersTimeoutMs: 20_000, idleTimeoutMs: 5000, connectionTimeoutMs: 30_000, maxConnections: 4 };
/** Node checks the header and request timeouts every second at most: a close may come this much later */
const checkSlackMs = 1000 + 1500;
const firstBytesSeconds = 2;
const sixtyMegabytes = 60 * 1024 * 1024;

let dir: string;
let etcd: RunningEtcd | null = null;
const dcss: EtcdDcs[] = [];
const apis: Record<'node1' | 'node2', RunningApi> = {} as Record<'node1' | 'node2', RunningApi>;
let router: RouterProcess | null = null;
let caFile: string;
let nodeFiles: Record<'node1' | 'node2', TlsFiles>;
let secrets: Secrets;
let restarts = 0;
/** node2's log lines */
const node2Log: string[] = [];

const url = (name: 'node1' | 'node2', path: string) => `https://127.0.0.1:${ports[name]}${path}`;
const token = (name: string) => nodeApiToken(secrets, name);

function stubHandle(): AgentHandle {
  return {
    state: 'replica',
    lastReason: 'following leader node9',
    lastSnapshot: null,
    lease: { id: null, lastRenewalMs: null, renewals: 0, renewalFailures: 0, deadlineMs: () => Number.NEGATIVE_INFINITY },
    decisionCounts: new Map(),
    promotions: 0,
    runManual: async () => {
      restarts += 1;
    },
  };
}

/** A TLS connection verified against the cluster CA, resolved once the handshake is done. */
function tlsConnect(port: number, timeoutMs = 5000): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, ca: readCa() });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no TLS connection to ${port} within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      resolve(socket);
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

const readCa = (): Buffer => readFileSync(caFile);

/** Everything the server sends on `socket`, as text. */
function received(socket: net.Socket): () => string {
  let text = '';
  socket.on('data', (chunk: Buffer) => (text += chunk.toString('latin1')));
  socket.on('error', () => undefined);
  return () => text;
}

/** Resolves on 'drain' or 'close', or after waitMs: a writer that waits no longer than that each time. */
function drainedOrClosed(socket: net.Socket, waitMs: number): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      socket.off('drain', done);
      socket.off('close', done);
      resolve();
    };
    const timer = setTimeout(done, waitMs);
    socket.once('drain', done);
    socket.once('close', done);
  });
}

/**
 * Sends `head`, then up to 60 MB of body in 64 KB pieces as fast as the socket takes them, until the
 * server closes the connection (or 30 s pass). Returns what the server answered and how many body bytes
 * had been handed to the socket when it closed.
 */
async function pushBigBody(head: string, chunked: boolean): Promise<{ answer: string; sentBytes: number; closedAfterMs: number | null }> {
  const socket = await tlsConnect(ports.node1);
  const answer = received(socket);
  let closed = false;
  socket.once('close', () => (closed = true));
  const started = Date.now();
  socket.write(head);
  const piece = Buffer.alloc(64 * 1024, 0x20);
  const framed = chunked ? Buffer.concat([Buffer.from(`${piece.length.toString(16)}\r\n`), piece, Buffer.from('\r\n')]) : piece;
  let sentBytes = 0;
  while (sentBytes < sixtyMegabytes && !closed && !socket.destroyed && Date.now() - started < 30_000) {
    const more = socket.write(framed);
    sentBytes += piece.length;
    if (!more) await drainedOrClosed(socket, 500);
  }
  const closedAfterMs = closed ? Date.now() - started : await closedWithin(socket, 10_000).then((ms) => (ms === null ? null : Date.now() - started));
  socket.destroy();
  return { answer: answer(), sentBytes, closedAfterMs };
}

/** Writes `text` one byte a second until the server closes; the milliseconds that took (null: open after timeoutMs). */
async function slowloris(socket: net.Socket, text: string, timeoutMs = 30_000): Promise<{ closedAfterMs: number | null; answer: string }> {
  const answer = received(socket);
  let next = 0;
  const write = () => {
    if (!socket.destroyed && next < text.length) socket.write(text[next++]!, 'latin1');
  };
  write();
  const timer = setInterval(write, 1000);
  try {
    const closedAfterMs = await closedWithin(socket, timeoutMs);
    return { closedAfterMs, answer: answer() };
  } finally {
    clearInterval(timer);
    socket.destroy();
  }
}

beforeAll(async () => {
  dir = mkdtempSync('/tmp/keel-security-api-');
  etcd = await startEtcd({ name: 'security', dataDir: join(dir, 'etcd'), clientPort: ports.etcdClient, peerPort: ports.etcdPeer, logFile: join(dir, 'etcd.log') });

  mkdirSync(join(dir, 'tls'));
  const ca = await ensureCertificateAuthority({ cert: join(dir, 'tls', 'ca.crt'), key: join(dir, 'tls', 'ca.key') }, 'keel test CA');
  caFile = ca.cert;
  nodeFiles = {} as Record<'node1' | 'node2', TlsFiles>;
  for (const name of ['node1', 'node2'] as const) {
    const pair = { cert: join(dir, 'tls', `${name}.crt`), key: join(dir, 'tls', `${name}.key`) };
    await ensureCertificate(ca, pair, { commonName: 'test-agent', names: localServerNames, usage: 'both' });
    nodeFiles[name] = { ca: ca.cert, ...pair };
  }
  secrets = { ...placeholderSecrets, apiToken: randomBytes(32).toString('base64url') };

  for (const [name, readAuth, limits] of [['node1', false, node1Limits], ['node2', true, node2Limits]] as const) {
    const dcs = new EtcdDcs({ endpoints: [etcd.endpoint], cluster: 'test', requestTimeoutMs: 2000, logger: silentLogger() });
    dcss.push(dcs);
    const logger = name === 'node2' ? pino(new Writable({ write: (chunk, _enc, done) => (node2Log.push(String(chunk)), done()) })) : silentLogger();
    const options = { node: { name, cluster: 'test', tags: { nofailover: false } }, token: token(name), readAuth, dcs, clock: systemClock, logger };
    apis[name] = await startApi(stubHandle(), options, { listen: `127.0.0.1:${ports[name]}`, tls: nodeFiles[name], limits });
  }

  router = await startRouter({
    engine: 'builtin', etcd: etcd.endpoint, cluster: 'test', rwPort: ports.rw, roPort: ports.ro, logFile: join(dir, 'router.log'),
    extra: ['--first-bytes-timeout', String(firstBytesSeconds)],
  });
});

afterAll(async () => {
  await router?.stop();
  for (const api of Object.values(apis)) await api.close().catch(() => undefined);
  for (const dcs of dcss) await dcs.close().catch(() => undefined);
  if (etcd !== null) await stopEtcd(etcd.pid);
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('HTTPS', () => {
  it('serves the node certificate, verified against the cluster CA; GET /cluster reads etcd', async () => {
    const res = await apiRequest(url('node1', '/cluster'), { caFile });
    expect(res.status).toBe(200);
    expect(res.json).toMatchObject({ scope: 'test', leader: null, members: [] });
    expect(apis.node1.scheme).toBe('https');
  });

  it('plain HTTP to the HTTPS port gets no answer', async () => {
    await expect(apiRequest(`http://127.0.0.1:${ports.node1}/health`, { timeoutMs: 10_000 })).rejects.toThrow(/socket hang up|ECONNRESET|EPIPE/);
  });

  it('a client that does not trust the cluster CA refuses the connection', async () => {
    const outcome = await new Promise<string>((resolve) => {
      const req = https.get(url('node1', '/health'), { agent: false, timeout: 10_000 }, () => resolve('answered'));
      req.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
      req.on('timeout', () => req.destroy(new Error('timeout')));
    });
    expect(outcome).toMatch(/SELF_SIGNED|UNABLE_TO_VERIFY|CERT/);
  });

  it('a certificate issued again is served to new connections after reloadTls, without a restart', async () => {
    const before = await tlsConnect(ports.node1);
    const oldPrint = before.getPeerX509Certificate()!.fingerprint256;
    await issueCertificate({ cert: caFile, key: join(dir, 'tls', 'ca.key') }, nodeFiles.node1, { commonName: 'test-agent', names: localServerNames, usage: 'both' });
    expect(apis.node1.reloadTls()).toBe(true);
    const after = await tlsConnect(ports.node1);
    expect(after.getPeerX509Certificate()!.fingerprint256).not.toBe(oldPrint);
    before.destroy();
    after.destroy();
    expect((await apiRequest(url('node1', '/health'), { caFile })).status).toBe(503);
  });
});

describe('tokens', () => {
  it('a write needs this node\'s own token: 401 without, 403 with another node\'s, 202 with its own', async () => {
    const none = await apiRequest(url('node1', '/restart'), { method: 'POST', caFile });
    expect(none.status).toBe(401);
    expect(none.json).toMatchObject({ code: 'KEEL_UNAUTHORIZED' });
    const other = await apiRequest(url('node1', '/restart'), { method: 'POST', caFile, token: token('node2') });
    expect(other.status).toBe(403);
    expect(other.json).toMatchObject({ code: 'KEEL_FORBIDDEN' });
    expect(restarts).toBe(0);
    expect((await apiRequest(url('node1', '/restart'), { method: 'POST', caFile, token: token('node1') })).status).toBe(202);
    expect(restarts).toBe(1);
  });

  it('reads are open without readAuth and need the token with it, health checks included', async () => {
    expect((await apiRequest(url('node1', '/status'), { caFile })).status).toBe(200);
    for (const path of ['/status', '/health', '/cluster', '/config', '/metrics']) {
      expect((await apiRequest(url('node2', path), { caFile })).status, path).toBe(401);
      expect((await apiRequest(url('node2', path), { caFile, token: token('node1') })).status, path).toBe(403);
      expect((await apiRequest(url('node2', path), { caFile, token: token('node2') })).status, path).not.toBe(401);
    }
    expect((await apiRequest(url('node2', '/health'), { method: 'OPTIONS', caFile })).status).toBe(401);
  });

  it.each([
    ['Content-Length', false],
    ['chunked', true],
  ])('a 60 MB body (%s) without a token is answered 401 and its connection closed long before it is sent', async (_framing, chunked) => {
    const length = chunked ? 'Transfer-Encoding: chunked' : `Content-Length: ${sixtyMegabytes}`;
    const head = `POST /switchover HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n${length}\r\n\r\n`;
    const outcome = await pushBigBody(head, chunked);
    expect(outcome.answer).toMatch(/^HTTP\/1\.1 401 /);
    expect(outcome.answer.toLowerCase()).toContain('connection: close');
    expect(outcome.closedAfterMs).not.toBeNull();
    // the kernel's socket buffers take a few MB before the server's close is seen; never the 60 MB
    expect(outcome.sentBytes).toBeLessThan(sixtyMegabytes / 4);
    console.log(`60 MB body (${_framing}) without a token: closed after ${outcome.closedAfterMs} ms, ${(outcome.sentBytes / 1024 / 1024).toFixed(1)} MB handed to the socket`);
  });
});

describe('timeouts and the connection cap', () => {
  it('a slowloris sending its headers one byte a second is closed within the headers timeout', async () => {
    const socket = await tlsConnect(ports.node1);
    const { closedAfterMs, answer } = await slowloris(socket, `GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ${'a'.repeat(60)}\r\n\r\n`);
    expect(closedAfterMs).not.toBeNull();
    expect(closedAfterMs!).toBeGreaterThanOrEqual(node1Limits.headersTimeoutMs - 500);
    expect(closedAfterMs!).toBeLessThanOrEqual(node1Limits.headersTimeoutMs + checkSlackMs);
    expect(answer).toMatch(/^HTTP\/1\.1 408 /);
  });

  it('a TCP connection that never starts its TLS handshake, or sends it a byte a second, is closed within the headers timeout', async () => {
    for (const text of ['', '\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03']) {
      const socket = await rawConnect(ports.node1);
      const { closedAfterMs } = await slowloris(socket, text);
      expect(closedAfterMs, JSON.stringify(text)).not.toBeNull();
      expect(closedAfterMs!).toBeLessThanOrEqual(node1Limits.headersTimeoutMs + checkSlackMs);
    }
  });

  it('a body sent one byte a second is closed within the request timeout', async () => {
    const socket = await tlsConnect(ports.node1);
    socket.write(`POST /switchover HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${token('node1')}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n`);
    const { closedAfterMs, answer } = await slowloris(socket, `{"candidate": "${'x'.repeat(80)}"}`);
    expect(closedAfterMs).not.toBeNull();
    expect(closedAfterMs!).toBeGreaterThanOrEqual(node1Limits.requestTimeoutMs - 1000);
    expect(closedAfterMs!).toBeLessThanOrEqual(node1Limits.requestTimeoutMs + checkSlackMs);
    expect(answer).toMatch(/^HTTP\/1\.1 408 /);
  });

  it('a kept-alive connection with no next request is closed after the idle timeout', async () => {
    const socket = await tlsConnect(ports.node1);
    const answer = received(socket);
    socket.write('GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
    for (let i = 0; i < 100 && !answer().includes('"name"'); i++) await sleep(50);
    expect(answer()).toMatch(/^HTTP\/1\.1 200 /);
    const closedAfterMs = await closedWithin(socket, 20_000);
    socket.destroy();
    expect(closedAfterMs).not.toBeNull();
    expect(closedAfterMs!).toBeLessThanOrEqual(node1Limits.idleTimeoutMs + checkSlackMs);
  });

  it('connections beyond maxConnections are closed at once; one gone lets one in', async () => {
    const held: tls.TLSSocket[] = [];
    try {
      for (let i = 0; i < node2Limits.maxConnections; i++) held.push(await tlsConnect(ports.node2));
      const started = Date.now();
      await expect(tlsConnect(ports.node2)).rejects.toThrow(/socket hang up|ECONNRESET|disconnected/);
      expect(Date.now() - started).toBeLessThan(2000);
      expect(node2Log.join('')).toContain(`refused 1 connection(s): the REST API holds ${node2Limits.maxConnections}`);
      held.pop()!.destroy();
      let admitted = false;
      for (let attempt = 0; attempt < 50 && !admitted; attempt++) {
        admitted = await tlsConnect(ports.node2).then((s) => (held.push(s), true), () => false);
        if (!admitted) await sleep(100);
      }
      expect(admitted).toBe(true);
    } finally {
      for (const socket of held) socket.destroy();
    }
  });
});

describe('the router against a slowloris (builtin engine)', () => {
  it('a startup message sent one byte a second is closed after --first-bytes-timeout, on rw and ro', async () => {
    const startup = Buffer.concat([Buffer.from([0, 0, 0, 40, 0, 3, 0, 0]), Buffer.from('user\0postgres\0database\0app\0\0', 'latin1')]).toString('latin1');
    const outcomes = await Promise.all([ports.rw, ports.ro].map(async (port) => slowloris(await rawConnect(port), startup, 20_000)));
    for (const [i, { closedAfterMs, answer }] of outcomes.entries()) {
      expect(closedAfterMs, `port ${[ports.rw, ports.ro][i]}`).not.toBeNull();
      expect(closedAfterMs!).toBeGreaterThanOrEqual(firstBytesSeconds * 1000 - 500);
      expect(closedAfterMs!).toBeLessThanOrEqual(firstBytesSeconds * 1000 + 2000);
      expect(answer).toBe('');
    }
  });
});
