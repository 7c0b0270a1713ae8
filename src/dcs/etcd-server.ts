/**
 * Runs Debian's etcd as a child process: for `keel up` and integration tests.
 * Tuned for fast failover on one machine or one region, not for WAN links.
 * Given TLS files, clients and peers speak https and must show a certificate
 * of the cluster CA (--client-cert-auth): with etcd's auth enabled, the CN of
 * that certificate is the user.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { constants, closeSync } from 'node:fs';
import { access, mkdir, readFile } from 'node:fs/promises';
import { request as httpsRequest } from 'node:https';
import { dirname } from 'node:path';
import type { TlsFiles } from '../config/schema.js';
import { KeelError } from '../errors.js';
import { sleep } from '../util/clock.js';
import { isPortFree } from '../util/ports.js';
import { isAlive, terminate } from '../util/process.js';
import { openLogFile } from '../util/log-file.js';

export const defaultEtcdBinary = '/usr/bin/etcd';

export interface StartEtcdOptions {
  name: string;
  dataDir: string;
  /** address both ports listen on; default 127.0.0.1 */
  host?: string;
  clientPort: number;
  peerPort: number;
  /** `name=https://host:peerPort,...` (http:// without TLS); default this member alone */
  initialCluster?: string;
  initialClusterState?: 'new' | 'existing';
  /** etcd's stdout and stderr are appended here */
  logFile: string;
  /** own process group, so it survives the parent (as under `keel up`) */
  detached?: boolean;
  binary?: string;
  /** how long to wait for /health to say true; default 20 s */
  startTimeoutMs?: number;
  /** https for clients and peers, both verified against the CA; without it, plain http */
  tls?: EtcdServerTls;
}

export interface EtcdServerTls {
  /** the CA that signs etcd's certificate and every client's and peer's */
  ca: string;
  /** etcd's own pair, for clients and (as client and server) for its peers: its names must include the host */
  server: { cert: string; key: string };
  /** a client pair of the same CA for the health check (any user may read /health) */
  client: TlsFiles;
}

export interface RunningEtcd {
  pid: number;
  /** client URL, e.g. https://127.0.0.1:2379 (http:// without TLS) */
  endpoint: string;
  child: ChildProcess;
}

const urlHost = (host: string): string => (host.includes(':') ? `[${host}]` : host);

function tlsArgs(tls: EtcdServerTls): string[] {
  return [
    '--client-cert-auth',
    `--trusted-ca-file=${tls.ca}`,
    `--cert-file=${tls.server.cert}`,
    `--key-file=${tls.server.key}`,
    '--peer-client-cert-auth',
    `--peer-trusted-ca-file=${tls.ca}`,
    `--peer-cert-file=${tls.server.cert}`,
    `--peer-key-file=${tls.server.key}`,
  ];
}

export function etcdArgs(options: StartEtcdOptions): string[] {
  const host = urlHost(options.host ?? '127.0.0.1');
  const scheme = options.tls === undefined ? 'http' : 'https';
  const clientUrl = `${scheme}://${host}:${options.clientPort}`;
  const peerUrl = `${scheme}://${host}:${options.peerPort}`;
  return [
    `--name=${options.name}`,
    `--data-dir=${options.dataDir}`,
    `--listen-client-urls=${clientUrl}`,
    `--advertise-client-urls=${clientUrl}`,
    `--listen-peer-urls=${peerUrl}`,
    `--initial-advertise-peer-urls=${peerUrl}`,
    `--initial-cluster=${options.initialCluster ?? `${options.name}=${peerUrl}`}`,
    `--initial-cluster-state=${options.initialClusterState ?? 'new'}`,
    '--initial-cluster-token=keel',
    // a lost etcd leader is replaced in about a second, well inside Keel's 10 s lease ttl
    '--heartbeat-interval=100',
    '--election-timeout=1000',
    // Keel's keys are small and rewritten every loop: old revisions are garbage
    '--auto-compaction-mode=periodic',
    '--auto-compaction-retention=1h',
    `--quota-backend-bytes=${1024 * 1024 * 1024}`,
    '--logger=zap',
    '--log-outputs=stderr',
    ...(options.tls === undefined ? [] : tlsArgs(options.tls)),
  ];
}

/** The environment without ETCD_* variables, which etcd would read as flags. */
function cleanEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('ETCD_')));
}

async function lastLines(file: string, count: number): Promise<string> {
  try {
    const lines = (await readFile(file, 'utf8')).trimEnd().split('\n');
    return lines.slice(-count).join('\n');
  } catch {
    return '(no log)';
  }
}

export interface EtcdHttpRequest {
  method?: 'GET' | 'POST';
  body?: string;
  timeoutMs?: number;
}

/**
 * One request to etcd's HTTP side (/health, the gRPC gateway); the answer's body, or null when there was
 * none. Over https etcd's certificate is verified and the client pair shown: --client-cert-auth refuses
 * anything less.
 */
export async function etcdHttp(url: string, tls: TlsFiles | undefined, request: EtcdHttpRequest = {}): Promise<string | null> {
  const timeoutMs = request.timeoutMs ?? 1000;
  if (tls === undefined) {
    try {
      const res = await fetch(url, { method: request.method ?? 'GET', body: request.body, signal: AbortSignal.timeout(timeoutMs) });
      return await res.text();
    } catch {
      return null;
    }
  }
  let files: Buffer[];
  try {
    files = await Promise.all([readFile(tls.ca), readFile(tls.cert), readFile(tls.key)]);
  } catch {
    return null;
  }
  const [ca, cert, key] = files;
  return new Promise((resolve) => {
    const req = httpsRequest(url, { method: request.method ?? 'GET', ca, cert, key, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve(body));
      res.on('error', () => resolve(null));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(null));
    req.end(request.body);
  });
}

/** Whether etcd's /health says true. */
export async function etcdHealthy(endpoint: string, tls: TlsFiles | undefined, timeoutMs = 1000): Promise<boolean> {
  const body = await etcdHttp(`${endpoint}/health`, tls, { timeoutMs });
  try {
    return body !== null && (JSON.parse(body) as { health?: unknown }).health === 'true';
  } catch {
    return false;
  }
}

/**
 * Starts etcd and resolves once it reports healthy. Members of a new
 * multi-member cluster are healthy only once a quorum runs: start them
 * concurrently, not one after another.
 */
export async function startEtcd(options: StartEtcdOptions): Promise<RunningEtcd> {
  const host = options.host ?? '127.0.0.1';
  const binary = options.binary ?? defaultEtcdBinary;
  try {
    await access(binary, constants.X_OK);
  } catch {
    throw new KeelError('KEEL_BINARY_MISSING', `etcd is not installed or not executable at ${binary}`);
  }
  for (const [port, role] of [
    [options.clientPort, 'client'],
    [options.peerPort, 'peer'],
  ] as const) {
    if (!(await isPortFree(host, port))) {
      throw new KeelError('KEEL_PORT_IN_USE', `port ${port} on ${host} (etcd ${role} port) is already in use`);
    }
  }
  // etcd refuses a data directory others can read
  await mkdir(options.dataDir, { recursive: true, mode: 0o700 });
  await mkdir(dirname(options.logFile), { recursive: true });

  const out = openLogFile(options.logFile);
  let child: ChildProcess;
  try {
    child = spawn(binary, etcdArgs(options), {
      detached: options.detached ?? false,
      stdio: ['ignore', out, out],
      env: cleanEnv(),
    });
  } finally {
    closeSync(out);
  }
  let exit: string | null = null;
  child.once('error', (err) => (exit = `could not be started: ${err.message}`));
  child.once('exit', (code, signal) => (exit = `exited (${signal ?? `code ${code}`})`));
  if (options.detached) child.unref();

  const endpoint = `${options.tls === undefined ? 'http' : 'https'}://${urlHost(host)}:${options.clientPort}`;
  const deadline = Date.now() + (options.startTimeoutMs ?? 20_000);
  while (!(await etcdHealthy(endpoint, options.tls?.client))) {
    if (exit !== null || child.pid === undefined) {
      const tail = await lastLines(options.logFile, 15);
      throw new KeelError('KEEL_ETCD_UNREACHABLE', `etcd ${options.name} ${exit ?? 'did not start'}; last lines of ${options.logFile}:\n${tail}`, {
        hint: `read ${options.logFile}`,
      });
    }
    if (Date.now() > deadline) {
      await stopEtcd(child.pid, 5000);
      throw new KeelError('KEEL_ETCD_UNREACHABLE', `etcd ${options.name} was not healthy at ${endpoint} within the start timeout`, {
        hint: `read ${options.logFile}; a new multi-member cluster needs a quorum of members started together`,
      });
    }
    await sleep(100);
  }
  return { pid: child.pid!, endpoint, child };
}

/** SIGTERM, then SIGKILL after timeoutMs. Resolves once the process is gone. */
export async function stopEtcd(pid: number, timeoutMs = 10_000): Promise<void> {
  // 0, 1 and negative pids would signal groups or init
  if (!Number.isInteger(pid) || pid <= 1) throw new RangeError(`refusing to signal pid ${pid}`);
  await terminate(pid, timeoutMs);
  if (isAlive(pid)) throw new KeelError('KEEL_TIMEOUT', `etcd (pid ${pid}) is still running after SIGKILL`, { hint: `look at process ${pid}` });
}
