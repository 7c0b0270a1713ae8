/**
 * Kills the leader node of a local cluster the way a dying machine would:
 * SIGKILL of its agent and postmaster and of every process they started, by
 * the PIDs its member key publishes.
 *
 * `keel up` restarts a dead agent after about a second, and an agent that
 * comes back while its lease lives simply resumes as leader: a crash, not a
 * failover (unless the controller fences the node first). A machine that died
 * stays dead for a while, so the killed node is held down (every process
 * started for it is killed at once) until another node leads or
 * `holdDownMaxMs` passes. After that whatever runs the cluster decides: the
 * node restarts and rejoins, or the controller replaces it.
 */
import type { Dcs } from '../dcs/types.js';
import { describeError } from '../errors.js';
import type { LocalLayout } from '../providers/local-layout.js';
import { sleep } from '../util/clock.js';
import { killWithDescendants, verifiedPostmasterPid } from '../postgres/postmaster.js';
import { commandLine, isAlive, readPidFile } from '../util/process.js';
import { leaderOf } from '../workload/shape.js';
import type { Random } from './dataset.js';
import type { ClusterMonitor } from './monitor.js';

export interface ChaosOptions {
  layout: LocalLayout;
  dcs: Dcs;
  monitor: ClusterMonitor;
  /** seconds between kills, drawn uniformly from [min, max] */
  intervalSeconds: { min: number; max: number };
  /** nodes the cluster should have: the next kill waits until all of them serve again */
  nodes: number;
  random: Random;
  holdDownMaxMs?: number;
  now?: () => number;
}

const holdDownPollMs = 100;

export class Chaos {
  readonly kills: { name: string; atMs: number }[] = [];
  /** when the scheduled next kill is due; null when none is scheduled */
  nextKillAtMs: number | null = null;
  /** a killed node is being held down */
  busy = false;
  private stopped = false;
  private inflight: Promise<void> | null = null;
  private timer: NodeJS.Timeout | null = null;
  private waitingNoted = false;
  private readonly now: () => number;

  constructor(private readonly options: ChaosOptions) {
    this.now = options.now ?? Date.now;
  }

  /** Kills at random intervals until stop(). */
  schedule(): void {
    const { min, max } = this.options.intervalSeconds;
    this.nextKillAtMs = this.now() + (min + this.options.random() * (max - min)) * 1000;
    this.timer ??= setInterval(() => void this.tick(), 500);
  }

  private async tick(): Promise<void> {
    if (this.nextKillAtMs === null || this.busy || this.now() < this.nextKillAtMs) return;
    if (!this.healthy()) {
      if (!this.waitingNoted) this.options.monitor.note('chaos', 'next kill waits until every node serves again', 'info');
      this.waitingNoted = true;
      return;
    }
    this.waitingNoted = false;
    this.nextKillAtMs = null;
    await this.killLeader('scheduled');
    if (!this.stopped) this.schedule();
  }

  /** A kill now (scheduled or the k key); a second one while a node is held down is refused. */
  killLeader(why: 'scheduled' | 'key'): Promise<void> {
    if (this.inflight !== null) {
      this.options.monitor.note('chaos', 'a killed node is still down: wait for the failover first', 'warn');
      return this.inflight;
    }
    this.inflight = this.kill(why).finally(() => (this.inflight = null));
    return this.inflight;
  }

  private healthy(): boolean {
    const { members, leader } = this.options.monitor;
    return leader !== null && members.length >= this.options.nodes && members.every((m) => m.leader || m.streaming);
  }

  /** SIGKILL of the leader's agent and postmaster, then hold the node down until a failover. */
  private async kill(why: 'scheduled' | 'key'): Promise<void> {
    const { monitor, layout } = this.options;
    this.busy = true;
    try {
      const view = await this.options.dcs.readCluster();
      const member = leaderOf(view);
      if (member === undefined) {
        monitor.note('chaos', 'no running leader to kill right now', 'warn');
        return;
      }
      const name = member.name;
      // the key can be a loop old: the PID files catch an agent or postmaster that restarted since
      const candidates = [member.agentPid, member.postmasterPid, ...nodePidFiles(layout, name)];
      const pids = [...new Set(candidates)].filter((pid): pid is number => pid !== null && isAlive(pid) && belongsTo(pid, layout, name));
      if (pids.length === 0) {
        monitor.note('chaos', `${name}'s processes are not on this machine (or already gone): nothing killed`, 'warn');
        return;
      }
      for (const pid of pids) kill(pid);
      const killedAt = this.now();
      this.kills.push({ name, atMs: killedAt });
      monitor.note('chaos', `${why === 'key' ? '[k] ' : ''}killed leader ${name} (SIGKILL to PIDs ${pids.join(', ')}); it stays down until another node leads`, 'bad');
      const refused = await this.holdDown(name);
      const downS = ((this.now() - killedAt) / 1000).toFixed(1);
      const outcome = monitor.leader !== null && monitor.leader !== name ? `${monitor.leader} leads ${downS} s after the kill` : `held down ${downS} s`;
      monitor.note('chaos', `${outcome}; no longer holding ${name} down${refused > 0 ? ` (refused ${refused} restart(s) meanwhile)` : ''}`, 'info');
    } catch (err) {
      monitor.note('chaos', `kill failed: ${describeError(err)}`, 'bad');
    } finally {
      this.busy = false;
    }
  }

  /** Kills whatever the supervisor starts for the node until another node leads. Returns how many. */
  private async holdDown(name: string): Promise<number> {
    const { layout, monitor } = this.options;
    const deadline = this.now() + (this.options.holdDownMaxMs ?? 60_000);
    let refused = 0;
    while (!this.stopped && this.now() < deadline) {
      // the monitor follows etcd; refresh so the hold ends as soon as the new leader shows
      await monitor.refresh();
      if (monitor.leader !== null && monitor.leader !== name) break;
      for (const pid of nodePidFiles(layout, name)) {
        if (pid !== null && isAlive(pid) && belongsTo(pid, layout, name)) {
          kill(pid);
          refused += 1;
        }
      }
      await sleep(holdDownPollMs);
    }
    return refused;
  }

  /** Stops scheduling and lets a held-down node come back. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.nextKillAtMs = null;
    if (this.timer) clearInterval(this.timer);
    await this.inflight;
  }
}

const nodePidFiles = (layout: LocalLayout, name: string): (number | null)[] => [
  readPidFile(layout.agentPidFile(name)),
  // a stale postmaster.pid may name any process by now
  verifiedPostmasterPid(layout.dataDir(name)),
];

/** SIGKILL, with what the process started (a postmaster's children, an archive_command): a dead machine keeps none of them. */
const kill = killWithDescendants;

/**
 * Whether a PID is this node's agent or postmaster, by its command line: a
 * member key can be a second old and a PID can be reused meanwhile; chaos must
 * never hit an unrelated process.
 */
export function belongsTo(pid: number, layout: LocalLayout, name: string): boolean {
  const line = commandLine(pid)?.join(' ');
  return line !== undefined && (line.includes(layout.nodeConfigFile(name)) || line.includes(layout.dataDir(name)));
}
