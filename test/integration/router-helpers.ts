/**
 * Routers as child processes (`bin/keel.js router`, the compiled code), plus
 * small socket and client helpers for the router's integration test. Every
 * wait is bounded; every process is stopped by its PID.
 */
import { spawn, spawnSync } from 'node:child_process';
import { openSync, closeSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import type { TlsFiles } from '../../src/config/schema.js';
import { loginConfig, type Login } from '../../src/workload/connect.js';
import { sleep } from '../../src/util/clock.js';
import { isAlive, waitForExit } from '../../src/util/process.js';

export const keelBin = fileURLToPath(new URL('../../bin/keel.js', import.meta.url));

export interface RouterProcess {
  engine: string;
  pid: number;
  rwPort: number;
  roPort: number;
  logFile: string;
  log(): string;
  /** SIGTERM, then SIGKILL after 10 s; resolves with the exit code (null when it had to be killed) */
  stop(): Promise<number | null>;
}

export async function startRouter(options: {
  /** auto: no --engine flag, the router's default */
  engine: 'builtin' | 'haproxy' | 'auto';
  etcd: string;
  /** the router's client certificate, for an etcd that speaks TLS */
  etcdTls?: TlsFiles;
  cluster: string;
  rwPort: number;
  roPort: number;
  logFile: string;
  extra?: string[];
}): Promise<RouterProcess> {
  const args = [keelBin, 'router', '--etcd', options.etcd, '--cluster', options.cluster, ...(options.engine === 'auto' ? [] : ['--engine', options.engine])];
  if (options.etcdTls !== undefined) args.push('--etcd-cacert', options.etcdTls.ca, '--etcd-cert', options.etcdTls.cert, '--etcd-key', options.etcdTls.key);
  args.push('--rw', `127.0.0.1:${options.rwPort}`, '--ro', `127.0.0.1:${options.roPort}`, ...(options.extra ?? []));
  const fd = openSync(options.logFile, 'a');
  const child = spawn(process.execPath, args, { stdio: ['ignore', fd, fd] });
  closeSync(fd);
  let exitCode: number | null = null;
  let exited = false;
  child.once('exit', (code) => {
    exited = true;
    exitCode = code;
  });
  const log = (): string => readFileSync(options.logFile, 'utf8');
  const router: RouterProcess = {
    engine: options.engine,
    pid: child.pid!,
    rwPort: options.rwPort,
    roPort: options.roPort,
    logFile: options.logFile,
    log,
    async stop() {
      if (!exited && isAlive(child.pid!)) {
        child.kill('SIGTERM');
        if (!(await waitForExit(child.pid!, 10_000))) {
          child.kill('SIGKILL');
          await waitForExit(child.pid!, 5000);
          return null;
        }
      }
      for (let i = 0; i < 20 && !exited; i++) await sleep(50);
      return exitCode;
    },
  };
  const deadline = Date.now() + 20_000;
  while (!log().includes('router listening')) {
    if (exited) throw new Error(`router (${options.engine}) exited with ${exitCode}:\n${log()}`);
    if (Date.now() > deadline) {
      await router.stop();
      throw new Error(`router (${options.engine}) did not listen within 20 s:\n${log()}`);
    }
    await sleep(100);
  }
  return router;
}

/** Runs `keel ...` to completion (for usage errors); bounded to 20 s. */
export function runKeel(args: string[]): { status: number | null; stderr: string } {
  const result = spawnSync(process.execPath, [keelBin, ...args], { encoding: 'utf8', timeout: 20_000 });
  return { status: result.status, stderr: result.stderr };
}

/** Waits until the log, from byte `from` on (e.g. its length before a change), matches. */
export async function waitForLog(router: RouterProcess, pattern: RegExp, timeoutMs: number, from = 0): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pattern.test(router.log().slice(from))) {
    if (Date.now() > deadline) throw new Error(`router (${router.engine}) log never matched ${pattern}:\n${router.log().slice(-3000)}`);
    await sleep(100);
  }
}

export function pgClient(port: number, login: Login, connectTimeoutMs = 30_000): pg.Client {
  const client = new pg.Client({ ...loginConfig(login, '127.0.0.1', port), connectionTimeoutMillis: connectTimeoutMs });
  // an unexpected close is asserted on through the client's state; without a listener it would crash the run
  client.on('error', () => undefined);
  return client;
}

/** Connects, runs one query, disconnects; the rows. */
export async function queryOnce<T extends pg.QueryResultRow>(port: number, login: Login, sql: string, connectTimeoutMs = 10_000): Promise<T[]> {
  const client = pgClient(port, login, connectTimeoutMs);
  await client.connect();
  try {
    return (await client.query<T>(sql)).rows;
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Where a query through `port` lands: the server's port and whether it is a replica. */
export async function landing(port: number, login: Login, connectTimeoutMs = 10_000): Promise<{ port: number; replica: boolean }> {
  const [row] = await queryOnce<{ port: number; replica: boolean }>(port, login, 'SELECT inet_server_port() AS port, pg_is_in_recovery() AS replica', connectTimeoutMs);
  return row!;
}

/** A raw TCP connection, resolved once connected. */
export function rawConnect(port: number, timeoutMs = 5000): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no TCP connection to ${port} within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      resolve(socket);
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

/** Milliseconds until the socket closes, or null if it is still open after timeoutMs. */
export function closedWithin(socket: net.Socket, timeoutMs: number): Promise<number | null> {
  const started = Date.now();
  if (socket.destroyed || socket.readableEnded) return Promise.resolve(0);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(null), timeoutMs);
    socket.on('error', () => undefined);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve(Date.now() - started);
    });
  });
}
