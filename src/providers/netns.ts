/**
 * The netns provider (tests): each node, its agent and its PostgreSQL, lives
 * in its own network namespace with its own address on a private bridge
 * (netns-net.ts). A node can then be killed, frozen or cut off from the
 * network alone, as a machine would be.
 *
 * Each node's fencing guard (`keel guard`) runs in the node's namespace too,
 * started before the agent: it stops PostgreSQL when the agent stops feeding
 * it lease deadlines.
 *
 * Agents are not restarted on their own: the caller (a fault-injection suite)
 * decides when a node comes back, as systemd or a controller would. Agents
 * that exit unexpectedly are recorded in `exits`.
 */
import { spawn } from 'node:child_process';
import { closeSync, existsSync } from 'node:fs';
import { chmod, mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { stringify as toYaml } from 'yaml';
import type { DynamicConfig, NodeConfig } from '../config/schema.js';
import type { Logger } from '../util/log.js';
import { verifiedPostmasterPid } from '../postgres/postmaster.js';
import { isAlive, terminate } from '../util/process.js';
import { etcdUsers, nodeApiToken, type Secrets } from './local-layout.js';
import { resolveRunAs } from '../postgres/programs.js';
import { issueCertificate, type CertificatePair } from '../tls/pki.js';
import { guardBin, keelBin, waitForSocket } from './local.js';
import { killNamespace, NetnsError, signalNamespace, type NetnsNetwork } from './netns-net.js';
import type { FenceResult, NodeInfo, NodeSpec, Provider } from './types.js';
import { openLogFile } from '../util/log-file.js';
import { agentEnvironment, agentNodeFlags } from './agent-process.js';

export const netnsPgPort = 5432;
export const netnsApiPort = 8008;

export interface NetnsProviderOptions {
  net: NetnsNetwork;
  /** node directories go to <dir>/nodes/<name> */
  dir: string;
  cluster: string;
  secrets: Secrets;
  /** client URLs of the etcd members, reachable from the nodes' namespaces */
  etcdEndpoints: string[];
  /** written to node.yml as bootstrap.dynamic */
  dynamic?: DynamicConfig;
  /** the last octet of the first node's address; the next nodes take the following ones */
  firstOctet?: number;
  logger: Logger;
  /**
   * TLS for the nodes: the cluster CA that issues each node's pairs, and the names besides its own address
   * its certificate carries (where clients reach it through a router, e.g. 127.0.0.1)
   */
  tls?: { ca: CertificatePair; serverNames: string[] };
}

/** A netns node's pairs, in its directory (kept by root; PostgreSQL owns only nodeDir/postgres). */
function nodePairs(nodeDir: string): { node: CertificatePair; replication: CertificatePair } {
  const dir = join(nodeDir, 'tls');
  return { node: { cert: join(dir, 'node.crt'), key: join(dir, 'node.key') }, replication: { cert: join(dir, 'replication.crt'), key: join(dir, 'replication.key') } };
}

export interface AgentExit {
  node: string;
  pid: number;
  code: number | null;
  signal: NodeJS.Signals | null;
  atMs: number;
  /** false when nobody asked for it: the agent died by itself */
  expected: boolean;
}

interface NetnsNode {
  spec: NodeSpec;
  config: NodeConfig;
  configFile: string;
  pid: number | null;
  /** set right before we kill or stop the agent, so its exit is not taken for a crash */
  expectingExit: boolean;
  guardPid: number | null;
}

/** node.yml for a node of a netns cluster: everything listens on the node's own address. */
export function netnsNodeConfig(options: {
  name: string;
  cluster: string;
  zone: string;
  address: string;
  nodeDir: string;
  secrets: Secrets;
  etcdEndpoints: string[];
  dynamic?: DynamicConfig;
  /** the cluster CA's certificate: with it the node runs TLS with the pairs in nodeDir/tls */
  caCert?: string;
}): NodeConfig {
  const { address, secrets, caCert } = options;
  const pairs = nodePairs(options.nodeDir);
  const tls = caCert === undefined ? undefined : { ca: caCert, ...pairs.node };
  const etcdTls = tls !== undefined && options.etcdEndpoints.every((url) => url.startsWith('https:')) ? { tls } : {};
  // the hosts' /24 (netns-net.ts): the cluster and its clients live there
  const netnsRange = `${address.split('.').slice(0, 3).join('.')}.0/24`;
  return {
    name: options.name,
    cluster: options.cluster,
    zone: options.zone,
    tags: { nofailover: false },
    etcd: { endpoints: options.etcdEndpoints, requestTimeoutMs: 2000, ...etcdTls },
    api: { listen: `${address}:${netnsApiPort}`, connectAddress: `${address}:${netnsApiPort}`, token: nodeApiToken(secrets, options.name), readAuth: false },
    postgres: {
      // PostgreSQL's OS user owns nodeDir/postgres alone: node.yml and the keys' directory stay root's
      dataDir: join(options.nodeDir, 'postgres', 'data'),
      binDir: '/usr/lib/postgresql/15/bin',
      listen: address,
      port: netnsPgPort,
      connectAddress: `${address}:${netnsPgPort}`,
      database: 'app',
      superuser: { username: 'postgres', password: secrets.superuser },
      replication: tls === undefined ? { username: 'replicator', password: secrets.replication } : { username: 'replicator', ...pairs.replication },
      ...(tls === undefined ? {} : { rewind: { username: 'keel_rewind', password: secrets.rewind }, app: { username: 'app', password: secrets.app } }),
      // the router reaches the nodes from the root namespace's address on the same /24
      hba: { cluster: [netnsRange], applications: [netnsRange] },
      extensions: ['postgis'],
    },
    guard: { socket: join(options.nodeDir, 'guard.sock') },
    ...(tls === undefined ? {} : { tls }),
    bootstrap: { dynamic: options.dynamic },
  };
}

export class NetnsProvider implements Provider {
  private readonly nodes = new Map<string, NetnsNode>();
  private nextOctet: number;
  readonly exits: AgentExit[] = [];

  constructor(private readonly options: NetnsProviderOptions) {
    this.nextOctet = options.firstOctet ?? 21;
  }

  private get net(): NetnsNetwork {
    return this.options.net;
  }

  nodeDir(name: string): string {
    return join(this.options.dir, 'nodes', name);
  }

  agentLog(name: string): string {
    return join(this.nodeDir(name), 'agent.log');
  }

  guardLog(name: string): string {
    return join(this.nodeDir(name), 'guard.log');
  }

  guardPidFile(name: string): string {
    return join(this.nodeDir(name), 'guard.pid');
  }

  postgresLog(name: string): string {
    return join(this.nodeDir(name), 'postgres', 'postgres.log');
  }

  dataDir(name: string): string {
    return this.node(name).config.postgres.dataDir;
  }

  address(name: string): string {
    return this.net.host(name).address;
  }

  names(): string[] {
    return [...this.nodes.keys()];
  }

  private node(name: string): NetnsNode {
    const node = this.nodes.get(name);
    if (node === undefined) throw new NetnsError(`${name} is not a node of this provider`);
    return node;
  }

  private info(node: NetnsNode): NodeInfo {
    return {
      name: node.spec.name,
      zone: node.spec.zone,
      state: node.pid !== null && isAlive(node.pid) ? 'running' : 'stopped',
      agentPid: node.pid,
      pgAddress: `${node.config.postgres.listen}:${node.config.postgres.port}`,
      apiAddress: node.config.api.listen,
    };
  }

  async list(cluster: string): Promise<NodeInfo[]> {
    if (cluster !== this.options.cluster) return [];
    return [...this.nodes.values()].map((node) => this.info(node));
  }

  /** A new namespace and address, node.yml, and a running agent that bootstraps or clones. */
  async create(cluster: string, spec: NodeSpec): Promise<NodeInfo> {
    if (cluster !== this.options.cluster) throw new NetnsError(`this provider serves cluster ${this.options.cluster}, not ${cluster}`);
    if (this.nodes.has(spec.name)) throw new NetnsError(`${spec.name} exists already`);
    const host = await this.net.addHost(spec.name, this.nextOctet++);
    const nodeDir = this.nodeDir(spec.name);
    const config = netnsNodeConfig({
      name: spec.name,
      cluster,
      zone: spec.zone,
      address: host.address,
      nodeDir,
      secrets: this.options.secrets,
      etcdEndpoints: this.options.etcdEndpoints,
      dynamic: this.options.dynamic,
      ...(this.options.tls === undefined ? {} : { caCert: this.options.tls.ca.cert }),
    });
    await mkdir(nodeDir, { recursive: true });
    // PostgreSQL runs as another user when we are root: it must be able to enter the node directory
    await chmod(nodeDir, 0o755);
    if (this.options.tls !== undefined) {
      const { ca, serverNames } = this.options.tls;
      const pairs = nodePairs(nodeDir);
      const keyOwner = resolveRunAs(config);
      await issueCertificate(ca, pairs.node, { commonName: etcdUsers(cluster).agent, names: [host.address, ...serverNames], usage: 'both', keyOwner });
      await issueCertificate(ca, pairs.replication, { commonName: config.postgres.replication.username, usage: 'client', keyOwner });
    }
    const configFile = join(nodeDir, 'node.yml');
    const { bootstrap, ...rest } = config;
    await writeFile(configFile, toYaml(bootstrap.dynamic ? config : rest), { mode: 0o600 });
    const node: NetnsNode = { spec, config, configFile, pid: null, expectingExit: false, guardPid: null };
    this.nodes.set(spec.name, node);
    await this.spawnGuard(node);
    this.spawnAgent(node);
    return this.info(node);
  }

  /** The node's guard in its namespace, waited for until it listens: it comes before the agent and PostgreSQL. */
  private async spawnGuard(node: NetnsNode): Promise<void> {
    const name = node.spec.name;
    const socket = node.config.guard?.socket;
    if (socket === undefined) return;
    const log = openLogFile(this.guardLog(name));
    try {
      const child = spawn('ip', [...this.net.execArgs(name), process.execPath, guardBin, '--config', node.configFile], {
        detached: true,
        stdio: ['ignore', log, log],
      });
      const pid = child.pid ?? null;
      node.guardPid = pid;
      child.once('exit', () => {
        if (node.guardPid === pid) node.guardPid = null;
      });
      child.unref();
      if (pid !== null) await writeFile(this.guardPidFile(name), `${pid}\n`);
      this.options.logger.info({ node: name, pid }, 'guard started');
    } finally {
      closeSync(log);
    }
    if (!(await waitForSocket(socket, 5000))) this.options.logger.warn({ node: name, socket }, 'the guard does not listen yet; its agent waits for it');
  }

  guardPid(name: string): number | null {
    const pid = this.node(name).guardPid;
    return pid !== null && isAlive(pid) ? pid : null;
  }

  private spawnAgent(node: NetnsNode): void {
    const name = node.spec.name;
    const log = openLogFile(this.agentLog(name));
    try {
      // `ip netns exec` execs the program itself: the child's pid is the agent's
      const child = spawn('ip', [...this.net.execArgs(name), process.execPath, ...agentNodeFlags(), keelBin, 'agent', '--config', node.configFile], {
        env: agentEnvironment(),
        detached: true,
        stdio: ['ignore', log, log],
      });
      const pid = child.pid ?? null;
      node.pid = pid;
      node.expectingExit = false;
      child.once('exit', (code, signal) => {
        if (pid !== null) {
          this.exits.push({ node: name, pid, code, signal, atMs: Date.now(), expected: node.expectingExit });
          if (!node.expectingExit) this.options.logger.warn({ node: name, pid, code, signal }, 'agent exited by itself');
        }
        if (node.pid === pid) node.pid = null;
      });
      child.unref();
      this.options.logger.info({ node: name, pid }, 'agent started');
    } finally {
      closeSync(log);
    }
  }

  agentPid(name: string): number | null {
    const pid = this.node(name).pid;
    return pid !== null && isAlive(pid) ? pid : null;
  }

  /** Only a PID that /proc shows to be the node's postmaster: a stale postmaster.pid may name any process. */
  postmasterPid(name: string): number | null {
    return verifiedPostmasterPid(this.dataDir(name));
  }

  /** Starts the agent of a known node again (after a kill, stop or fence), with its link up and healed. */
  async start(name: string): Promise<void> {
    const node = this.node(name);
    await this.net.heal(name);
    if (!(await this.net.linkUp(name))) await this.net.setLink(name, true);
    if (this.guardPid(name) === null) await this.spawnGuard(node);
    if (node.pid !== null && isAlive(node.pid)) return;
    this.spawnAgent(node);
  }

  /** Clean stop: SIGTERM to the agent (which stops PostgreSQL first), SIGKILL after the grace period; then its guard. */
  async stop(name: string, graceMs = 60_000): Promise<void> {
    const node = this.node(name);
    node.expectingExit = true;
    if (node.pid !== null) await terminate(node.pid, graceMs);
    const guard = this.guardPid(name);
    if (guard !== null) await terminate(guard, 5000);
    await killNamespace(this.net.host(name).namespace);
  }

  /** SIGKILL of every process of the node: agent, postmaster, backends, any pg_basebackup. Network untouched. */
  async kill(name: string): Promise<number[]> {
    const node = this.node(name);
    node.expectingExit = true;
    const before = await this.net.pids(name);
    const left = await killNamespace(this.net.host(name).namespace);
    if (left.length > 0) throw new NetnsError(`${name}: processes ${left.join(', ')} survived SIGKILL`);
    return before;
  }

  /** SIGKILL of the postmaster alone; the agent lives on. Returns its pid, or null when none ran. */
  async killPostmaster(name: string): Promise<number | null> {
    const pid = this.postmasterPid(name);
    if (pid === null) return null;
    process.kill(pid, 'SIGKILL');
    return pid;
  }

  /**
   * One signal to the node's agent alone; PostgreSQL and every other process
   * of the node go on: SIGKILL as an agent crash (start() brings it back, as
   * a supervisor would), SIGSTOP/SIGCONT as an agent stall. Returns the pid
   * signalled, or null when no agent runs.
   */
  signalAgent(name: string, signal: 'SIGKILL' | 'SIGSTOP' | 'SIGCONT'): number | null {
    const node = this.node(name);
    const pid = this.agentPid(name);
    if (pid === null) return null;
    if (signal === 'SIGKILL') node.expectingExit = true;
    process.kill(pid, signal);
    return pid;
  }

  /** SIGSTOP of every process of the node; returns the pids stopped (thaw() continues them). */
  freeze(name: string): Promise<number[]> {
    return signalNamespace(this.net.host(name).namespace, 'SIGSTOP');
  }

  async thaw(name: string): Promise<number[]> {
    return signalNamespace(this.net.host(name).namespace, 'SIGCONT');
  }

  /** Drops every packet to and from the node (etcd, other nodes, the router); its processes run on. */
  isolate(name: string): Promise<void> {
    return this.net.isolate(name);
  }

  heal(name: string): Promise<void> {
    return this.net.heal(name);
  }

  /**
   * Stops the node for good: SIGKILL of all its processes and its link
   * down, so even a process we could not see cannot reach anyone. Confirmed
   * only when both are done: no process left in the namespace and the link
   * reported down.
   */
  async fence(name: string): Promise<FenceResult> {
    const node = this.nodes.get(name);
    if (node === undefined) return { confirmed: false, detail: `${name} is not a node of this provider` };
    node.expectingExit = true;
    const problems: string[] = [];
    try {
      await this.net.setLink(name, false);
    } catch (err) {
      problems.push(`link down failed: ${(err as Error).message}`);
    }
    let left: number[] = [];
    try {
      left = await killNamespace(this.net.host(name).namespace);
    } catch (err) {
      problems.push(`kill failed: ${(err as Error).message}`);
    }
    if (left.length > 0) problems.push(`processes ${left.join(', ')} still alive`);
    const down = await this.net.linkUp(name).then(
      (up) => !up,
      () => false,
    );
    if (!down) problems.push('link not down');
    return problems.length === 0
      ? { confirmed: true, detail: `${name}: every process killed and its link down` }
      : { confirmed: false, detail: `${name}: ${problems.join('; ')}` };
  }

  /** Fences the node, then removes its namespace and its files. */
  async destroy(name: string): Promise<void> {
    if (!this.nodes.has(name)) return;
    await this.fence(name);
    await this.net.removeHost(name);
    await rm(this.nodeDir(name), { recursive: true, force: true });
    this.nodes.delete(name);
  }

  /** Removes the node's data directory (the node must be stopped): its next start clones anew. */
  async removeData(name: string): Promise<void> {
    if ((await this.net.pids(name)).length > 0) throw new NetnsError(`${name} still runs: stop or kill it before removing its data`);
    const dataDir = this.dataDir(name);
    if (existsSync(dataDir)) await rm(dataDir, { recursive: true, force: true });
  }

  /** Kills every node's processes (by namespace); the namespaces stay for NetnsNetwork.destroy(). */
  async killAll(): Promise<void> {
    for (const node of this.nodes.values()) node.expectingExit = true;
    await Promise.all(this.names().map((name) => killNamespace(this.net.host(name).namespace)));
  }
}
