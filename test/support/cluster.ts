/**
 * A real local cluster for integration tests and benches: Debian's etcd and
 * PostgreSQL + PostGIS, agents as processes (not restarted on their own, so a
 * test decides when a killed node comes back). Everything is stopped by PID
 * and the directory removed in stop(). The fault suite's cluster
 * (test/chaos/cluster.ts) builds on the helpers here: its directory, its
 * connections, its wait for readiness.
 */
import { chmodSync, existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { rm } from 'node:fs/promises';
import type pg from 'pg';
import type { Etcd3 } from 'etcd3';
import type { TlsFiles } from '../../src/config/schema.js';
import { createEtcdClient } from '../../src/dcs/etcd-client.js';
import { EtcdDcs } from '../../src/dcs/etcd.js';
import type { ClusterView, MemberValue } from '../../src/model/values.js';
import { lastLines } from '../../src/postgres/programs.js';
import { probePostgres } from '../../src/postgres/probe.js';
import { isReady, LocalCluster } from '../../src/supervisor/local-cluster.js';
import { LocalLayout, portOffsets, type ClusterFile } from '../../src/providers/local-layout.js';
import { sleep } from '../../src/util/clock.js';
import { silentLogger } from '../../src/util/log.js';
import { readPidFile, terminateIfNamed } from '../../src/util/process.js';
import { loginConfig, queryOnce, type Login } from '../../src/workload/connect.js';
import { leaderOf } from '../../src/workload/shape.js';
import { untilView } from '../../src/workload/wait.js';

/** A new cluster directory, `prefix` followed by random characters, that PostgreSQL (run as another user) may enter. */
export function makeClusterDir(prefix: string): LocalLayout {
  const dir = mkdtempSync(prefix);
  chmodSync(dir, 0o755);
  return new LocalLayout(dir);
}

/** The application role's connection to the `app` database at host:port, over TLS as the cluster's clients connect. */
export function appConnection(host: string, port: number, login: Login, queryTimeoutMs?: number): pg.ClientConfig {
  return { ...loginConfig(login, host, port), connectionTimeoutMillis: 3000, ...(queryTimeoutMs === undefined ? {} : { query_timeout: queryTimeoutMs }) };
}

/** A local cluster's application login: the `app` role over TLS verified against the cluster CA. */
export function appLogin(layout: LocalLayout): Login {
  return { user: 'app', password: layout.readSecrets().app, caPem: readFileSync(layout.caFiles.cert, 'utf8') };
}

/** The superuser over node `name`'s local socket: the only way it may log in (privileged views, fault set-up). */
export function superuserConnection(layout: LocalLayout, name: string, port: number): pg.ClientConfig {
  return { host: join(layout.postgresDir(name)), port, user: 'postgres', password: layout.readSecrets().superuser, database: 'app', connectionTimeoutMillis: 3000 };
}

/** Waits until a leader runs, `nodes` nodes stream from it and the rw endpoint forwards. */
export function untilReady(readView: () => Promise<ClusterView>, nodes: number, rw: { host: string; port: number }, timeoutMs: number, detail?: () => string): Promise<ClusterView> {
  const ready = async (view: ClusterView) => isReady(view, nodes) && (await probePostgres(rw.host, rw.port, 1000));
  return untilView(readView, 'a ready cluster (a leader, every node streaming from it, rw forwarding)', ready, { timeoutMs, pollMs: 300, detail });
}

export class TestCluster {
  readonly dcs: EtcdDcs;
  private constructor(
    readonly layout: LocalLayout,
    readonly file: ClusterFile,
    readonly local: LocalCluster,
    readonly login: Login,
  ) {
    this.dcs = local.dcs();
  }

  /** controller, dashboard: also run a `keel controller`, a `keel dashboard` process beside the cluster, as `keel up` does */
  static async start(options: { nodes?: number; portBase: number; synchronousMode?: 'off' | 'on' | 'strict'; controller?: boolean; dashboard?: boolean }): Promise<TestCluster> {
    const layout = makeClusterDir('/tmp/keel-test-');
    const file: ClusterFile = { v: 1, cluster: 'test', portBase: options.portBase, nodes: options.nodes ?? 3, synchronousMode: options.synchronousMode ?? 'on' };
    const { cluster, secrets } = await layout.create(file);
    const local = new LocalCluster(layout, cluster, secrets, silentLogger(), { restartAgents: false, controller: options.controller ?? false, dashboard: options.dashboard ?? false });
    // nothing started yet: only the directory to remove
    await local.checkPorts().catch(async (err: unknown) => {
      await rm(layout.dir, { recursive: true, force: true });
      throw err;
    });
    const tc = new TestCluster(layout, cluster, local, appLogin(layout));
    try {
      await local.start();
      await untilReady(() => tc.view(), cluster.nodes, { host: '127.0.0.1', port: cluster.portBase + portOffsets.routerRw }, 120_000, () => `logs in ${layout.dir}`);
    } catch (err) {
      // nothing left running when a cluster does not come up
      await tc.stop().catch(() => undefined);
      throw err;
    }
    return tc;
  }

  pgPort(name: string): number {
    return this.file.portBase + portOffsets.nodePg + Number(name.replace('node', '')) - 1;
  }

  /** The cluster's etcd as a component sees it: its endpoint and that component's client certificate. */
  etcdAccess(component: 'router' | 'controller' | 'operator'): { etcd: string; etcdTls: TlsFiles } {
    return { etcd: this.layout.etcdEndpoint(this.file), etcdTls: this.layout.clientTls(component) };
  }

  /** A raw etcd3 client acting for the operator, for tests that write under the prefix by hand. */
  operatorEtcd(): Etcd3 {
    return createEtcdClient([this.layout.etcdEndpoint(this.file)], 3000, { tls: this.layout.clientTls('operator') });
  }

  async view(): Promise<ClusterView> {
    return this.dcs.readCluster();
  }

  /**
   * Polls etcd until `accept` holds; fails with `what`, the members' states and the last lines of each node's
   * PostgreSQL log after the timeout (what a node that does not come back was waiting for).
   */
  waitFor(what: string, accept: (view: ClusterView) => boolean, timeoutMs: number): Promise<ClusterView> {
    return untilView(() => this.view(), what, accept, { timeoutMs, detail: () => this.postgresLogTails(4) });
  }

  private postgresLogTails(lines: number): string {
    return this.layout
      .nodeNames()
      .map((name) => {
        const path = join(this.layout.postgresDir(name), 'postgres.log');
        return `${name}'s postgres.log ends:\n${existsSync(path) ? lastLines(readFileSync(path, 'utf8'), lines) : '(none)'}`;
      })
      .join('\n');
  }

  /** The leader's member, once the leader key names a member running as primary. */
  async leader(): Promise<MemberValue> {
    return leaderOf(await this.waitFor('a leader', (v) => leaderOf(v) !== undefined, 60_000))!;
  }

  async query<T extends pg.QueryResultRow = pg.QueryResultRow>(port: number, sql: string, params: unknown[] = []): Promise<T[]> {
    return queryOnce<T>(appConnection('127.0.0.1', port, this.login), sql, params);
  }

  /** One query as the superuser over node `name`'s local socket (for what the application role may not read). */
  async superuserQuery<T extends pg.QueryResultRow = pg.QueryResultRow>(name: string, sql: string, params: unknown[] = []): Promise<T[]> {
    return queryOnce<T>(superuserConnection(this.layout, name, this.pgPort(name)), sql, params);
  }

  /** Retries `query` until it succeeds; returns the seconds it took. */
  async untilWritable(port: number | (() => Promise<number>), sql: string, timeoutMs: number): Promise<number> {
    const started = Date.now();
    for (;;) {
      try {
        await this.query(typeof port === 'number' ? port : await port(), sql);
        return (Date.now() - started) / 1000;
      } catch (err) {
        if (Date.now() - started > timeoutMs) throw err;
        await sleep(100);
      }
    }
  }

  /** keepDir: leave the directory and its logs for a look afterwards */
  async stop(options: { keepDir?: boolean } = {}): Promise<void> {
    await this.dcs.close().catch(() => undefined);
    // Read before the provider stops anything, since it removes the pid files of the nodes it knows:
    // a node that a `keel controller` process destroyed and created again under the same name is
    // not known to this process by its new PIDs, and is stopped from these.
    const named = this.nodeProcesses();
    await this.local.stop();
    for (const { pid, signal, graceMs } of [...named, ...this.nodeProcesses()]) await terminateIfNamed(pid, [this.layout.dir], graceMs, signal);
    // retried: files of processes that just exited may still be going away
    if (!options.keepDir) await rm(this.layout.dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 });
  }

  /** What the pid files of the nodes on disk name: agents, then postmasters, then guards, the order they stop in. */
  private nodeProcesses(): { pid: number; signal: NodeJS.Signals; graceMs: number }[] {
    const names = this.layout.nodeNames();
    const named = (file: (name: string) => string, signal: NodeJS.Signals, graceMs: number) =>
      names.flatMap((name) => {
        const pid = readPidFile(file(name));
        return pid === null ? [] : [{ pid, signal, graceMs }];
      });
    return [
      ...named((name) => this.layout.agentPidFile(name), 'SIGTERM', 30_000),
      // SIGINT is PostgreSQL's fast shutdown
      ...named((name) => `${this.layout.dataDir(name)}/postmaster.pid`, 'SIGINT', 30_000),
      ...named((name) => this.layout.guardPidFile(name), 'SIGTERM', 10_000),
    ];
  }
}
