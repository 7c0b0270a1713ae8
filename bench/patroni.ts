/**
 * The reference cluster of the switchover bench: Patroni (Debian's 3.0.2)
 * with three PostgreSQL 15 nodes on 127.0.0.1, an etcd of its own as the DCS
 * (the v3 API), and HAProxy in front routing to whichever node Patroni's REST
 * API calls primary. Tuned for fast failover: ttl 10, loop_wait 1,
 * retry_timeout 5, synchronous_mode, use_pg_rewind.
 *
 * Ports (127.0.0.1): etcd 20700 (client) and 20701 (peer), HAProxy 20702,
 * PostgreSQL 20710-20712, Patroni's REST API 20720-20722.
 *
 * Every process is a child of this one, stopped by PID in stop(); the
 * directory goes too unless BENCH_KEEP is set. Every wait is bounded.
 */
import { execFileSync, spawn } from 'node:child_process';
import { chmodSync, chownSync, closeSync, existsSync, mkdirSync, mkdtempSync, openSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type pg from 'pg';
import { sleep } from '../src/util/clock.js';
import { systemUser } from '../src/util/os-user.js';
import { isPortFree } from '../src/util/ports.js';
import { childrenOf } from '../src/postgres/postmaster.js';
import { readPidFile, terminate, terminateIfNamed } from '../src/util/process.js';
import { queryOnce } from '../src/workload/connect.js';
import { removeDir } from './cluster.js';
import { envFlag } from './options.js';

export const patroniBinary = '/usr/bin/patroni';
const pgBinDir = '/usr/lib/postgresql/15/bin';
const host = '127.0.0.1';
const etcdPort = 20700;
const etcdPeerPort = 20701;
const haproxyPort = 20702;
const pgPortBase = 20710;
const restPortBase = 20720;
const nodeNames = ['node1', 'node2', 'node3'] as const;

/** What `patroni --version` says (e.g. "patroni 3.0.2"). */
export function patroniVersion(): string {
  return execFileSync(patroniBinary, ['--version'], { encoding: 'utf8', timeout: 10_000 }).trim();
}

/** A member as Patroni's `GET /cluster` lists it. */
export interface PatroniMember {
  name: string;
  /** 'leader', 'sync_standby' or 'replica' */
  role: string;
  /** 'running', 'stopped', 'starting', 'crashed', ... */
  state: string;
  lag?: number | 'unknown';
  timeline?: number;
}

interface PatroniNode {
  name: string;
  pgPort: number;
  restPort: number;
  dir: string;
  /** the Patroni (python) process; null while the node is down */
  pid: number | null;
}

/** Polls `check` every `pollMs` until it returns a value; fails with `what` after `timeoutMs`. */
export async function until<T>(what: string, check: () => Promise<T | undefined>, timeoutMs: number, pollMs = 200): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError = '';
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (err) {
      lastError = (err as Error).message;
    }
    if (Date.now() >= deadline) throw new Error(`no ${what} within ${timeoutMs / 1000} s${lastError === '' ? '' : ` (last error: ${lastError})`}`);
    await sleep(pollMs);
  }
}

/** A JSON answer from a REST API; a dead node fails fast (refused) or after the timeout. */
async function fetchJson<T>(url: string, init: RequestInit = {}, timeoutMs = 1500): Promise<{ status: number; body: T | string }> {
  const response = await fetch(url, { ...init, signal: AbortSignal.timeout(timeoutMs) });
  const text = await response.text();
  try {
    return { status: response.status, body: JSON.parse(text) as T };
  } catch {
    return { status: response.status, body: text };
  }
}

function killNow(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

/** Patroni's configuration for one node, as JSON (which YAML reads as it is). */
function patroniConfig(node: PatroniNode, secrets: { superuser: string; replication: string }): string {
  const config = {
    scope: 'bench',
    namespace: '/patroni-bench/',
    name: node.name,
    restapi: { listen: `${host}:${node.restPort}`, connect_address: `${host}:${node.restPort}` },
    etcd3: { hosts: `${host}:${etcdPort}` },
    bootstrap: {
      dcs: {
        ttl: 10,
        loop_wait: 1,
        retry_timeout: 5,
        synchronous_mode: true,
        postgresql: { use_pg_rewind: true, use_slots: true, parameters: { max_connections: 100, shared_buffers: '32MB' } },
      },
      initdb: [{ encoding: 'UTF8' }, { locale: 'C.UTF-8' }],
    },
    postgresql: {
      listen: `${host}:${node.pgPort}`,
      connect_address: `${host}:${node.pgPort}`,
      data_dir: join(node.dir, 'data'),
      bin_dir: pgBinDir,
      pgpass: join(node.dir, 'pgpass'),
      authentication: {
        superuser: { username: 'postgres', password: secrets.superuser },
        replication: { username: 'replicator', password: secrets.replication },
      },
      // the socket stays inside the node's directory, away from any other PostgreSQL on the machine
      parameters: { unix_socket_directories: node.dir },
      pg_hba: [
        'local all all peer',
        `host replication replicator ${host}/32 scram-sha-256`,
        `host all all ${host}/32 scram-sha-256`,
      ],
    },
    // no /dev/watchdog here; Patroni would only warn that it cannot open one
    watchdog: { mode: 'off' },
  };
  return JSON.stringify(config, null, 2);
}

/** HAProxy as Patroni's documentation sets it up: TCP to the node whose REST API answers 200 to OPTIONS /primary. */
function haproxyConfig(nodes: readonly PatroniNode[]): string {
  return [
    'global',
    '  maxconn 500',
    'defaults',
    '  mode tcp',
    '  timeout connect 4s',
    '  timeout client 30m',
    '  timeout server 30m',
    'listen primary',
    `  bind ${host}:${haproxyPort}`,
    '  option httpchk OPTIONS /primary',
    '  http-check expect status 200',
    '  default-server inter 3s fall 3 rise 2 on-marked-down shutdown-sessions',
    ...nodes.map((n) => `  server ${n.name} ${host}:${n.pgPort} maxconn 200 check port ${n.restPort}`),
    '',
  ].join('\n');
}

export class PatroniCluster {
  /** PIDs of etcd and HAProxy (the nodes keep theirs) */
  private readonly helpers: number[] = [];
  private readonly nodes: PatroniNode[];
  private readonly secrets = { superuser: randomBytes(16).toString('hex'), replication: randomBytes(16).toString('hex'), app: randomBytes(16).toString('hex') };

  private constructor(
    readonly dir: string,
    private readonly postgresUser: { uid: number; gid: number },
  ) {
    this.nodes = nodeNames.map((name, i) => ({ name, pgPort: pgPortBase + i, restPort: restPortBase + i, dir: join(dir, name), pid: null }));
  }

  /** The application role's connection to the `app` database through HAProxy, as the writers use it. */
  appConnection(): pg.ClientConfig {
    return { host, port: haproxyPort, user: 'app', password: this.secrets.app, database: 'app' };
  }

  private spawnLogged(command: string, args: string[], logFile: string, user?: { uid: number; gid: number }, env: NodeJS.ProcessEnv = {}): number {
    const fd = openSync(logFile, 'a');
    try {
      const child = spawn(command, args, { stdio: ['ignore', fd, fd], env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LANG: 'C.UTF-8', ...env }, ...(user ?? {}) });
      // a failure to start shows as a missing PID below; the event itself must not crash the bench
      child.on('error', () => undefined);
      if (child.pid === undefined) throw new Error(`could not start ${command} (see ${logFile})`);
      return child.pid;
    } finally {
      closeSync(fd);
    }
  }

  private startNode(node: PatroniNode): void {
    // PostgreSQL refuses to run as root: Patroni and everything it starts run as the postgres user
    node.pid = this.spawnLogged(patroniBinary, [join(node.dir, 'patroni.yml')], join(this.dir, `${node.name}.log`), this.postgresUser, { HOME: node.dir });
  }

  private async start(): Promise<void> {
    for (const port of [etcdPort, etcdPeerPort, haproxyPort, ...this.nodes.flatMap((n) => [n.pgPort, n.restPort])]) {
      if (!(await isPortFree(host, port))) throw new Error(`Patroni cluster: port ${host}:${port} is taken`);
    }
    const etcdUrl = `http://${host}:${etcdPort}`;
    const peerUrl = `http://${host}:${etcdPeerPort}`;
    this.helpers.push(
      this.spawnLogged('etcd', [
        '--name', 'patroni-bench', '--data-dir', join(this.dir, 'etcd'),
        '--listen-client-urls', etcdUrl, '--advertise-client-urls', etcdUrl,
        '--listen-peer-urls', peerUrl, '--initial-advertise-peer-urls', peerUrl,
        '--initial-cluster', `patroni-bench=${peerUrl}`,
      ], join(this.dir, 'etcd.log')),
    );
    await until('etcd answering', async () => ((await fetchJson(`${etcdUrl}/version`)).status === 200 ? true : undefined), 30_000);

    for (const node of this.nodes) {
      mkdirSync(node.dir, { mode: 0o700 });
      writeFileSync(join(node.dir, 'patroni.yml'), patroniConfig(node, this.secrets), { mode: 0o600 });
      chownSync(node.dir, this.postgresUser.uid, this.postgresUser.gid);
      chownSync(join(node.dir, 'patroni.yml'), this.postgresUser.uid, this.postgresUser.gid);
    }
    writeFileSync(join(this.dir, 'haproxy.cfg'), haproxyConfig(this.nodes));
    this.helpers.push(this.spawnLogged('haproxy', ['-f', join(this.dir, 'haproxy.cfg'), '-db'], join(this.dir, 'haproxy.log')));

    // the first node bootstraps alone, so that the others clone from it instead of racing for the initialisation
    this.startNode(this.nodes[0]!);
    await until('bootstrapped leader', async () => ((await this.leaderName()) === this.nodes[0]!.name ? true : undefined), 120_000, 500);
    for (const node of this.nodes.slice(1)) this.startNode(node);
    await this.untilHealthy(180_000);

    const superuser = { host, port: haproxyPort, user: 'postgres', password: this.secrets.superuser, database: 'postgres', connectionTimeoutMillis: 3000 };
    // the passwords are hex: nothing to quote
    await queryOnce(superuser, `CREATE ROLE app LOGIN PASSWORD '${this.secrets.app}'`);
    await queryOnce(superuser, 'CREATE DATABASE app OWNER app');
    await queryOnce({ ...this.appConnection(), connectionTimeoutMillis: 3000 }, 'CREATE TABLE bench_switch (id bigserial PRIMARY KEY, at timestamptz DEFAULT now())');
  }

  /** The members as the first node that answers sees them. */
  async members(): Promise<PatroniMember[]> {
    let lastError: unknown = new Error('no node answered');
    for (const node of this.nodes) {
      if (node.pid === null) continue;
      try {
        const { status, body } = await fetchJson<{ members: PatroniMember[] }>(`http://${host}:${node.restPort}/cluster`);
        if (status === 200 && typeof body === 'object') return body.members;
      } catch (err) {
        lastError = err;
      }
    }
    throw lastError;
  }

  /** The member holding the leader key while its PostgreSQL runs; undefined when there is none. */
  async leaderName(): Promise<string | undefined> {
    return (await this.members()).find((m) => m.role === 'leader' && m.state === 'running')?.name;
  }

  async leader(timeoutMs = 60_000): Promise<string> {
    return until('leader', () => this.leaderName(), timeoutMs);
  }

  /**
   * Waits until every node runs, one of them leads with a synchronous standby,
   * the others have caught up, and HAProxy sends a new connection to a primary.
   */
  async untilHealthy(timeoutMs: number): Promise<void> {
    await until(
      'healthy cluster (a leader, a synchronous standby, every node running and caught up)',
      async () => {
        const members = await this.members();
        const leader = members.find((m) => m.role === 'leader' && m.state === 'running');
        // a replica still on the old timeline has not followed the new leader yet, whatever its lag says
        const followers = members.filter((m) => m !== leader && m.state === 'running' && m.timeline === leader?.timeline && typeof m.lag === 'number' && m.lag < 1024 * 1024);
        const ok = leader !== undefined && followers.length === this.nodes.length - 1 && followers.some((m) => m.role === 'sync_standby');
        return ok ? true : undefined;
      },
      timeoutMs,
      500,
    );
    const superuser = { host, port: haproxyPort, user: 'postgres', password: this.secrets.superuser, database: 'postgres', connectionTimeoutMillis: 2000 };
    await until('primary behind HAProxy', async () => {
      const rows = await queryOnce<{ recovery: boolean }>(superuser, 'SELECT pg_is_in_recovery() AS recovery');
      return rows[0]?.recovery === false ? true : undefined;
    }, timeoutMs, 300);
  }

  /**
   * A leader node that dies: SIGKILL of its Patroni process, its postmaster
   * and the postmaster's children (as a dead machine's would go). Returns the
   * node's name and when the kill began (ms).
   */
  async killLeader(): Promise<{ name: string; atMs: number; pgPort: number }> {
    const name = await this.leader();
    const node = this.nodes.find((n) => n.name === name)!;
    const postmaster = readPidFile(join(node.dir, 'data', 'postmaster.pid'));
    const atMs = Date.now();
    if (node.pid !== null) killNow(node.pid);
    if (postmaster !== null) {
      const children = childrenOf(postmaster);
      killNow(postmaster);
      for (const pid of children) killNow(pid);
    }
    node.pid = null;
    return { name, atMs, pgPort: node.pgPort };
  }

  /** Starts a node's Patroni again (after killLeader); it rejoins as a replica, rewound if need be. */
  restart(name: string): void {
    const node = this.nodes.find((n) => n.name === name)!;
    if (node.pid === null) this.startNode(node);
  }

  /**
   * A planned switchover from the leader to its synchronous standby (the
   * only candidate Patroni accepts in synchronous mode), through the leader's
   * REST API. Patroni answers once the new leader holds the key.
   */
  async switchover(): Promise<{ from: string; to: string; requestedAtMs: number }> {
    const members = await this.members();
    const from = members.find((m) => m.role === 'leader')?.name;
    const to = members.find((m) => m.role === 'sync_standby')?.name;
    if (from === undefined || to === undefined) throw new Error(`Patroni cluster: no leader and synchronous standby to switch between (${JSON.stringify(members)})`);
    const leaderNode = this.nodes.find((n) => n.name === from)!;
    const requestedAtMs = Date.now();
    const { status, body } = await fetchJson(`http://${host}:${leaderNode.restPort}/switchover`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ leader: from, candidate: to }),
    }, 60_000);
    if (status !== 200) throw new Error(`Patroni cluster: switchover ${from} -> ${to} answered ${status}: ${JSON.stringify(body)}`);
    return { from, to, requestedAtMs };
  }

  /** Each Patroni process's PID, in node order (null while a node is down). */
  pids(): (number | null)[] {
    return this.nodes.map((n) => n.pid);
  }

  /** Stops Patroni (which stops PostgreSQL), then HAProxy and etcd, each by PID; removes the directory unless BENCH_KEEP is set. */
  async stop(): Promise<void> {
    await Promise.all(this.nodes.map(async (node) => {
      if (node.pid !== null) await terminate(node.pid, 30_000);
      node.pid = null;
      // a postmaster that outlived its Patroni (killed above, or stuck) goes by its pid file
      const postmaster = readPidFile(join(node.dir, 'data', 'postmaster.pid'));
      // (only while its command line names this node's directory: a stale file's PID may be another process's by now)
      if (postmaster !== null) await terminateIfNamed(postmaster, [node.dir], 10_000, 'SIGQUIT');
    }));
    for (const pid of this.helpers.splice(0).reverse()) await terminate(pid, 10_000);
    await removeDir(this.dir);
    if (envFlag('BENCH_KEEP')) console.log(`kept ${this.dir} (BENCH_KEEP)`);
  }

  /** A new cluster, up and healthy with the `app` role, its database and the bench's table; nothing is left running if it fails. */
  static async start(): Promise<PatroniCluster> {
    if (!existsSync(patroniBinary)) throw new Error(`${patroniBinary} is missing (make bench installs Debian's patroni)`);
    const user = await systemUser('postgres');
    if (user === null) throw new Error('no postgres user in /etc/passwd (Debian\'s postgresql package makes it)');
    const dir = mkdtempSync('/tmp/keel-patroni-');
    // the postgres user must reach its node directories inside
    chmodSync(dir, 0o755);
    const cluster = new PatroniCluster(dir, user);
    try {
      await cluster.start();
    } catch (err) {
      await cluster.stop().catch(() => undefined);
      throw err;
    }
    return cluster;
  }
}

export function startPatroniCluster(): Promise<PatroniCluster> {
  return PatroniCluster.start();
}
