/**
 * What the benches do to the test harness's clusters: stop them (BENCH_KEEP=1
 * keeps the directory and its logs) and kill a node the way a dead machine
 * goes. When the cluster is back to its declared shape is src/workload/shape.ts.
 */
import { readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { TestCluster } from '../test/support/cluster.js';
import { envFlag } from './options.js';

/** Stops every process of the cluster by PID; removes its directory unless BENCH_KEEP is set. */
export async function stopCluster(tc: TestCluster | undefined): Promise<void> {
  if (tc === undefined) return;
  const keepDir = envFlag('BENCH_KEEP');
  await tc.stop({ keepDir });
  if (keepDir) console.log(`kept ${tc.layout.dir} (BENCH_KEEP)`);
}

/** A process's resident memory now (MB, from /proc); NaN when it is gone. */
export function rssMbOf(pid: number | null): number {
  if (pid === null) return NaN;
  try {
    return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN) / 1024;
  } catch {
    return NaN;
  }
}

/**
 * Idle resident memory of each process: the median of one sample a second
 * over `seconds` (a single sample right after a burst of work catches the
 * heap before V8's idle collections give memory back).
 */
export async function idleRssMb(pids: (number | null)[], seconds: number): Promise<number[]> {
  const samples: number[][] = pids.map(() => []);
  for (let i = 0; i < seconds; i++) {
    pids.forEach((pid, j) => samples[j]!.push(rssMbOf(pid)));
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
  return samples.map((values) => {
    const sorted = values.filter((v) => !Number.isNaN(v)).sort((a, b) => a - b);
    return sorted.length === 0 ? NaN : sorted[Math.floor(sorted.length / 2)]!;
  });
}

/** Removes a directory the bench made, unless BENCH_KEEP is set. */
export async function removeDir(dir: string): Promise<void> {
  if (!envFlag('BENCH_KEEP')) await rm(dir, { recursive: true, force: true });
}

/**
 * A machine that dies: SIGKILL of the node's agent, postmaster and fencing
 * guard, and this process's provider no longer starts any of them again (the
 * only thing written first is its own "fenced" marker, which no other part of
 * the cluster reads as a sign of death). Returns when the kill began (ms).
 */
export async function killNode(tc: TestCluster, name: string): Promise<number> {
  const atMs = Date.now();
  const result = await tc.local.provider.fence(name);
  if (!result.confirmed) throw new Error(`could not kill ${name}: ${result.detail}`);
  return atMs;
}
