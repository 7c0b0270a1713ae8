/**
 * Everything `keel up` runs on this machine: an embedded etcd, one router and
 * the agents of the local provider, started in order and stopped in reverse
 * (the router, then replicas, the leader last, etcd at the very end) so that a
 * restart on the same directory finds a cleanly shut down cluster.
 */
import { rm, writeFile } from 'node:fs/promises';
import { setUpEtcdAuth } from '../dcs/etcd-auth.js';
import { stopEtcd, startEtcd } from '../dcs/etcd-server.js';
import { EtcdDcs } from '../dcs/etcd.js';
import type { ClusterView } from '../model/values.js';
import { KeelError } from '../errors.js';
import { sleep } from '../util/clock.js';
import type { Logger } from '../util/log.js';
import { isPortFree } from '../util/ports.js';
import { isAlive, readPidFile } from '../util/process.js';
import { probePostgres } from '../postgres/probe.js';
import { etcdUsers, portOffsets, type ClusterFile, type LocalLayout, type Secrets } from '../providers/local-layout.js';
import { keelBin, LocalProvider } from '../providers/local.js';
import { Supervised } from './supervised.js';

export class LocalCluster {
  readonly provider: LocalProvider;
  private etcdPid: number | null = null;
  /** the router on P+2 (rw), P+3 (ro) and P+7 (pooled rw), restarted like an agent: applications lose their endpoints while it is down */
  private readonly router: Supervised;
  /** one `keel controller` for this directory */
  private readonly controller: Supervised;
  private readonly withController: boolean;
  /** `keel dashboard --dir`: the web page on P+5 */
  private readonly dashboard: Supervised;
  private readonly withDashboard: boolean;

  constructor(
    readonly layout: LocalLayout,
    readonly cluster: ClusterFile,
    readonly secrets: Secrets,
    private readonly logger: Logger,
    /** controller: also run a `keel controller` (keel up does; tests that kill nodes by hand do not); dashboard: also `keel dashboard` */
    options: { restartAgents?: boolean; controller?: boolean; dashboard?: boolean } = {},
  ) {
    this.provider = new LocalProvider(layout, cluster, secrets, logger, options.restartAgents ?? true);
    this.withController = options.controller ?? false;
    this.withDashboard = options.dashboard ?? false;
    const base = cluster.portBase;
    // the router's and the controller's /metrics, over HTTPS with the cluster's web pair
    const metrics = (offset: number) => ['--metrics', `127.0.0.1:${base + offset}`, '--metrics-cert', layout.webServerFiles.cert, '--metrics-key', layout.webServerFiles.key];
    const routerTls = layout.clientTls('router');
    const routerArgs = ['router', '--etcd', layout.etcdEndpoint(cluster), '--cluster', cluster.cluster];
    routerArgs.push('--etcd-cacert', routerTls.ca, '--etcd-cert', routerTls.cert, '--etcd-key', routerTls.key);
    // no --engine: HAProxy where setup installed it, the builtin engine elsewhere (keel status says which)
    routerArgs.push('--rw', `127.0.0.1:${base + portOffsets.routerRw}`, '--ro', `127.0.0.1:${base + portOffsets.routerRo}`);
    routerArgs.push(...metrics(portOffsets.routerApi));
    // the pooled rw endpoint: TLS with the web pair, PostgreSQL checked against the cluster CA, the application's login
    routerArgs.push('--pool', `127.0.0.1:${base + portOffsets.routerPool}`, '--pool-cert', layout.webServerFiles.cert, '--pool-key', layout.webServerFiles.key);
    routerArgs.push('--pool-cacert', layout.caFiles.cert, '--pool-passfile', layout.pgpassFile);
    const keel = (what: string, args: string[], pidFile: string, logFile: string) =>
      new Supervised({ what, program: process.execPath, args: [keelBin, ...args], pidFile, logFile, logger });
    this.router = keel('router', routerArgs, layout.routerPidFile, layout.routerLog);
    this.controller = keel('controller', ['controller', '--dir', layout.dir, ...metrics(portOffsets.controllerMetrics)], layout.controllerPidFile, layout.controllerLog);
    this.dashboard = keel('dashboard', ['dashboard', '--dir', layout.dir], layout.dashboardPidFile, layout.dashboardLog);
  }

  /** Fails with KEEL_PORT_IN_USE before anything starts. Ports held by our own leftovers do not count. */
  async checkPorts(): Promise<void> {
    const taken: number[] = [];
    for (const port of this.layout.ports(this.cluster)) {
      if (!(await isPortFree('127.0.0.1', port))) taken.push(port);
    }
    if (taken.length > 0) {
      throw new KeelError('KEEL_PORT_IN_USE', `ports already in use on 127.0.0.1: ${taken.join(', ')}`, {
        hint: `stop what listens there (a cluster left running? try \`keel down --dir ${this.layout.dir}\`) or choose another --port-base`,
      });
    }
  }

  /** The cluster's keys as the operator sees them (the supervisor, the CLI and the tests act for the operator). */
  dcs(): EtcdDcs {
    return new EtcdDcs({
      endpoints: [this.layout.etcdEndpoint(this.cluster)],
      cluster: this.cluster.cluster,
      requestTimeoutMs: 2000,
      logger: this.logger,
      credentials: { tls: this.layout.clientTls('operator') },
    });
  }

  async start(): Promise<void> {
    const operator = this.layout.clientTls('operator');
    const etcd = await startEtcd({
      name: 'etcd1',
      dataDir: this.layout.etcdDir,
      clientPort: this.cluster.portBase + portOffsets.etcdClient,
      peerPort: this.cluster.portBase + portOffsets.etcdPeer,
      logFile: this.layout.etcdLog,
      detached: true,
      tls: { ca: this.layout.caFiles.cert, server: this.layout.etcdServerFiles, client: operator },
    });
    this.etcdPid = etcd.pid;
    await writeFile(this.layout.etcdPidFile, `${etcd.pid}\n`);
    // every start, so a cluster made before etcd had users (or a lost role) is brought in line
    await setUpEtcdAuth({
      endpoints: [etcd.endpoint],
      cluster: this.cluster.cluster,
      users: etcdUsers(this.cluster.cluster),
      rootPassword: this.secrets.etcdRoot,
      tls: operator,
      logger: this.logger,
    });
    await this.seedSynchronousMode();
    await this.router.start();
    // before the nodes: the page shows the cluster coming up
    if (this.withDashboard) await this.dashboard.start();
    // a cluster started before is the nodes it has now (a controller may have added, replaced or removed some)
    const existing = this.layout.nodeNames();
    if (existing.length > 0) {
      for (const name of existing) await this.provider.start(name);
    } else {
      for (let i = 0; i < this.cluster.nodes; i++) {
        await this.provider.create(this.cluster.cluster, { name: this.layout.nodeName(i), zone: `local-${String.fromCharCode(97 + (i % 3))}` });
      }
    }
    if (this.withController) await this.controller.start();
  }

  /** Nodes a ready cluster has: those on disk once created (a controller changes their number). */
  private expectedNodes(): number {
    return this.layout.nodeNames().length || this.cluster.nodes;
  }

  /** The replication mode the cluster was made with goes into the first `config` key (later changes go through `keel config`). */
  private async seedSynchronousMode(): Promise<void> {
    const dcs = this.dcs();
    try {
      const view = await dcs.readCluster();
      if (view.config === null) {
        const { defaultDynamicConfig } = await import('../config/schema.js');
        await dcs.putConfig({ ...defaultDynamicConfig, synchronous_mode: this.cluster.synchronousMode }, null);
      }
    } finally {
      await dcs.close();
    }
  }

  /** Resolves once a leader runs and every node streams from it; throws KEEL_TIMEOUT otherwise. */
  async waitReady(timeoutMs: number, onProgress?: (view: ClusterView) => void): Promise<ClusterView> {
    const dcs = this.dcs();
    const deadline = Date.now() + timeoutMs;
    try {
      for (;;) {
        const view = await dcs.readCluster().catch(() => null);
        if (view !== null) {
          onProgress?.(view);
          // ready for applications: the rw endpoint forwards to the leader
          if (isReady(view, this.expectedNodes()) && (await probePostgres('127.0.0.1', this.cluster.portBase + portOffsets.routerRw, 1000))) return view;
        }
        if (Date.now() > deadline) {
          throw new KeelError('KEEL_TIMEOUT', `the cluster in ${this.layout.dir} was not ready within ${Math.round(timeoutMs / 1000)} s`, {
            hint: `look at ${this.layout.dir}/nodes/*/agent.log and postgres.log`,
          });
        }
        await sleep(500);
      }
    } finally {
      await dcs.close();
    }
  }

  /** The dashboard, the controller (it would replace nodes being stopped), the router, then replicas, then the leader, then etcd. */
  async stop(): Promise<void> {
    await this.dashboard.stop();
    await this.controller.stop();
    await this.router.stop();
    let leader: string | null = null;
    const dcs = this.dcs();
    try {
      leader = (await dcs.readCluster()).leader?.value.name ?? null;
    } catch {
      // etcd already gone: order does not matter any more
    } finally {
      await dcs.close();
    }
    const names = (await this.provider.list()).map((n) => n.name);
    await Promise.all(names.filter((n) => n !== leader).map((n) => this.provider.stop(n)));
    if (leader !== null) await this.provider.stop(leader);
    const etcdPid = this.etcdPid ?? readPidFile(this.layout.etcdPidFile);
    if (etcdPid !== null && isAlive(etcdPid)) await stopEtcd(etcdPid, 10_000);
    await rm(this.layout.etcdPidFile, { force: true });
  }
}

/** A leader runs and every other node streams from it on its timeline, all of them reporting within 5 s. */
export function isReady(view: ClusterView, nodes: number, nowMs = Date.now()): boolean {
  const leader = view.members.find((m) => m.name === view.leader?.value.name);
  if (leader === undefined || leader.role !== 'primary') return false;
  const fresh = view.members.filter((m) => m.running && nowMs - m.updatedAtMs < 5000);
  if (fresh.length < nodes) return false;
  return fresh.every((m) => m === leader || (m.role === 'replica' && m.streaming && m.upstream === leader.name && m.timeline === leader.timeline));
}
