/**
 * Everything `keel up` runs on this machine: an embedded etcd and the agents
 * of the local provider, started in order and stopped in reverse (replicas
 * first, the leader last, etcd at the very end) so that a restart on the same
 * directory finds a cleanly shut down cluster.
 */
import { rm, writeFile } from 'node:fs/promises';
import { stopEtcd, startEtcd } from '../dcs/etcd-server.js';
import { EtcdDcs } from '../dcs/etcd.js';
import type { ClusterView } from '../dcs/types.js';
import { KeelError } from '../errors.js';
import { sleep } from '../util/clock.js';
import type { Logger } from '../util/log.js';
import { isPortFree } from '../util/ports.js';
import { isAlive, readPidFile } from '../util/process.js';
import { portOffsets, type ClusterFile, type LocalLayout, type Secrets } from './local-layout.js';
import { LocalProvider } from './local.js';

export class LocalCluster {
  readonly provider: LocalProvider;
  private etcdPid: number | null = null;

  constructor(
    readonly layout: LocalLayout,
    readonly cluster: ClusterFile,
    readonly secrets: Secrets,
    private readonly logger: Logger,
    options: { restartAgents?: boolean } = {},
  ) {
    this.provider = new LocalProvider(layout, cluster, secrets, logger, options.restartAgents ?? true);
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

  dcs(): EtcdDcs {
    return new EtcdDcs({
      endpoints: [this.layout.etcdEndpoint(this.cluster)],
      cluster: this.cluster.cluster,
      requestTimeoutMs: 2000,
      logger: this.logger,
    });
  }

  async start(): Promise<void> {
    const etcd = await startEtcd({
      name: 'etcd1',
      dataDir: this.layout.etcdDir,
      clientPort: this.cluster.portBase + portOffsets.etcdClient,
      peerPort: this.cluster.portBase + portOffsets.etcdPeer,
      logFile: this.layout.etcdLog,
      detached: true,
    });
    this.etcdPid = etcd.pid;
    await writeFile(this.layout.etcdPidFile, `${etcd.pid}\n`);
    if (this.cluster.synchronousMode !== 'off') await this.seedSynchronousMode();
    for (let i = 0; i < this.cluster.nodes; i++) {
      await this.provider.create(this.cluster.cluster, { name: this.layout.nodeName(i), zone: `local-${String.fromCharCode(97 + (i % 3))}` });
    }
  }

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
          if (isReady(view, this.cluster.nodes)) return view;
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

  /** Replicas first, then the leader, then etcd. */
  async stop(): Promise<void> {
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

export function isReady(view: ClusterView, nodes: number): boolean {
  const leader = view.leader?.value.name;
  if (leader === undefined) return false;
  const members = view.members.filter((m) => m.running);
  if (members.length < nodes) return false;
  return members.every((m) => (m.name === leader ? m.role === 'primary' : m.role === 'replica' && m.streaming));
}
