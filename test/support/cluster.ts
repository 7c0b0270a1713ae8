/**
 * A real local cluster for integration tests: Debian's etcd and PostgreSQL +
 * PostGIS, agents as processes (not restarted on their own, so a test decides
 * when a killed node comes back). Everything is stopped by PID and the
 * directory removed in stop().
 */
import { chmodSync, mkdtempSync, readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import pg from 'pg';
import { EtcdDcs } from '../../src/dcs/etcd.js';
import type { ClusterView, MemberValue } from '../../src/model/values.js';
import { LocalCluster } from '../../src/supervisor/local-cluster.js';
import { LocalLayout, portOffsets, type ClusterFile } from '../../src/providers/local-layout.js';
import { sleep } from '../../src/util/clock.js';
import { silentLogger } from '../../src/util/log.js';
import { readPidFile, terminate } from '../../src/util/process.js';

/** A process's command line, '' once it is gone. */
function readCommandLine(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ');
  } catch {
    return '';
  }
}

export class TestCluster {
  readonly dcs: EtcdDcs;
  private constructor(
    readonly layout: LocalLayout,
    readonly file: ClusterFile,
    readonly local: LocalCluster,
    readonly password: string,
  ) {
    this.dcs = local.dcs();
  }

  /** controller: also run a `keel controller` process beside the cluster, as `keel up` does */
  static async start(options: { nodes?: number; portBase: number; synchronousMode?: 'off' | 'on' | 'strict'; controller?: boolean }): Promise<TestCluster> {
    const dir = mkdtempSync('/tmp/keel-test-');
    chmodSync(dir, 0o755);
    const layout = new LocalLayout(dir);
    const file: ClusterFile = { v: 1, cluster: 'test', portBase: options.portBase, nodes: options.nodes ?? 3, synchronousMode: options.synchronousMode ?? 'on' };
    const { cluster, secrets } = await layout.create(file);
    const local = new LocalCluster(layout, cluster, secrets, silentLogger(), { restartAgents: false, controller: options.controller ?? false });
    // nothing started yet: only the directory to remove
    await local.checkPorts().catch(async (err: unknown) => {
      await rm(dir, { recursive: true, force: true });
      throw err;
    });
    const tc = new TestCluster(layout, cluster, local, secrets.superuser);
    try {
      await local.start();
      await local.waitReady(120_000);
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

  async view(): Promise<ClusterView> {
    return this.dcs.readCluster();
  }

  /** Polls etcd until `accept` holds; fails with `what` and the members' reasons after the timeout. */
  async waitFor(what: string, accept: (view: ClusterView) => boolean, timeoutMs: number): Promise<ClusterView> {
    const deadline = Date.now() + timeoutMs;
    let last: ClusterView | null = null;
    while (Date.now() < deadline) {
      last = await this.view().catch(() => null);
      if (last !== null && accept(last)) return last;
      await sleep(200);
    }
    const reasons = last?.members.map((m) => `${m.name}: ${m.state} / ${m.reason}`).join('; ') ?? 'etcd unreadable';
    throw new Error(`timed out waiting for ${what} (leader ${last?.leader?.value.name ?? 'none'}; ${reasons})`);
  }

  async leader(): Promise<MemberValue> {
    const view = await this.waitFor('a leader', (v) => v.leader !== null && v.members.some((m) => m.name === v.leader!.value.name && m.role === 'primary'), 60_000);
    return view.members.find((m) => m.name === view.leader!.value.name)!;
  }

  async query<T extends pg.QueryResultRow = pg.QueryResultRow>(port: number, sql: string, params: unknown[] = []): Promise<T[]> {
    const client = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', password: this.password, database: 'app', connectionTimeoutMillis: 3000 });
    await client.connect();
    try {
      return (await client.query<T>(sql, params)).rows;
    } finally {
      await client.end();
    }
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
    for (const { pid, signal, graceMs } of [...named, ...this.nodeProcesses()]) {
      // only a process whose command line names this directory: a PID may belong to another by now
      if (readCommandLine(pid).includes(this.layout.dir)) await terminate(pid, graceMs, signal);
    }
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
