/**
 * The hosts of a chaos run: a private /24 in network namespaces, a 3-member
 * etcd cluster (one member per namespace), 3 PostgreSQL nodes through the
 * netns provider (one per namespace), and a router in the root namespace on
 * 127.0.0.1. Everything is killed by PID or namespace and removed in stop(),
 * and a run's leftovers are found by the next one (removeStale). The
 * directory, its layout, the connections and the wait for readiness are the
 * integration tests' (test/support/cluster.ts).
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, cpSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type pg from 'pg';
import { defaultDynamicConfig, type DynamicConfig } from '../../src/config/schema.js';
import { EtcdDcs } from '../../src/dcs/etcd.js';
import type { ClusterView } from '../../src/model/values.js';
import { etcdUsers, LocalLayout, type Secrets } from '../../src/providers/local-layout.js';
import { keelBin } from '../../src/providers/local.js';
import { NetnsEtcd } from '../../src/providers/netns-etcd.js';
import { NetnsNetwork, removeStaleNamespaces } from '../../src/providers/netns-net.js';
import { NetnsProvider, netnsPgPort } from '../../src/providers/netns.js';
import { createLogger, type Logger } from '../../src/util/log.js';
import { findFreePorts } from '../../src/util/ports.js';
import { isAlive, readPidFile, terminateIfNamed } from '../../src/util/process.js';
import { queryOnce, type Login } from '../../src/workload/connect.js';
import { setUpEtcdAuth } from '../../src/dcs/etcd-auth.js';
import { appConnection, makeClusterDir, untilReady } from '../support/cluster.js';
import { tableSql } from './workload.js';

export const clusterName = 'chaos';
const tempPrefix = '/tmp/keelchaos-';
/** what only a router this suite started has on its command line */
const routerMarks = ['router', `--cluster ${clusterName}`];

export interface ChaosClusterOptions {
  synchronousMode: 'off' | 'on' | 'strict';
  ttlSeconds: number;
  loopWaitSeconds: number;
  nodes: number;
}

/** Leftovers of runs whose process is gone: namespaces (and their processes), routers, temp dirs. */
export async function removeStale(): Promise<string[]> {
  const removed = await removeStaleNamespaces();
  for (const entry of readdirSync('/tmp')) {
    const match = /^keelchaos-(\d+)-/.exec(entry);
    if (match === null || isAlive(Number(match[1]))) continue;
    const dir = join('/tmp', entry);
    // only a router this suite started: a `keel router` for our cluster, its pid recorded in the run's directory
    const routerPid = readPidFile(new LocalLayout(dir).routerPidFile);
    if (routerPid !== null) await terminateIfNamed(routerPid, routerMarks, 2000);
    rmSync(dir, { recursive: true, force: true });
    removed.push(dir);
  }
  return removed;
}

export class ChaosCluster {
  readonly names: string[];
  rwPort = 0;
  roPort = 0;
  private routerPid: number | null = null;
  readonly logger: Logger;

  private constructor(
    readonly options: ChaosClusterOptions,
    readonly layout: LocalLayout,
    readonly net: NetnsNetwork,
    readonly etcd: NetnsEtcd,
    readonly provider: NetnsProvider,
    readonly dcs: EtcdDcs,
    readonly secrets: Secrets,
    readonly dynamic: DynamicConfig,
  ) {
    this.names = Array.from({ length: options.nodes }, (_, i) => `node${i + 1}`);
    this.logger = createLogger({ component: 'chaos' }, 'warn');
  }

  /** The application role over TLS, verified against the cluster CA: how every client of the suite logs in. */
  get login(): Login {
    return { user: 'app', password: this.secrets.app, caPem: readFileSync(this.layout.caFiles.cert, 'utf8') };
  }

  /** Builds everything; on failure copies the logs to `failureLogsDir`, removes what it made and rethrows. */
  static async start(options: ChaosClusterOptions, failureLogsDir?: string): Promise<ChaosCluster> {
    const layout = makeClusterDir(`${tempPrefix}${process.pid}-`);
    const dir = layout.dir;
    const secret = () => randomBytes(24).toString('base64url');
    const secrets: Secrets = { superuser: secret(), replication: secret(), apiToken: secret(), app: secret(), rewind: secret(), etcdRoot: secret() };
    const dynamic: DynamicConfig = {
      ...defaultDynamicConfig,
      ttl: options.ttlSeconds,
      loop_wait: options.loopWaitSeconds,
      synchronous_mode: options.synchronousMode,
    };
    let net: NetnsNetwork | null = null;
    let cluster: ChaosCluster | null = null;
    try {
      net = await NetnsNetwork.create({ subnet: process.env.CHAOS_SUBNET });
      const etcdNames = ['etcd1', 'etcd2', 'etcd3'];
      for (const [i, name] of etcdNames.entries()) await net.addHost(name, 11 + i);
      // TLS on, as everywhere by default: the cluster CA issues etcd's, each node's and each component's
      // pairs; clients reach the nodes directly and through the router on 127.0.0.1, so node certificates
      // name both. etcd checks client certificates and gives each component only its own rights.
      await layout.ensureClusterTls({ v: 1, cluster: clusterName, portBase: 16500, nodes: options.nodes, synchronousMode: options.synchronousMode });
      const ca = layout.caFiles;
      const tls = { ca, serverNames: ['127.0.0.1', 'localhost'] };
      const etcd = new NetnsEtcd(net, layout.etcdDir, etcdNames, { tls: { ca, client: layout.clientTls('operator') } });
      for (const name of etcdNames) mkdirSync(join(layout.etcdDir, name), { recursive: true });
      await etcd.start();
      const logger = createLogger({ component: 'netns' }, 'warn');
      await setUpEtcdAuth({ endpoints: etcd.endpoints(), cluster: clusterName, users: etcdUsers(clusterName), rootPassword: secrets.etcdRoot, tls: layout.clientTls('operator'), logger });
      const dcs = new EtcdDcs({ endpoints: etcd.endpoints(), cluster: clusterName, requestTimeoutMs: 2000, logger, credentials: { tls: layout.clientTls('operator') } });
      const provider = new NetnsProvider({ net, dir, cluster: clusterName, secrets, etcdEndpoints: etcd.endpoints(), dynamic, logger, tls });
      cluster = new ChaosCluster(options, layout, net, etcd, provider, dcs, secrets, dynamic);
      // the config key first, so no agent ever runs with other settings
      await dcs.putConfig(dynamic, null);
      await cluster.startRouter();
      for (const [i, name] of cluster.names.entries()) {
        await provider.create(clusterName, { name, zone: `zone-${String.fromCharCode(97 + (i % 3))}` });
      }
      await cluster.waitReady(180_000);
      await cluster.queryLeader(tableSql);
      return cluster;
    } catch (err) {
      if (cluster !== null) {
        if (failureLogsDir !== undefined) cluster.copyLogs(failureLogsDir);
        await cluster.stop().catch(() => undefined);
      }
      else {
        await net?.destroy().catch(() => undefined);
        rmSync(dir, { recursive: true, force: true });
      }
      throw err;
    }
  }

  private async startRouter(): Promise<void> {
    [this.rwPort, this.roPort] = (await findFreePorts('127.0.0.1', 16500, 2)) as [number, number];
    const log = openSync(this.layout.routerLog, 'a');
    const routerTls = this.layout.clientTls('router');
    const args = ['router', '--etcd', this.etcd.endpoints().join(','), '--cluster', clusterName];
    args.push('--etcd-cacert', routerTls.ca, '--etcd-cert', routerTls.cert, '--etcd-key', routerTls.key);
    args.push('--rw', `127.0.0.1:${this.rwPort}`, '--ro', `127.0.0.1:${this.roPort}`, '--engine', 'builtin', '--wait-timeout', '20');
    try {
      const child = spawn(process.execPath, [keelBin, ...args], { detached: true, stdio: ['ignore', log, log] });
      child.unref();
      this.routerPid = child.pid ?? null;
      writeFileSync(this.layout.routerPidFile, `${this.routerPid}\n`);
    } finally {
      closeSync(log);
    }
  }

  routerAlive(): boolean {
    return this.routerPid !== null && isAlive(this.routerPid);
  }

  /** A leader and every node streaming from it, and the rw endpoint forwarding. */
  waitReady(timeoutMs: number): Promise<ClusterView> {
    return untilReady(() => this.dcs.readCluster(), this.names.length, { host: '127.0.0.1', port: this.rwPort }, timeoutMs, () => `logs in ${this.layout.dir}`);
  }

  nodeOfAddress = (address: string): string | null => this.names.find((name) => this.provider.address(name) === address) ?? null;

  /** A direct connection to one node (not through the router). */
  query<T extends pg.QueryResultRow>(node: string, sql: string, params: unknown[] = [], timeoutMs = 10_000): Promise<T[]> {
    return queryOnce<T>(appConnection(this.provider.address(node), netnsPgPort, this.login, timeoutMs), sql, params);
  }

  private async queryLeader(sql: string): Promise<void> {
    const view = await this.dcs.readCluster();
    const leader = view.leader?.value.name;
    if (leader === undefined) throw new Error('no leader to create the table on');
    await this.query(leader, sql);
  }

  /** Copies every log (agents, guards, PostgreSQL, etcd, router) to `to`. */
  copyLogs(to: string): void {
    mkdirSync(to, { recursive: true });
    const copy = (from: string, name: string) => {
      if (existsSync(from)) cpSync(from, join(to, name));
    };
    copy(this.layout.routerLog, 'router.log');
    for (const name of this.names) {
      copy(this.provider.agentLog(name), `${name}-agent.log`);
      copy(this.provider.postgresLog(name), `${name}-postgres.log`);
      // the node's fencing guard, when the provider runs one
      copy(this.layout.guardLog(name), `${name}-guard.log`);
    }
    for (const name of this.etcd.names()) copy(this.etcd.logFile(name), `${name}.log`);
  }

  /** Router, nodes, etcd, namespaces, files; every step tried even when one fails. */
  async stop(): Promise<void> {
    const problems: string[] = [];
    const step = async (what: string, work: () => Promise<unknown>) => {
      try {
        await work();
      } catch (err) {
        problems.push(`${what}: ${(err as Error).message}`);
      }
    };
    await step('dcs', () => this.dcs.close());
    if (this.routerPid !== null) await step('router', () => terminateIfNamed(this.routerPid!, routerMarks, 5000));
    await step('nodes', () => this.provider.killAll());
    await step('etcd', () => this.etcd.stop());
    await step('network', () => this.net.destroy());
    await step('files', async () => rmSync(this.layout.dir, { recursive: true, force: true }));
    if (problems.length > 0) throw new Error(`cleanup incomplete: ${problems.join('; ')}`);
  }
}
