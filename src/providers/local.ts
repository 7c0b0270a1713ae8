/**
 * The local provider: each node is an agent process on this machine (zones are
 * labels). It supervises them as systemd would with Restart=always: an agent
 * that dies is started again after a short delay, unless the node was fenced
 * or destroyed.
 */
import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
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
    return [...this.nodes.values()].map((node) => this.info(node));
  }

  private info(node: Supervised): NodeInfo {
    const config = this.layout.nodeConfig(this.cluster, this.secrets, node.index);
    return {
      name: node.spec.name,
      zone: node.spec.zone,
      state: node.pid !== null && isAlive(node.pid) ? 'running' : 'stopped',
      agentPid: node.pid,
      pgAddress: `${config.postgres.listen}:${config.postgres.port}`,
      apiAddress: config.api.listen,
    };
  }

  async create(_cluster: string, spec: NodeSpec): Promise<NodeInfo> {
    const index = Number(spec.name.replace(/^node/, '')) - 1;
    const config = { ...this.layout.nodeConfig(this.cluster, this.secrets, index), zone: spec.zone };
    await this.layout.writeNodeConfig(config);
    const node: Supervised = { spec, index, pid: null, wanted: true, restartTimer: null };
    this.nodes.set(spec.name, node);
    // An agent left running by a supervisor that died keeps its node: adopt it.
    const leftover = readPidFile(this.layout.agentPidFile(spec.name));
    if (leftover !== null && isAlive(leftover)) node.pid = leftover;
    else this.startAgent(node);
    return this.info(node);
  }

  private startAgent(node: Supervised): void {
    if (!node.wanted) return;
    const name = node.spec.name;
    const log = openSync(this.layout.agentLog(name), 'a');
    const child = spawn(process.execPath, [keelBin, 'agent', '--config', this.layout.nodeConfigFile(name)], {
      // Own process group: Ctrl-C on `keel up` reaches the supervisor, which stops agents in order.
      detached: true,
      stdio: ['ignore', log, log],
    });
    closeSync(log);
    node.pid = child.pid ?? null;
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
    const node = this.nodes.get(name);
    if (node === undefined) throw new Error(`${name} is not a node of this provider`);
    node.wanted = true;
    if (node.pid === null || !isAlive(node.pid)) this.startAgent(node);
  }

  /** Stops the agent (which stops its PostgreSQL first) and leaves it down. */
  async stop(name: string, graceMs = 60_000): Promise<void> {
    const node = this.nodes.get(name);
    if (node === undefined) return;
    node.wanted = false;
    if (node.restartTimer) clearTimeout(node.restartTimer);
    if (node.pid !== null) await terminate(node.pid, graceMs);
    await rm(this.layout.agentPidFile(name), { force: true });
  }

  async destroy(name: string): Promise<void> {
    await this.fence(name);
    await rm(this.layout.nodeDir(name), { recursive: true, force: true });
    this.nodes.delete(name);
  }

  /** Kills the agent and its postmaster; confirmed only when both PIDs are gone. */
  async fence(name: string): Promise<FenceResult> {
    const node = this.nodes.get(name);
    if (node === undefined) return { confirmed: false, detail: `${name} is not a node of this provider` };
    node.wanted = false;
    if (node.restartTimer) clearTimeout(node.restartTimer);
    const postmaster = readPidFile(`${this.layout.dataDir(name)}/postmaster.pid`);
    for (const pid of [node.pid, postmaster]) if (pid !== null) await terminate(pid, 0, 'SIGKILL');
    const alive = [node.pid, postmaster].filter((pid): pid is number => pid !== null && isAlive(pid));
    return alive.length === 0
      ? { confirmed: true, detail: `${name}: agent and postmaster are gone` }
      : { confirmed: false, detail: `${name}: processes ${alive.join(', ')} still alive` };
  }
}
