/**
 * The fencing guard's cost and speed, against one real PostgreSQL primary:
 *   1. its RSS and CPU idle (unfed) and while fed 10 times a second, read from
 *      /proc/PID/status and /proc/PID/stat, beside the same guard run through
 *      the full CLI (`keel guard`, which loads every command);
 *   2. the time from a missed deadline to the postmaster being gone (SIGQUIT,
 *      immediate shutdown), over BENCH_RUNS runs.
 * The guard is the compiled one the providers start (dist/guard/main.js).
 *
 * Environment:
 *   BENCH_IDLE_SECONDS  seconds measured idle (default 10)
 *   BENCH_FED_SECONDS   seconds measured while fed 10/s (default 20)
 *   BENCH_RUNS          missed deadlines (default 5)
 *   BENCH_KEEP          1 keeps the directory (guard logs, PostgreSQL log)
 * Port 19080.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify as toYaml } from 'yaml';
import { nodeConfigSchema, type NodeConfig } from '../src/config/schema.js';
import { monoNowMs } from '../src/guard/clock.js';
import { isGone } from '../src/postgres/postmaster.js';
import { LineSplitter, serializeMessage } from '../src/guard/protocol.js';
import { LocalPostgres } from '../src/postgres/local.js';
import type { StartOptions } from '../src/postgres/types.js';
import { guardBin, keelBin, waitForSocket } from '../src/providers/local.js';
import { sleep } from '../src/util/clock.js';
import { silentLogger } from '../src/util/log.js';
import { terminate } from '../src/util/process.js';
import { envFlag, envInteger } from './options.js';
import { fixed, machine, max, median, min, printTable, type Cell } from './report.js';

const idleSeconds = envInteger('BENCH_IDLE_SECONDS', 10, 1, 600);
const fedSeconds = envInteger('BENCH_FED_SECONDS', 20, 1, 600);
const runs = envInteger('BENCH_RUNS', 5, 1, 100);
const port = 19080;
const ticksPerSecond = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
const asPrimary: StartOptions = { replica: false, upstream: null, slotName: 'node1', parameters: {} };

interface Sample {
  rssKb: number;
  peakKb: number;
  ticks: number;
  atMs: number;
}

function sample(pid: number): Sample {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string) => Number(new RegExp(`${field}:\\s+(\\d+)`).exec(status)?.[1] ?? Number.NaN);
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { rssKb: kb('VmRSS'), peakKb: kb('VmHWM'), ticks: Number(fields[11]) + Number(fields[12]), atMs: performance.now() };
}

const mb = (kb: number) => fixed(kb / 1024, 1);
const cpuPercent = (a: Sample, b: Sample) => fixed((100 * (b.ticks - a.ticks)) / ticksPerSecond / ((b.atMs - a.atMs) / 1000), 2);

/** One connection to a guard that feeds it and counts its answers. */
function feeder(socketPath: string) {
  const socket = connect(socketPath);
  const splitter = new LineSplitter();
  let answers = 0;
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => (answers += splitter.push(chunk).length));
  return {
    ready: new Promise<void>((resolve, reject) => {
      socket.once('connect', () => resolve());
      socket.once('error', reject);
    }),
    feed: (deadlineMonoMs: number) => socket.write(serializeMessage({ v: 1, type: 'feed', agentPid: process.pid, leaseId: null, deadlineMonoMs })),
    answers: () => answers,
    close: () => socket.destroy(),
  };
}

describe('fencing guard', () => {
  let dir: string;
  let postgres: LocalPostgres;
  const children: ChildProcess[] = [];

  function writeConfig(name: string): { file: string; config: NodeConfig } {
    const nodeDir = join(dir, name);
    mkdirSync(nodeDir, { recursive: true });
    chmodSync(nodeDir, 0o755);
    const config = nodeConfigSchema.parse({
      name,
      cluster: 'bench',
      etcd: { endpoints: [`http://127.0.0.1:${port + 1}`] },
      api: { listen: `127.0.0.1:${port + 2}` },
      postgres: { dataDir: join(dir, 'node1', 'data'), port, superuser: { password: 'bench-guard-pw-1' }, replication: { password: 'bench-guard-pw-2' } },
      guard: { socket: join(nodeDir, 'guard.sock') },
    });
    const { bootstrap: _b, ...doc } = config;
    writeFileSync(join(nodeDir, 'node.yml'), toYaml(doc), { mode: 0o600 });
    return { file: join(nodeDir, 'node.yml'), config };
  }

  async function startGuard(args: string[], socket: string): Promise<ChildProcess> {
    const log = openSync(join(dir, 'guard.log'), 'a');
    const child = spawn(process.execPath, args, { stdio: ['ignore', log, log] });
    closeSync(log);
    children.push(child);
    if (!(await waitForSocket(socket, 60_000))) throw new Error(`no guard listens on ${socket}: ${readFileSync(join(dir, 'guard.log'), 'utf8').slice(-2000)}`);
    return child;
  }

  beforeAll(async () => {
    dir = mkdtempSync('/tmp/keel-bench-guard-');
    chmodSync(dir, 0o755);
    postgres = new LocalPostgres(writeConfig('node1').config, silentLogger());
    await postgres.initdb();
    await postgres.start(asPrimary);
  });

  afterAll(async () => {
    for (const child of children) if (child.pid !== undefined) await terminate(child.pid, 5000);
    if (postgres) {
      if ((await postgres.postmasterPid()) !== null) await postgres.stop('immediate').catch(() => undefined);
      await postgres.close();
    }
    if (dir && envFlag('BENCH_KEEP')) console.log(`kept ${dir}`);
    else if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('prints its RSS and CPU, and the time from a missed deadline to the postmaster gone', async () => {
    const node1 = writeConfig('node1');
    const guard = await startGuard([guardBin, '--config', node1.file], node1.config.guard!.socket);
    await sleep(1000);
    const idleFrom = sample(guard.pid!);
    await sleep(idleSeconds * 1000);
    const idleTo = sample(guard.pid!);

    const feeding = feeder(node1.config.guard!.socket);
    await feeding.ready;
    const fedFrom = sample(guard.pid!);
    let maxRssKb = fedFrom.rssKb;
    let feeds = 0;
    const fedUntil = performance.now() + fedSeconds * 1000;
    while (performance.now() < fedUntil) {
      feeding.feed(monoNowMs() + 8000);
      feeds += 1;
      await sleep(100);
      maxRssKb = Math.max(maxRssKb, sample(guard.pid!).rssKb);
    }
    const fedTo = sample(guard.pid!);
    expect(feeding.answers()).toBe(feeds);
    // fed far ahead: the primary must stay up while the comparison below runs
    feeding.feed(monoNowMs() + 600_000);

    const cli = writeConfig('cli');
    const viaCli = await startGuard([keelBin, 'guard', '--config', cli.file], cli.config.guard!.socket);
    await sleep(3000);
    const viaCliIdle = sample(viaCli.pid!);
    await terminate(viaCli.pid!, 5000);

    const rows: Cell[][] = [
      [`dist/guard/main.js idle (unfed), ${idleSeconds} s`, mb(idleTo.rssKb), mb(idleTo.peakKb), cpuPercent(idleFrom, idleTo)],
      [`dist/guard/main.js fed 10/s, ${fedSeconds} s (${feeds} feeds)`, `${mb(fedTo.rssKb)} (max ${mb(maxRssKb)})`, mb(fedTo.peakKb), cpuPercent(fedFrom, fedTo)],
      ['keel guard (bin/keel.js, every command loaded) idle, 3 s', mb(viaCliIdle.rssKb), mb(viaCliIdle.peakKb), null],
    ];
    printTable('fencing guard: memory and CPU', ['process', 'RSS MB', 'peak MB', 'CPU %'], rows, [`machine: ${machine()} (other work shares it: figures are noisy)`]);

    const stopMs: number[] = [];
    for (let run = 1; run <= runs; run++) {
      if ((await postgres.postmasterPid()) === null) await postgres.start(asPrimary);
      const pid = (await postgres.postmasterPid())!;
      const deadline = monoNowMs() + 500;
      feeding.feed(deadline);
      let goneAt: number | null = null;
      while (goneAt === null && monoNowMs() < deadline + 10_000) {
        if (isGone(pid)) goneAt = monoNowMs();
        else await sleep(1);
      }
      expect(goneAt, `postmaster ${pid} still runs 10 s after the missed deadline`).not.toBeNull();
      stopMs.push(goneAt! - deadline);
      // a later deadline, still ahead, ends the trip before PostgreSQL starts again
      feeding.feed(monoNowMs() + 600_000);
    }
    feeding.close();
    printTable(
      `fencing guard: missed deadline -> postmaster gone, ${runs} runs`,
      ['figure', 'median ms', 'min ms', 'max ms'],
      [['deadline -> postmaster gone', fixed(median(stopMs)), fixed(min(stopMs)), fixed(max(stopMs))]],
      [`runs: ${stopMs.map((ms) => fixed(ms)).join(', ')} ms`, `machine: ${machine()} (other work shares it: figures are noisy)`],
    );
  });
});
