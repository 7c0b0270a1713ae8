/**
 * Patroni's figures and Keel's side by side, each from one 3-node cluster in
 * synchronous mode with the endpoint its users write through (Patroni:
 * HAProxy checking OPTIONS /primary on each node's REST API; Keel: its
 * router's rw), clients writing one row per transaction:
 *   1. SIGKILL of the leader node: seconds until writes are back through the
 *      endpoint, client errors, acknowledged rows lost;
 *   2. planned switchovers, each with a client that opens a connection per
 *      transaction (connect timeout 2 s, as Django with CONN_MAX_AGE 0) and one
 *      that keeps its connection (and reconnects after an error): the longest
 *      pause between commits and the client errors; for Keel also where the
 *      pause went (from the agents' and the router's logs), and a third client
 *      that keeps its connection to the pooled rw endpoint (PgBouncer);
 *   3. each node's manager process's resident memory, idle (Patroni's python
 *      process, Keel's agent): the median of a sample a second over 20 s.
 * Patroni runs first (Debian's 3.0.2, set up in bench/patroni.ts: ttl 10,
 * loop_wait 1, retry_timeout 5, synchronous_mode, use_pg_rewind), then Keel;
 * both use the same writers (bench/writers.ts). Every process is a child of
 * this one, stopped by PID; every loop is bounded in time.
 *
 * Environment:
 *   BENCH_RUNS     switchovers, for each of the two clusters (default 4)
 *   BENCH_KEEP     1 keeps the clusters' directories and their logs
 *   BENCH_PATRONI  0 skips Patroni's part (it is also skipped, with a line saying
 *                  so, when /usr/bin/patroni is missing)
 * Ports (127.0.0.1): Keel 20600-20699; Patroni 20700-20799 (etcd 20700-20701,
 * HAProxy 20702, PostgreSQL 20710-20712, REST API 20720-20722).
 */
import { existsSync, readFileSync } from 'node:fs';
import type pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { requestLeaderChange } from '../src/dcs/requests.js';
import { portOffsets } from '../src/providers/local-layout.js';
import { sleep } from '../src/util/clock.js';
import { readPidFile } from '../src/util/process.js';
import { loginConfig, queryOnce } from '../src/workload/connect.js';
import { leaderOf, settled } from '../src/workload/shape.js';
import { TestCluster } from '../test/support/cluster.js';
import { idleRssMb, killNode, stopCluster } from './cluster.js';
import { envInteger } from './options.js';
import { patroniBinary, patroniVersion, startPatroniCluster, until, type PatroniCluster } from './patroni.js';
import { machine, max, median, min, printTable, seconds, type Cell } from './report.js';
import { cpuSeconds } from './router-load.js';
import { commitConnection, longestPause, longestPauseMs, startWriter, type Writer, type WriterConnection } from './writers.js';

const runs = envInteger('BENCH_RUNS', 4, 1, 20);
/** seconds over which idle memory is sampled (the median counts) */
const idleSeconds = 20;
const patroniOff = ['0', 'false', 'no', 'off'].includes((process.env.BENCH_PATRONI ?? '').trim().toLowerCase());
const portBase = 20600;
const rwPort = portBase + portOffsets.routerRw;
const poolPort = portBase + portOffsets.routerPool;

type Mode = 'per-transaction' | 'persistent' | 'pooled';
const modes: Mode[] = ['per-transaction', 'persistent', 'pooled'];
const modeText: Record<Mode, string> = {
  'per-transaction': 'connection per transaction',
  persistent: 'persistent connection',
  pooled: 'persistent connection through the pooled rw endpoint',
};
// the pooled client is a persistent one whose endpoint is PgBouncer
const connectionOf = (mode: Mode): WriterConnection => (mode === 'per-transaction' ? 'per-transaction' : 'persistent');

/** What one cluster's part measured; a mode a cluster has no endpoint for is absent. */
interface Figures {
  killBackS: number | null;
  killErrors: number;
  killLost: number;
  pausesMs: Partial<Record<Mode, number[]>>;
  errors: Partial<Record<Mode, number[]>>;
  rssMb: number[];
}

/**
 * A client writing through `server` while `kill` takes the leader node down:
 * seconds until its writes are back, its errors, and how many of its
 * acknowledged rows `countPresent` does not find afterwards.
 */
async function measureKill(
  server: pg.ClientConfig,
  kill: () => Promise<{ atMs: number; pgPort: number }>,
  countPresent: (ids: number[]) => Promise<number>,
): Promise<Pick<Figures, 'killBackS' | 'killErrors' | 'killLost'>> {
  const writer = startWriter(server, 'per-transaction');
  await sleep(2000);
  const killed = await kill();
  // back: acknowledged by another server (the killed one may still acknowledge a commit until its postmaster is gone)
  const backAt = () => writer.times.find((t, i) => t > killed.atMs && writer.servers[i] !== killed.pgPort);
  const deadline = Date.now() + 60_000;
  while (backAt() === undefined && Date.now() < deadline) await sleep(20);
  await sleep(1000);
  await writer.stop();
  const back = backAt();
  const present = await countPresent(writer.acked);
  return { killBackS: back === undefined ? null : (back - killed.atMs) / 1000, killErrors: writer.errors.length, killLost: writer.acked.length - present };
}

/** Patroni's part: the same three measurements through HAProxy, switchovers by its REST API. */
async function patroniFigures(p: PatroniCluster, samples: string[]): Promise<Figures> {
  let killed = '';
  const kill = await measureKill(
    p.appConnection(),
    async () => {
      const k = await p.killLeader();
      killed = k.name;
      return k;
    },
    // through HAProxy, i.e. on the new leader; retried while HAProxy's checks catch up
    (ids) => until('count of acknowledged rows', async () => (await queryOnce({ ...p.appConnection(), connectionTimeoutMillis: 2000 }, 'SELECT id FROM bench_switch WHERE id = ANY($1::bigint[])', [ids])).length, 30_000, 500),
  );
  p.restart(killed);

  const used: Mode[] = ['per-transaction', 'persistent'];
  const pausesMs: Figures['pausesMs'] = { 'per-transaction': [], persistent: [] };
  const errors: Figures['errors'] = { 'per-transaction': [], persistent: [] };
  for (let run = 1; run <= runs; run++) {
    await p.untilHealthy(180_000);
    const writers = used.map((mode) => startWriter(p.appConnection(), connectionOf(mode)));
    await sleep(2000);
    const { to, requestedAtMs } = await p.switchover();
    await until(`${to} leading`, async () => ((await p.leaderName()) === to ? true : undefined), 60_000);
    const ledAtMs = Date.now();
    // HAProxy sends new connections to the new leader only once its checks mark it up (rise 2, inter 3 s)
    await until('writes through HAProxy again', async () => (writers.every((w) => w.times.some((t) => t > ledAtMs)) ? true : undefined), 60_000);
    await sleep(2000);
    for (const w of writers) await w.stop();
    used.forEach((mode, i) => {
      pausesMs[mode]!.push(longestPauseMs(writers[i]!, requestedAtMs - 1000));
      errors[mode]!.push(writers[i]!.errors.length);
      samples.push(...writers[i]!.errors.slice(0, 2));
    });
  }

  await p.untilHealthy(180_000);
  await sleep(3000);
  return { ...kill, pausesMs, errors, rssMb: await idleRssMb(p.pids(), idleSeconds) };
}

interface LogLine {
  time: number;
  msg: string;
  /** a state change's new state */
  to?: string;
}

function logLines(path: string, sinceMs: number): LogLine[] {
  const lines: LogLine[] = [];
  for (const text of readFileSync(path, 'utf8').split('\n')) {
    if (!text.startsWith('{')) continue;
    const line = JSON.parse(text) as LogLine;
    if (line.time >= sinceMs) lines.push(line);
  }
  return lines;
}

/** Milliseconds from `fromMs` to the first line from `sinceMs` on that matches. */
function firstAt(lines: LogLine[], pattern: RegExp, fromMs: number, to?: string): number | null {
  const line = lines.find((l) => pattern.test(l.msg) && (to === undefined || l.to === to));
  return line === undefined ? null : line.time - fromMs;
}

const ms = (value: number | null): Cell => (value === null ? '-' : Math.round(value));

/** The side-by-side rows: one figure per line, '-' where a cluster has no such figure (or did not run). */
function comparisonRows(patroni: Figures | null, keel: Figures | null): Cell[][] {
  const row = (figure: string, cell: (f: Figures) => string | null): Cell[] => [figure, patroni === null ? '-' : cell(patroni), keel === null ? '-' : cell(keel)];
  const pause = (values: number[] | undefined) => {
    if (values === undefined) return null;
    const s = values.map((x) => x / 1000);
    return `${seconds(median(s))} (${seconds(min(s))} - ${seconds(max(s))})`;
  };
  return [
    row('SIGKILL of the leader node: writes back through the endpoint', (f) => seconds(f.killBackS)),
    row('  client errors / acknowledged rows lost', (f) => `${f.killErrors} / ${f.killLost}`),
    ...modes.flatMap((mode) => [
      row(`planned switchover, ${modeText[mode]}: longest write pause (median, min-max)`, (f) => pause(f.pausesMs[mode])),
      row('  client errors per switchover', (f) => f.errors[mode]?.join(', ') ?? null),
    ]),
    row('manager process resident memory, idle (MB, each node)', (f) => f.rssMb.map((r) => r.toFixed(0)).join(', ')),
  ];
}

describe('switchover and failover, Patroni and Keel side by side', () => {
  let tc: TestCluster | undefined;
  let patroni: Figures | null = null;
  let keel: Figures | null = null;
  const patroniNotes: string[] = [];
  const stages: Cell[][] = [];
  const errorsSeen = { Patroni: [] as string[], Keel: [] as string[] };
  /** each client error of Keel's switchovers: which run and client, and when */
  const keelErrors: string[] = [];
  /** per switchover, the connection whose commit ended the longest pause of the per-transaction writer */
  const backConnections: string[] = [];
  afterAll(async () => {
    printTable('Patroni and Keel, 3 nodes in synchronous mode, one row per transaction (Patroni through HAProxy, Keel through rw)', ['figure', 'Patroni', 'Keel'], comparisonRows(patroni, keel), [
      ...patroniNotes,
      ...Object.entries(errorsSeen).flatMap(([who, seen]) => (seen.length > 0 ? [`${who}: client errors seen: ${[...new Set(seen)].slice(0, 4).join(' | ')}`] : [])),
      'manager process: Patroni (python), Keel agent',
      `machine: ${machine()} (other work shares it: figures are noisy)`,
    ]);
    printTable(
      'Keel: where a switchover pause goes (ms from the request written into etcd)',
      ['run', 'router holds', 'old leader decides', 'drained', 'old leader stopped + key released', 'new leader promoted', 'router routes to it', 'writes back', 'CPU ms: old leader, target, other agent; router; controller; etcd'],
      stages,
    );
    if (backConnections.length > 0) {
      console.log(`Keel: the connection whose commit ended each per-transaction pause (ms after the request, then after it began)\n${backConnections.map((c) => `  ${c}`).join('\n')}`);
    }
    if (keelErrors.length > 0) console.log(`Keel: client errors in the switchovers\n${keelErrors.map((e) => `  ${e}`).join('\n')}`);
    await stopCluster(tc);
  });

  it(`Patroni: SIGKILL of the leader, then ${runs} switchover(s), then its memory`, async () => {
    if (patroniOff) {
      patroniNotes.push('Patroni: skipped (BENCH_PATRONI=0)');
      return;
    }
    if (!existsSync(patroniBinary)) {
      const line = `Patroni: skipped, ${patroniBinary} is missing (make bench installs Debian's patroni package)`;
      console.log(line);
      patroniNotes.push(line);
      return;
    }
    patroniNotes.push(`Patroni: ${patroniVersion()}, etcd v3 API, ttl 10, loop_wait 1, retry_timeout 5, synchronous_mode, use_pg_rewind; HAProxy inter 3s fall 3 rise 2`);
    const cluster = await startPatroniCluster();
    try {
      patroni = await patroniFigures(cluster, errorsSeen.Patroni);
    } finally {
      await cluster.stop();
    }
  });

  it(`Keel: SIGKILL of the leader, then ${runs} switchover(s), then the agents' memory`, async () => {
    // with a controller, as `keel up` runs: it fences a dead leader and ends its lease
    tc = await TestCluster.start({ portBase, nodes: 3, synchronousMode: 'on', controller: true });
    const cluster = tc;
    await cluster.query((await cluster.leader()).pgPort, 'CREATE TABLE bench_switch (id bigserial PRIMARY KEY, at timestamptz DEFAULT now())');
    const server = (port: number) => loginConfig(cluster.login, '127.0.0.1', port);

    // 1. SIGKILL of the leader node
    const old = await cluster.leader();
    const kill = await measureKill(
      server(rwPort),
      async () => ({ atMs: await killNode(cluster, old.name), pgPort: old.pgPort }),
      async (ids) => (await cluster.query((await cluster.leader()).pgPort, 'SELECT id FROM bench_switch WHERE id = ANY($1::bigint[])', [ids])).length,
    );
    await cluster.local.provider.start(old.name);

    // 2. planned switchovers
    const pausesMs: Record<Mode, number[]> = { 'per-transaction': [], persistent: [], pooled: [] };
    const errors: Record<Mode, number[]> = { 'per-transaction': [], persistent: [], pooled: [] };
    for (let run = 1; run <= runs; run++) {
      const view = await cluster.waitFor('a settled cluster', (v) => settled(v, 2) && v.sync !== null && v.sync.value.members.length === 2, 120_000);
      const old = leaderOf(view)!;
      const target = view.members.find((m) => m.name !== old.name)!.name;
      const writers: Record<Mode, Writer> = {
        'per-transaction': startWriter(server(rwPort), connectionOf('per-transaction')),
        persistent: startWriter(server(rwPort), connectionOf('persistent')),
        pooled: startWriter(server(poolPort), connectionOf('pooled')),
      };
      await sleep(2000);
      // the CPU each agent, the router, the controller and etcd use from the request until the target leads
      const other = view.members.find((m) => m.name !== old.name && m.name !== target)?.name;
      const cpuPids = [old.name, target, other].map((name) => (name === undefined ? null : readPidFile(cluster.layout.agentPidFile(name))));
      cpuPids.push(readPidFile(cluster.layout.routerPidFile), readPidFile(cluster.layout.controllerPidFile), readPidFile(cluster.layout.etcdPidFile));
      const cpuBefore = cpuPids.map((pid) => (pid === null ? 0 : cpuSeconds(pid)));
      const requestedAt = Date.now();
      await requestLeaderChange(cluster.dcs, { failover: false, to: target, expectLeader: old.name }, requestedAt);
      await cluster.waitFor(`${target} leading`, (v) => leaderOf(v)?.name === target && leaderOf(v)?.role === 'primary', 30_000);
      const cpuMs = cpuPids.map((pid, i) => (pid === null ? '-' : String(Math.round((cpuSeconds(pid) - cpuBefore[i]!) * 1000))));
      await sleep(2000);
      for (const w of Object.values(writers)) await w.stop();
      for (const mode of modes) {
        pausesMs[mode].push(longestPauseMs(writers[mode], requestedAt - 1000));
        errors[mode].push(writers[mode].errors.length);
        errorsSeen.Keel.push(...writers[mode].errors.slice(0, 2));
        writers[mode].errors.forEach((e, i) => keelErrors.push(`run ${run}, ${mode}, ${writers[mode].errorTimes[i]! - requestedAt} ms after the request: ${e} (${writers[mode].errorPhases[i] || 'no step of the connection done'})`));
      }
      const router = logLines(cluster.layout.routerLog, requestedAt);
      const oldAgent = logLines(cluster.layout.agentLog(old.name), requestedAt);
      const newAgent = logLines(cluster.layout.agentLog(target), requestedAt);
      // the commit that ended the longest pause: writes back on the new leader
      const backPause = longestPause(writers['per-transaction'], requestedAt - 1000, requestedAt);
      const back = backPause.endsAtMs;
      // and, beside it, the last one before the request: the same steps on a leader in its steady state
      const perTransaction = writers['per-transaction'];
      const before = commitConnection(perTransaction, perTransaction.times.findLastIndex((t) => t < requestedAt), requestedAt);
      if (backPause.connection !== null) backConnections.push(`run ${run}: ${backPause.connection}\n    the last before the request: ${before ?? 'none'}`);
      stages.push([
        run,
        ms(firstAt(router, /routes:.*switchover from/, requestedAt)),
        ms(firstAt(oldAgent, /^switchover to /, requestedAt)),
        ms(firstAt(oldAgent, /^switchover drain/, requestedAt)),
        ms(firstAt(oldAgent, /^state change$/, requestedAt, 'stopped')),
        ms(firstAt(newAgent, /^state change$/, requestedAt, 'primary')),
        ms(firstAt(router, new RegExp(`routes:.*rw -> ${target}`), requestedAt)),
        ms(back === null ? null : back - requestedAt),
        `${cpuMs.slice(0, 3).join(', ')}; ${cpuMs.slice(3).join('; ')}`,
      ]);
    }

    // 3. agents' memory, idle
    await cluster.waitFor('a settled cluster', (v) => settled(v, 2), 120_000);
    await sleep(3000);
    const rssMb = await idleRssMb((await cluster.view()).members.map((m) => readPidFile(cluster.layout.agentPidFile(m.name))), idleSeconds);
    keel = { ...kill, pausesMs, errors, rssMb };
    expect(pausesMs['per-transaction'].length).toBe(runs);
  });
});
