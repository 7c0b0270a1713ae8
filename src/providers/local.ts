/**
 * The local provider: each node is an agent process on this machine (zones are
 * labels). It supervises them as systemd would with Restart=always: an agent
 * that dies is started again after a short delay, unless the node was fenced
 * or destroyed.
 */
import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import { defaultLocalInstanceClass } from '../postgres/instance-class.js';
import type { Logger } from '../util/log.js';
import { isAlive, readPidFile, terminate } from '../util/process.js';
import type { ClusterFile, LocalLayout, Secrets } from './local-layout.js';
import type { FenceResult, NodeInfo, NodeSpec, Provider } from './types.js';

export const keelBin = fileURLToPath(new URL('../../bin/keel.js', import.meta.url));

const restartDelayMs = 1000;

interface Supervised {
  spec: NodeSpec;
  index: number;
  pid: number | null;
  /** false once fenced or destroyed: the supervisor leaves it down */
  wanted: boolean;
  restartTimer: NodeJS.Timeout | null;
  /** started by another process sharing the directory (`keel up`, `keel controller`): its PID comes from its pid file */
  adopted: boolean;
}

export class LocalProvider implements Provider {
  private readonly nodes = new Map<string, Supervised>();

  constructor(
    private readonly layout: LocalLayout,
    private readonly cluster: ClusterFile,
    private readonly secrets: Secrets,
    private readonly logger: Logger,
    /** false in tests that kill nodes and decide themselves when they come back */
    private readonly restartAgents = true,
  ) {}

  async list(): Promise<NodeInfo[]> {
    this.syncWithDisk();
    return [...this.nodes.values()].map((node) => this.info(node));
  }

  /** Nodes that another process sharing the directory created or destroyed. */
  private syncWithDisk(): void {
    for (const name of this.layout.nodeNames()) if (!this.nodes.has(name)) this.adopt(name);
    for (const [name, node] of this.nodes) {
      const pid = this.pidOf(node);
      if (!existsSync(this.layout.nodeConfigFile(name)) && (pid === null || !isAlive(pid))) this.nodes.delete(name);
    }
  }

  private adopt(name: string): Supervised | undefined {
    const file = this.layout.nodeConfigFile(name);
    if (!existsSync(file)) return undefined;
    let zone = 'local';
    try {
      zone = (parseYaml(readFileSync(file, 'utf8')) as { zone?: string }).zone ?? zone;
    } catch {
      // a node.yml being written right now: its zone is known on the next listing
    }
    const node: Supervised = { spec: { name, zone }, index: Number(name.replace(/^node/, '')) - 1, pid: null, wanted: true, restartTimer: null, adopted: true };
    this.nodes.set(name, node);
    return node;
  }

  private pidOf(node: Supervised): number | null {
    return node.adopted ? readPidFile(this.layout.agentPidFile(node.spec.name)) : node.pid;
  }

  private info(node: Supervised): NodeInfo {
    const config = this.layout.nodeConfig(this.cluster, this.secrets, node.index);
    const pid = this.pidOf(node);
    return {
      name: node.spec.name,
      zone: node.spec.zone,
      state: pid !== null && isAlive(pid) ? 'running' : 'stopped',
      agentPid: pid,
      pgAddress: `${config.postgres.listen}:${config.postgres.port}`,
      apiAddress: config.api.listen,
    };
  }

  async create(_cluster: string, spec: NodeSpec): Promise<NodeInfo> {
    const index = Number(spec.name.replace(/^node/, '')) - 1;
    const base = this.layout.nodeConfig(this.cluster, this.secrets, index);
    // the agent turns its class into PostgreSQL parameters (postgres/instance-class.ts)
    const tags = { ...base.tags, instanceClass: spec.instanceClass ?? defaultLocalInstanceClass };
    await this.layout.writeNodeConfig({ ...base, zone: spec.zone, tags });
    await rm(this.layout.fencedMarker(spec.name), { force: true });
    const node: Supervised = { spec, index, pid: null, wanted: true, restartTimer: null, adopted: false };
    this.nodes.set(spec.name, node);
    // An agent left running by a supervisor that died keeps its node: adopt it.
    const leftover = readPidFile(this.layout.agentPidFile(spec.name));
    if (leftover !== null && isAlive(leftover)) node.pid = leftover;
    else this.startAgent(node);
    return this.info(node);
  }

  private startAgent(node: Supervised): void {
    const name = node.spec.name;
    // another process may have fenced or destroyed the node meanwhile
    if (!node.wanted || existsSync(this.layout.fencedMarker(name)) || !existsSync(this.layout.nodeConfigFile(name))) return;
    const log = openSync(this.layout.agentLog(name), 'a');
    const child = spawn(process.execPath, [keelBin, 'agent', '--config', this.layout.nodeConfigFile(name)], {
      // Own process group: Ctrl-C on `keel up` reaches the supervisor, which stops agents in order.
      detached: true,
      stdio: ['ignore', log, log],
    });
    closeSync(log);
    node.pid = child.pid ?? null;
    node.adopted = false;
    if (node.pid !== null) void writeFile(this.layout.agentPidFile(name), `${node.pid}\n`);
    this.logger.info({ node: name, pid: node.pid }, 'agent started');
    child.on('exit', (code, signal) => {
      node.pid = null;
      if (!node.wanted || !this.restartAgents) return;
      this.logger.warn({ node: name, code, signal }, `agent exited; starting it again in ${restartDelayMs} ms`);
      node.restartTimer = setTimeout(() => {
        node.restartTimer = null;
        this.startAgent(node);
      }, restartDelayMs);
    });
  }

  /** Starts the agent of a known node again (after stop or fence). */
  async start(name: string): Promise<void> {
    const node = this.nodes.get(name) ?? this.adopt(name);
    if (node === undefined) throw new Error(`${name} is not a node of this provider`);
    node.wanted = true;
    await rm(this.layout.fencedMarker(name), { force: true });
    const pid = this.pidOf(node);
    if (pid === null || !isAlive(pid)) this.startAgent(node);
  }

  /** Stops the agent (which stops its PostgreSQL first) and leaves it down. */
  async stop(name: string, graceMs = 60_000): Promise<void> {
    const node = this.nodes.get(name) ?? this.adopt(name);
    if (node === undefined) return;
    node.wanted = false;
    if (node.restartTimer) clearTimeout(node.restartTimer);
    const pid = this.pidOf(node);
    if (pid !== null) await terminate(pid, graceMs);
    await rm(this.layout.agentPidFile(name), { force: true });
  }

  async destroy(name: string): Promise<void> {
    await this.fence(name);
    await rm(this.layout.nodeDir(name), { recursive: true, force: true });
    this.nodes.delete(name);
  }

  /** Kills the agent and its postmaster; confirmed only when both PIDs are gone. */
  async fence(name: string): Promise<FenceResult> {
    const node = this.nodes.get(name) ?? this.adopt(name);
    if (node === undefined) return { confirmed: false, detail: `${name} is not a node of this provider` };
    node.wanted = false;
    if (node.restartTimer) clearTimeout(node.restartTimer);
    // written before the kill: a supervisor in another process sees it before it would restart the agent
    await writeFile(this.layout.fencedMarker(name), `${Date.now()}\n`);
    const agent = this.pidOf(node);
    const postmaster = readPidFile(`${this.layout.dataDir(name)}/postmaster.pid`);
    for (const pid of [agent, postmaster]) if (pid !== null) await terminate(pid, 0, 'SIGKILL');
    const alive = [agent, postmaster].filter((pid): pid is number => pid !== null && isAlive(pid));
    return alive.length === 0
      ? { confirmed: true, detail: `${name}: agent and postmaster are gone` }
      : { confirmed: false, detail: `${name}: processes ${alive.join(', ')} still alive` };
  }
}
