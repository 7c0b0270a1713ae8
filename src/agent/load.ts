/**
 * The load metrics an agent publishes in its member key for the autoscaler:
 * CPU of the postmaster's process tree, client connections, and transactions
 * per second. Rates need two samples, so the meter samples on its own timer
 * (not in the loop, which must stay quick) and publishes the last rate.
 */
import { readdirSync } from 'node:fs';
import { readSmallFile } from '../postgres/datadir.js';
import type { MemberMetrics } from '../model/values.js';
import type { Clock } from '../util/clock.js';

/** What the meter reads from PostgreSQL (LocalPostgres.loadCounters). */
export interface LoadSource {
  loadCounters(): Promise<{ transactions: number; connections: number } | null>;
  postmasterPid(): Promise<number | null>;
}

/** Linux reports process times in USER_HZ ticks, 100 per second on every architecture Keel runs on. */
const ticksPerSecond = 100;

export interface ProcStat {
  pid: number;
  ppid: number;
  /** utime + stime of the process itself */
  ownTicks: number;
  /** cutime + cstime: children it has reaped (ended backends) */
  reapedTicks: number;
}

/** Parses /proc/<pid>/stat; the command name may hold spaces and parentheses, so fields count from the last ')'. */
export function parseProcStat(text: string): ProcStat | null {
  const close = text.lastIndexOf(')');
  const open = text.indexOf('(');
  if (close < 0 || open < 0) return null;
  const fields = text.slice(close + 2).trim().split(/\s+/);
  // fields[0] is field 3 (state): utime is field 14, so fields[11]
  const num = (i: number) => Number(fields[i]);
  const stat = { pid: Number(text.slice(0, open).trim()), ppid: num(1), ownTicks: num(11) + num(12), reapedTicks: num(13) + num(14) };
  return Object.values(stat).every(Number.isFinite) ? stat : null;
}

/**
 * CPU ticks of the postmaster and its children. Ended backends stay counted
 * through the postmaster's reaped time, so the total only grows.
 */
export function treeTicks(stats: ProcStat[], postmasterPid: number): number | null {
  const postmaster = stats.find((s) => s.pid === postmasterPid);
  if (postmaster === undefined) return null;
  const children = stats.filter((s) => s.ppid === postmasterPid).reduce((sum, s) => sum + s.ownTicks, 0);
  return postmaster.ownTicks + postmaster.reapedTicks + children;
}

interface Sample {
  atMs: number;
  cpuTicks: number | null;
  transactions: number;
  connections: number;
}

/** Metrics from two samples; null when the second does not follow the first (restart, counter reset). */
export function metricsBetween(a: Sample, b: Sample): MemberMetrics | null {
  const seconds = (b.atMs - a.atMs) / 1000;
  if (seconds <= 0 || b.transactions < a.transactions) return null;
  const cpu = a.cpuTicks !== null && b.cpuTicks !== null && b.cpuTicks >= a.cpuTicks ? (b.cpuTicks - a.cpuTicks) / ticksPerSecond / seconds : 0;
  const round = (n: number) => Math.round(n * 10) / 10;
  return { cpuPercent: round(cpu * 100), connections: b.connections, roQueriesPerSecond: round((b.transactions - a.transactions) / seconds) };
}

/**
 * The stats of the postmaster and its children: those the kernel lists in
 * /proc/PID/task/PID/children (the postmaster has one thread), or where it has
 * no such file those of every process. A scan of every process read a hundred
 * files every 2 s through the thread pool, a good part of an idle agent's CPU.
 */
export async function readTreeStats(postmasterPid: number): Promise<ProcStat[]> {
  // read synchronously (postgres/datadir.ts says why): each file is a few hundred bytes the kernel makes at once
  const listed = readSmallFile(`/proc/${postmasterPid}/task/${postmasterPid}/children`);
  const pids = listed !== null ? [String(postmasterPid), ...listed.split(/\s+/).filter((p) => p !== '')] : readdirSync('/proc').filter((e) => /^\d+$/.test(e));
  const stats: ProcStat[] = [];
  for (const pid of pids) {
    // processes end between the listing and the read: skip them
    const text = readSmallFile(`/proc/${pid}/stat`);
    const stat = text === null ? null : parseProcStat(text);
    if (stat !== null) stats.push(stat);
  }
  return stats;
}

export class LoadMeter {
  private previous: Sample | null = null;
  private latest: { metrics: MemberMetrics; atMs: number } | null = null;
  private timer: NodeJS.Timeout | null = null;
  private sampling = false;

  constructor(
    private readonly source: LoadSource,
    private readonly clock: Clock,
    private readonly intervalMs = 2000,
  ) {}

  start(): void {
    this.timer = setInterval(() => void this.sample(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** The last rates, if measured within three intervals; an old figure would mislead the autoscaler. */
  current(): MemberMetrics | undefined {
    if (this.latest === null || this.clock.now() - this.latest.atMs > 3 * this.intervalMs) return undefined;
    return this.latest.metrics;
  }

  async sample(): Promise<void> {
    if (this.sampling) return;
    this.sampling = true;
    try {
      const pid = await this.source.postmasterPid();
      const counters = pid === null ? null : await this.source.loadCounters().catch(() => null);
      if (pid === null || counters === null) {
        this.previous = null;
        return;
      }
      const cpuTicks = treeTicks(await readTreeStats(pid), pid);
      const now: Sample = { atMs: this.clock.now(), cpuTicks, ...counters };
      const metrics = this.previous === null ? null : metricsBetween(this.previous, now);
      if (metrics !== null) this.latest = { metrics, atMs: now.atMs };
      this.previous = now;
    } finally {
      this.sampling = false;
    }
  }
}
