/**
 * The local provider: each node is an agent process on this machine (zones are
 * labels), with its fencing guard (`keel guard`) started before it. It
 * supervises them as systemd would with Restart=always: an agent or guard
 * that dies is started again after a short delay, unless the node was fenced
 * or destroyed.
 */
import { spawn } from 'node:child_process';
import { closeSync, existsSync, readFileSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import { loadNodeConfig } from '../config/load.js';
import type { NodeConfig } from '../config/schema.js';
import { defaultLocalInstanceClass } from '../postgres/instance-class.js';
import { terminatePostmaster } from '../postgres/postmaster.js';
import type { Logger } from '../util/log.js';
import { commandLine, isAlive, readPidFile, terminate } from '../util/process.js';
import type { ClusterFile, LocalLayout, Secrets } from './local-layout.js';
import { resolveRunAs } from '../postgres/programs.js';
import type { FenceResult, NodeInfo, NodeSpec, Provider } from './types.js';
import { openLogFile } from '../util/log-file.js';
import { socketAnswers } from '../util/unix-socket.js';
import { agentEnvironment, agentNodeFlags } from './agent-process.js';

export const keelBin = fileURLToPath(new URL('../../bin/keel.js', import.meta.url));
/** the guard's own entry: it loads none of the CLI's other commands, so the process stays small */
export const guardBin = fileURLToPath(new URL('../../dist/guard/main.js', import.meta.url));

/** The guard's socket from node.yml, or null when the node has no guard block (or no readable config). */
export function guardSocketOf(configFile: string): string | null {
  try {
    return loadNodeConfig(configFile).guard?.socket ?? null;
  } catch {
    return null;
  }
}

/** Whether `pid` is a guard started on this node.yml: a stale PID file may name any process by now. */
export function isGuardProcess(pid: number, configFile: string): boolean {
  const args = commandLine(pid);
  return args !== null && args.some((arg) => arg.endsWith('guard/main.js') || arg === 'guard') && args.includes(configFile);
}

/** Whether `pid` is an agent started on this node.yml. */
export function isAgentProcess(pid: number, configFile: string): boolean {
  const args = commandLine(pid);
  return args !== null && args.includes('agent') && args.includes(configFile);
}

/** Resolves once something accepts connections on the socket, or after `timeoutMs` (false). */
export async function waitForSocket(path: string, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await socketAnswers(path)) return true;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return false;
}

const restartDelayMs = 1000;

interface Supervised {
  spec: NodeSpec;
  index: number;
  pid: number | null;
  /** false once fenced or destroyed: the supervisor leaves it down */
  wanted: boolean;
  restartTimer: NodeJS.Timeout | null;
  /** the fencing guard this process started (null: none, or one adopted through its PID file) */
  guardPid: number | null;
  guardRestartTimer: NodeJS.Timeout | null;
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
    const node: Supervised = {
      spec: { name, zone },
      index: Number(name.replace(/^node/, '')) - 1,
      pid: null,
      wanted: true,
      restartTimer: null,
      guardPid: null,
      guardRestartTimer: null,
      adopted: true,
    };
    this.nodes.set(name, node);
    return node;
  }

  /**
   * The node's agent: the child this process started while it lives, else
   * whatever agent of this node.yml its PID file names (another process
   * sharing the directory, such as `keel controller`, may have destroyed and
   * created the node again meanwhile).
   */
  private pidOf(node: Supervised): number | null {
    if (!node.adopted && node.pid !== null && isAlive(node.pid)) return node.pid;
    const recorded = readPidFile(this.layout.agentPidFile(node.spec.name));
    if (recorded !== null && isAgentProcess(recorded, this.layout.nodeConfigFile(node.spec.name))) return recorded;
    return node.adopted ? null : node.pid;
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
    const config: NodeConfig = { ...base, zone: spec.zone, tags };
    await this.layout.writeNodeConfig(this.cluster, config, resolveRunAs(config));
    await rm(this.layout.fencedMarker(spec.name), { force: true });
    const node: Supervised = { spec, index, pid: null, wanted: true, restartTimer: null, guardPid: null, guardRestartTimer: null, adopted: false };
    this.nodes.set(spec.name, node);
    // An agent left running by a supervisor that died keeps its node: adopt it.
    const leftover = readPidFile(this.layout.agentPidFile(spec.name));
    if (leftover !== null && isAlive(leftover)) {
      node.pid = leftover;
      await this.ensureGuard(node);
    } else {
      await this.startAgent(node);
    }
    return this.info(node);
  }

  /** The node's live guard: the one we started, else the one its PID file names if that really is its guard. */
  private guardPidOf(node: Supervised): number | null {
    const configFile = this.layout.nodeConfigFile(node.spec.name);
    for (const pid of [node.guardPid, readPidFile(this.layout.guardPidFile(node.spec.name))]) {
      if (pid !== null && isGuardProcess(pid, configFile)) return pid;
    }
    return null;
  }

  /**
   * Starts the node's fencing guard unless it runs, and waits until it
   * listens: the guard comes before the agent (and so before PostgreSQL).
   * A node.yml without a guard block (written before guards existed) runs without one.
   */
  private async ensureGuard(node: Supervised): Promise<void> {
    const name = node.spec.name;
    const configFile = this.layout.nodeConfigFile(name);
    if (!node.wanted || existsSync(this.layout.fencedMarker(name)) || !existsSync(configFile)) return;
    const socket = guardSocketOf(configFile);
    if (socket === null || this.guardPidOf(node) !== null) return;
    const log = openLogFile(this.layout.guardLog(name));
    const child = spawn(process.execPath, [guardBin, '--config', configFile], { detached: true, stdio: ['ignore', log, log] });
    closeSync(log);
    const pid = child.pid ?? null;
    node.guardPid = pid;
    if (pid !== null) await writeFile(this.layout.guardPidFile(name), `${pid}\n`);
    this.logger.info({ node: name, pid }, 'guard started');
    child.on('exit', (code, signal) => {
      if (node.guardPid === pid) node.guardPid = null;
      if (!node.wanted) return;
      // without its guard the agent keeps a running primary but takes no leader key and promotes nothing
      this.logger.warn({ node: name, code, signal }, `guard exited; starting it again in ${restartDelayMs} ms`);
      if (node.guardRestartTimer !== null) clearTimeout(node.guardRestartTimer);
      node.guardRestartTimer = setTimeout(() => {
        node.guardRestartTimer = null;
        void this.ensureGuard(node);
      }, restartDelayMs);
    });
    if (!(await waitForSocket(socket, 5000))) this.logger.warn({ node: name, socket }, 'the guard does not listen yet; its agent waits for it');
  }

  private async startAgent(node: Supervised): Promise<void> {
    const name = node.spec.name;
    // another process may have fenced or destroyed the node meanwhile
    if (!node.wanted || existsSync(this.layout.fencedMarker(name)) || !existsSync(this.layout.nodeConfigFile(name))) return;
    await this.ensureGuard(node);
    if (!node.wanted || existsSync(this.layout.fencedMarker(name))) return;
    const log = openLogFile(this.layout.agentLog(name));
    const child = spawn(process.execPath, [...agentNodeFlags(), keelBin, 'agent', '--config', this.layout.nodeConfigFile(name)], {
      env: agentEnvironment(),
      // Own process group: Ctrl-C on `keel up` reaches the supervisor, which stops agents in order.
      detached: true,
      stdio: ['ignore', log, log],
    });
    closeSync(log);
    const pid = child.pid ?? null;
    node.pid = pid;
    node.adopted = false;
    if (pid !== null) void writeFile(this.layout.agentPidFile(name), `${pid}\n`);
    this.logger.info({ node: name, pid }, 'agent started');
    child.on('exit', (code, signal) => {
      // an agent started again meanwhile keeps its PID
      if (node.pid === pid) node.pid = null;
      if (!node.wanted || !this.restartAgents) return;
      this.logger.warn({ node: name, code, signal }, `agent exited; starting it again in ${restartDelayMs} ms`);
      node.restartTimer = setTimeout(() => {
        node.restartTimer = null;
        void this.startAgent(node);
      }, restartDelayMs);
    });
  }

  /** Starts the agent of a known node again (after stop or fence). */
  async start(name: string): Promise<void> {
    const node = this.nodes.get(name) ?? this.adopt(name);
    if (node === undefined) throw new Error(`${name} is not a node of this provider`);
    node.wanted = true;
    await rm(this.layout.fencedMarker(name), { force: true });
    await this.ensureGuard(node);
    const pid = this.pidOf(node);
    if (pid === null || !isAlive(pid)) await this.startAgent(node);
  }

  /** Stops the agent (which stops its PostgreSQL first), then its guard, and leaves them down. */
  async stop(name: string, graceMs = 60_000): Promise<void> {
    const node = this.nodes.get(name) ?? this.adopt(name);
    if (node === undefined) return;
    node.wanted = false;
    if (node.restartTimer) clearTimeout(node.restartTimer);
    if (node.guardRestartTimer) clearTimeout(node.guardRestartTimer);
    const pid = this.pidOf(node);
    if (pid !== null) await terminate(pid, graceMs);
    await rm(this.layout.agentPidFile(name), { force: true });
    const guard = this.guardPidOf(node);
    if (guard !== null) await terminate(guard, 5000);
    await rm(this.layout.guardPidFile(name), { force: true });
  }

  async destroy(name: string): Promise<void> {
    await this.fence(name);
    await rm(this.layout.nodeDir(name), { recursive: true, force: true });
    this.nodes.delete(name);
  }

  /** Kills the agent, its postmaster and its guard; confirmed only when every PID is gone. */
  async fence(name: string): Promise<FenceResult> {
    const node = this.nodes.get(name) ?? this.adopt(name);
    if (node === undefined) return { confirmed: false, detail: `${name} is not a node of this provider` };
    node.wanted = false;
    if (node.restartTimer) clearTimeout(node.restartTimer);
    if (node.guardRestartTimer) clearTimeout(node.guardRestartTimer);
    // written before the kill: a supervisor in another process sees it before it would restart the agent
    await writeFile(this.layout.fencedMarker(name), `${Date.now()}\n`);
    const agent = this.pidOf(node);
    const guard = this.guardPidOf(node);
    if (agent !== null) await terminate(agent, 0, 'SIGKILL');
    // only a PID that /proc shows to be this data directory's postmaster: postmaster.pid may be stale
    const postmaster = await terminatePostmaster(this.layout.dataDir(name), { signal: 'SIGKILL', graceMs: 0 });
    if (postmaster.kind === 'refused') this.logger.warn({ node: name, pid: postmaster.pid, why: postmaster.why }, 'postmaster.pid names another process: not signalled');
    if (guard !== null) await terminate(guard, 0, 'SIGKILL');
    await rm(this.layout.guardPidFile(name), { force: true });
    const alive = [agent, guard].filter((pid): pid is number => pid !== null && isAlive(pid));
    if (postmaster.kind === 'survived' || postmaster.kind === 'unverifiable') alive.push(postmaster.pid);
    return alive.length === 0
      ? { confirmed: true, detail: `${name}: agent, postmaster and guard are gone` }
      : { confirmed: false, detail: `${name}: processes ${alive.join(', ')} still alive` };
  }

  localNodeConfig(name: string): NodeConfig | null {
    try {
      return loadNodeConfig(this.layout.nodeConfigFile(name));
    } catch {
      return null;
    }
  }

  /** The PID of the node's guard, when it runs (tests, benchmarks). */
  guardPid(name: string): number | null {
    const node = this.nodes.get(name);
    return node === undefined ? null : this.guardPidOf(node);
  }
}
