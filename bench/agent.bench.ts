/**
 * What an agent costs its machine: resident memory (RSS, from /proc) and CPU
 * (user + system) of each `keel agent` of a 3-node cluster in synchronous mode,
 * first idle, then while pgbench writes through the rw endpoint, and what V8
 * says it holds (heap used and total, external memory, from each agent's
 * /metrics) at the end of each phase. The agents run as `keel up` starts them,
 * with the V8 flags of src/providers/agent-process.ts.
 *
 * Environment:
 *   BENCH_SECONDS  seconds of each phase (default 30)
 *   BENCH_KEEP     1 keeps the cluster directory and its logs
 * Ports 20550-20599.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { portOffsets } from '../src/providers/local-layout.js';
import { sleep } from '../src/util/clock.js';
import { readPidFile } from '../src/util/process.js';
import { apiRequest } from '../test/support/api-client.js';
import { TestCluster } from '../test/support/cluster.js';
import { stopCluster } from './cluster.js';
import { envInteger } from './options.js';
import { fixed, machine, max, median, printTable, type Cell } from './report.js';

const run = promisify(execFile);
const phaseSeconds = envInteger('BENCH_SECONDS', 30, 5, 3600);
const portBase = 20550;
const pgbin = '/usr/lib/postgresql/15/bin';
const mb = (bytes: number | null | undefined): string => (bytes === null || bytes === undefined ? '-' : (bytes / 1048576).toFixed(1));

/** Resident bytes of a process (VmRSS), null once it is gone. */
function rssBytes(pid: number): number | null {
  try {
    const kb = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
    return kb === undefined ? null : Number(kb) * 1024;
  } catch {
    return null;
  }
}

/** CPU seconds (user + system) of a process, in clock ticks of 1/100 s. */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

interface Agent {
  name: string;
  pid: number;
  apiUrl: string;
}

interface Phase {
  rss: number[];
  cpuPercent: number;
  heap: Record<string, number>;
}

/** V8's own figures from the agent's /metrics (prom-client's default metrics). */
async function heapFigures(tc: TestCluster, agent: Agent): Promise<Record<string, number>> {
  const answer = await apiRequest(`${agent.apiUrl}/metrics`, { caFile: tc.layout.caFiles.cert, timeoutMs: 5000 });
  const figures: Record<string, number> = {};
  for (const name of ['nodejs_heap_size_used_bytes', 'nodejs_heap_size_total_bytes', 'nodejs_external_memory_bytes']) {
    const value = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)`, 'm').exec(answer.text)?.[1];
    if (value !== undefined) figures[name] = Number(value);
  }
  return figures;
}

/** Samples every agent's RSS once a second for `seconds` while `during` runs; CPU over the whole phase. */
async function measure(tc: TestCluster, agents: Agent[], seconds: number, during: Promise<unknown> = Promise.resolve()): Promise<Map<string, Phase>> {
  const startCpu = new Map(agents.map((a) => [a.name, cpuSeconds(a.pid)]));
  const startedMs = Date.now();
  const rss = new Map<string, number[]>(agents.map((a) => [a.name, []]));
  for (let i = 0; i < seconds; i++) {
    for (const a of agents) {
      const bytes = rssBytes(a.pid);
      if (bytes !== null) rss.get(a.name)!.push(bytes);
    }
    await sleep(1000);
  }
  await during;
  const wallSeconds = (Date.now() - startedMs) / 1000;
  const out = new Map<string, Phase>();
  for (const a of agents) {
    const cpuPercent = ((cpuSeconds(a.pid) - startCpu.get(a.name)!) / wallSeconds) * 100;
    out.set(a.name, { rss: rss.get(a.name)!, cpuPercent, heap: await heapFigures(tc, a) });
  }
  return out;
}

describe('agent: memory and CPU', () => {
  let tc: TestCluster | undefined;
  afterAll(async () => {
    await stopCluster(tc);
  });

  it(`measures each agent idle and under pgbench for ${phaseSeconds} s each`, async () => {
    tc = await TestCluster.start({ portBase, nodes: 3 });
    const view = await tc.view();
    const leader = view.leader!.value.name;
    const agents: Agent[] = view.members.map((m) => ({ name: m.name, pid: readPidFile(tc!.layout.agentPidFile(m.name))!, apiUrl: m.apiUrl }));
    expect(agents.every((a) => a.pid > 0)).toBe(true);
    const flags = readFileSync(`/proc/${agents[0]!.pid}/cmdline`, 'utf8').split('\0').filter((arg) => arg.startsWith('--') && !arg.startsWith('--config'));
    // the start-up's allocations settle first
    await sleep(10_000);
    const idle = await measure(tc, agents, phaseSeconds);

    const env = { ...process.env, PGPASSFILE: tc.layout.pgpassFile, PGSSLMODE: 'verify-full', PGSSLROOTCERT: tc.layout.caFiles.cert };
    const rw = String(portBase + portOffsets.routerRw);
    await run(`${pgbin}/pgbench`, ['-i', '-s', '5', '-q', '-h', '127.0.0.1', '-p', rw, '-U', 'app', 'app'], { env, timeout: 300_000 });
    const load = run(`${pgbin}/pgbench`, ['-N', '-c', '8', '-j', '2', '-T', String(phaseSeconds), '-h', '127.0.0.1', '-p', rw, '-U', 'app', 'app'], { env, timeout: (phaseSeconds + 120) * 1000 });
    const loaded = await measure(tc, agents, phaseSeconds, load);
    const tps = /tps = ([\d.]+)/.exec((await load).stdout)?.[1] ?? '-';

    const rows: Cell[][] = agents.map((a) => {
      const i = idle.get(a.name)!;
      const l = loaded.get(a.name)!;
      return [
        `${a.name}${a.name === leader ? ' (leader)' : ''}`,
        mb(median(i.rss)),
        mb(max(i.rss)),
        fixed(i.cpuPercent, 2),
        mb(median(l.rss)),
        mb(max(l.rss)),
        fixed(l.cpuPercent, 2),
        `${mb(l.heap.nodejs_heap_size_used_bytes)} / ${mb(l.heap.nodejs_heap_size_total_bytes)}`,
        mb(l.heap.nodejs_external_memory_bytes),
      ];
    });
    printTable(
      `keel agent: RSS (MB) and CPU (% of one core), ${phaseSeconds} s idle, then ${phaseSeconds} s of pgbench -N -c 8 through rw (${tps} tps)`,
      ['agent', 'idle RSS median', 'idle RSS max', 'idle CPU %', 'load RSS median', 'load RSS max', 'load CPU %', 'heap used / total (end)', 'external (end)'],
      rows,
      [`node flags: ${flags.length === 0 ? '(none)' : flags.join(' ')}`, machine()],
    );
  });
});
