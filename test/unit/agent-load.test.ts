import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { metricsBetween, parseProcStat, readTreeStats, treeTicks } from '../../src/agent/load.js';

// /proc/<pid>/stat of a backend whose command name holds spaces and a parenthesis
const stat = (pid: number, ppid: number, utime: number, stime: number, cutime = 0, cstime = 0) =>
  `${pid} (postgres: app (x) idle) S ${ppid} ${pid} ${pid} 0 -1 4194560 100 0 0 0 ${utime} ${stime} ${cutime} ${cstime} 20 0 1 0 100 0 0`;

describe('load metrics', () => {
  it('parses /proc stat fields after the last parenthesis', () => {
    expect(parseProcStat(stat(42, 7, 150, 50, 3, 4))).toEqual({ pid: 42, ppid: 7, ownTicks: 200, reapedTicks: 7 });
    expect(parseProcStat('garbage')).toBeNull();
  });

  it('counts the postmaster, its live children and the children it reaped', () => {
    const stats = [stat(7, 1, 10, 10, 30, 0), stat(8, 7, 5, 5), stat(9, 7, 1, 1), stat(99, 1, 1000, 0)].map((s) => parseProcStat(s)!);
    expect(treeTicks(stats, 7)).toBe(10 + 10 + 30 + 10 + 2);
    expect(treeTicks(stats, 12345)).toBeNull();
  });

  it('turns two samples into rates', () => {
    const a = { atMs: 0, cpuTicks: 1000, transactions: 500, connections: 3 };
    const b = { atMs: 2000, cpuTicks: 1100, transactions: 1500, connections: 5 };
    expect(metricsBetween(a, b)).toEqual({ cpuPercent: 50, connections: 5, roQueriesPerSecond: 500 });
    // a restart resets the counters: no figure rather than a negative one
    expect(metricsBetween(b, { ...a, atMs: 4000 })).toBeNull();
  });

  it('reads the stats of a process and its children only', async () => {
    // a shell with two children stands for the postmaster
    const parent = spawn('/bin/sh', ['-c', 'sleep 30 & sleep 30 & wait'], { stdio: 'ignore', detached: true });
    try {
      const pid = parent.pid!;
      let stats = await readTreeStats(pid);
      for (let i = 0; i < 100 && stats.length < 3; i++) {
        await new Promise((resolve) => setTimeout(resolve, 20));
        stats = await readTreeStats(pid);
      }
      expect(stats.map((s) => s.pid)).toContain(pid);
      expect(stats.filter((s) => s.ppid === pid)).toHaveLength(2);
      expect(stats.every((s) => s.pid === pid || s.ppid === pid)).toBe(true);
      expect(treeTicks(stats, pid)).not.toBeNull();
    } finally {
      // the shell leads its own process group, the sleeps with it: the group ends by its ID (the shell's PID)
      process.kill(-parent.pid!, 'SIGKILL');
    }
  });
});
