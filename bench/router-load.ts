/**
 * The router bench's throughput table: pgbench workloads (read-only and a
 * write mix, each with persistent clients and with a new connection per
 * transaction) against each target in turn, alternating in rounds so that
 * whatever else runs on the machine weighs on every target alike. Each run
 * reads the proxy's CPU (user + system, from /proc) before and after, which
 * gives its CPU per 1,000 queries: steadier than tps on a shared machine.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { fixed, machine, mean, min, max, printTable, type Cell } from './report.js';

const run = promisify(execFile);
export const pgbenchBin = '/usr/lib/postgresql/15/bin/pgbench';

export interface Workload {
  name: string;
  args: string[];
  /** statements per transaction: -S is one SELECT; -N is BEGIN, UPDATE, SELECT, INSERT, END */
  statements: number;
}

export const workloads: Workload[] = [
  { name: '-S', args: ['-S'], statements: 1 },
  { name: '-S -C', args: ['-S', '-C'], statements: 1 },
  { name: '-N', args: ['-N'], statements: 5 },
  { name: '-N -C', args: ['-N', '-C'], statements: 5 },
];

export interface Target {
  name: string;
  port: number;
  /** processes whose CPU is the proxy's (none for direct) */
  pids: number[];
  /** the workloads this target runs (ro takes the read-only ones) */
  readOnly?: boolean;
  /** a baseline others refer to (direct to the leader, direct to a replica): its share is 1 */
  baseline?: boolean;
  /** the baseline whose tps in the same round this target's share refers to (default direct) */
  reference?: string;
}

export interface PgbenchResult {
  tps: number;
  transactions: number;
}

/** One pgbench run; null (and a line saying why) when it failed. */
export async function pgbench(port: number, workload: Workload, seconds: number, env: Record<string, string>): Promise<PgbenchResult | null> {
  try {
    const args = [...workload.args, '-c', '8', '-j', '2', '-T', String(seconds), '-h', '127.0.0.1', '-p', String(port), '-U', 'app', 'app'];
    const { stdout } = await run(pgbenchBin, args, { encoding: 'utf8', env: { ...process.env, ...env }, timeout: (seconds + 60) * 1000 });
    return { tps: Number(/tps = ([\d.]+)/.exec(stdout)![1]), transactions: Number(/actually processed: (\d+)/.exec(stdout)![1]) };
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    console.log(`    pgbench ${workload.name} on ${port} failed: ${String(e.stderr ?? e.message).trim().split('\n').pop()}`);
    return null;
  }
}

/** CPU seconds (user + system) a process has used; clock ticks of 1/100 s, as on Linux. 0 for a process that is gone. */
export function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return 0;
  }
}

interface Cellful {
  tps: number[];
  ratio: number[];
  cpuMsPer1000: number[];
  failed: number;
}

/** Per workload and target: tps of each round, its ratio to direct in the same round, and the proxy's CPU. */
export class LoadTable {
  private readonly cells = new Map<string, Cellful>();

  constructor(
    private readonly targets: () => Target[],
    private readonly seconds: number,
    private readonly env: () => Record<string, string>,
  ) {}

  private cell(workload: string, target: string): Cellful {
    const key = `${workload}\0${target}`;
    let cell = this.cells.get(key);
    if (cell === undefined) this.cells.set(key, (cell = { tps: [], ratio: [], cpuMsPer1000: [], failed: 0 }));
    return cell;
  }

  /** One round: every workload, and within it every target in turn (baselines first: the others' ratios refer to them). */
  async round(index: number): Promise<void> {
    for (const workload of workloads) {
      const baselines = new Map<string, number>();
      const line: string[] = [];
      for (const target of this.targets()) {
        if (target.readOnly === true && workload.name.startsWith('-N')) continue;
        const before = target.pids.reduce((sum, pid) => sum + cpuSeconds(pid), 0);
        const result = await pgbench(target.port, workload, this.seconds, this.env());
        const cell = this.cell(workload.name, target.name);
        if (result === null) {
          cell.failed += 1;
          continue;
        }
        if (target.pids.length > 0) {
          const cpu = target.pids.reduce((sum, pid) => sum + cpuSeconds(pid), 0) - before;
          cell.cpuMsPer1000.push((cpu * 1000 * 1000) / (result.transactions * workload.statements));
        }
        if (target.baseline === true) baselines.set(target.name, result.tps);
        cell.tps.push(result.tps);
        const reference = baselines.get(target.reference ?? 'direct');
        if (reference !== undefined) cell.ratio.push(result.tps / reference);
        line.push(`${target.name} ${fixed(result.tps)}`);
      }
      console.log(`  round ${index}, ${workload.name}: ${line.join(', ')}`);
    }
  }

  failures(): string[] {
    return [...this.cells].filter(([, c]) => c.failed > 0).map(([key, c]) => `${key.replace('\0', ' on ')}: ${c.failed} failed run(s)`);
  }

  print(rounds: number, notes: string[] = []): void {
    const range = (values: number[], digits: number): string =>
      values.length === 0 ? '-' : values.length === 1 ? fixed(values[0], digits) : `${fixed(min(values), digits)}-${fixed(max(values), digits)}`;
    const rows: Cell[][] = [];
    for (const workload of workloads) {
      for (const target of this.targets()) {
        const cell = this.cells.get(`${workload.name}\0${target.name}`);
        if (cell === undefined) continue;
        rows.push([
          `${workload.name}`,
          target.name,
          fixed(mean(cell.tps)),
          range(cell.tps, 0),
          target.baseline === true ? '1.00' : range(cell.ratio, 2),
          target.pids.length === 0 ? '-' : `${fixed(mean(cell.cpuMsPer1000), 1)} (${range(cell.cpuMsPer1000, 1)})`,
        ]);
      }
    }
    printTable(
      `throughput, pgbench -c 8 -j 2 -T ${this.seconds} (scale 10, TLS verify-full), ${rounds} alternating round(s)`,
      ['workload', 'target', 'tps (mean)', 'tps (range)', 'share of direct (range)', 'proxy CPU ms per 1,000 queries (range)'],
      rows,
      [
        '-C: a new connection (and TLS handshake) per transaction; -N: BEGIN, UPDATE, SELECT, INSERT, END (5 queries) in synchronous replication',
        'share of direct: tps over the direct run of the same workload in the same round; ro rows are read-only, go to replicas and refer to direct replica (one replica, straight)',
        ...notes,
        `machine: ${machine()} (other work shares it: figures are noisy)`,
      ],
    );
  }
}
