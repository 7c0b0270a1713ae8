/**
 * Keel's figures side by side, from one 3-node cluster in synchronous mode
 * (the default) with its router, clients writing one row per transaction:
 *   1. SIGKILL of the leader node: seconds until writes are back through rw,
 *      client errors, acknowledged rows lost;
 *   2. planned switchovers, each with a client that opens a connection per
 *      transaction (connect timeout 2 s, as Django with CONN_MAX_AGE 0) and one
 *      that keeps its connection (and reconnects after an error): the longest
 *      pause between commits and the client errors, with where the pause went
 *      (from the agents' and the router's logs);
 *      and a third that keeps its connection to the pooled rw endpoint (PgBouncer);
 *   3. each agent's resident memory, idle.
 * Every process is a child of the cluster harness, stopped by PID; every loop
 * is bounded in time.
 *
 * Environment:
 *   BENCH_RUNS  switchovers (default 4)
 *   BENCH_KEEP  1 keeps the cluster directory and its logs
 * Ports 20600-20699.
 */
import { readFileSync } from 'node:fs';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { requestLeaderChange } from '../src/dcs/requests.js';
import { portOffsets } from '../src/providers/local-layout.js';
import { sleep } from '../src/util/clock.js';
import { readPidFile } from '../src/util/process.js';
import { loginConfig } from '../src/workload/connect.js';
import { leaderOf, settled } from '../src/workload/shape.js';
import { TestCluster } from '../test/support/cluster.js';
import { killNode, stopCluster } from './cluster.js';
import { envInteger } from './options.js';
import { machine, max, median, min, printTable, seconds, type Cell } from './report.js';

const runs = envInteger('BENCH_RUNS', 4, 1, 20);
const portBase = 20600;
const rwPort = portBase + portOffsets.routerRw;
const poolPort = portBase + portOffsets.routerPool;

type Mode = 'per-transaction' | 'persistent' | 'pooled';
const modeText: Record<Mode, string> = {
  'per-transaction': 'connection per transaction',
  persistent: 'persistent connection',
  pooled: 'persistent connection through the pooled rw endpoint',
};

interface Writer {
  commits: number;
  errors: string[];
  /** commit times (ms), acknowledged ids */
  times: number[];
  acked: number[];
  stop: () => Promise<void>;
}

/** A client writing rows through `port` until stopped: a new connection per transaction, or one kept. */
function startWriter(tc: TestCluster, port: number, mode: Mode): Writer {
  const config = { ...loginConfig(tc.login, '127.0.0.1', port), connectionTimeoutMillis: 2000, query_timeout: 10_000 };
  const w: Writer = { commits: 0, errors: [], times: [], acked: [], stop: async () => undefined };
  let stopping = false;
  let client: pg.Client | null = null;
  const open = async (): Promise<pg.Client> => {
    const c = new pg.Client(config);
    c.on('error', () => undefined);
    await c.connect();
    return c;
  };
  const loop = (async () => {
    while (!stopping) {
      try {
        client ??= await open();
        const row = await client.query<{ id: string }>('INSERT INTO bench_switch DEFAULT VALUES RETURNING id');
        w.times.push(Date.now());
        w.acked.push(Number(row.rows[0]!.id));
        w.commits += 1;
      } catch (err) {
        w.errors.push((err as Error).message);
        await client?.end().catch(() => undefined);
        client = null;
        await sleep(50);
      }
      if (mode === 'per-transaction' && client !== null) {
        await client.end().catch(() => undefined);
        client = null;
      }
    }
    await client?.end().catch(() => undefined);
  })();
  w.stop = async () => {
    stopping = true;
    await loop;
  };
  return w;
}

/** The longest gap between commits from `fromMs` on (the first commit after it closes the first gap). */
function longestPauseMs(w: Writer, fromMs: number): number {
  let last = fromMs;
  let longest = 0;
  for (const t of w.times) {
    if (t < fromMs) continue;
    longest = Math.max(longest, t - last);
    last = t;
  }
  return longest;
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

describe('switchover and failover, side by side', () => {
  let tc: TestCluster | undefined;
  const rows: Cell[][] = [];
  const stages: Cell[][] = [];
  const errorsSeen: string[] = [];
  afterAll(async () => {
    printTable('Keel, 3 nodes in synchronous mode, one row per transaction through rw', ['figure', 'value'], rows, [
      ...(errorsSeen.length > 0 ? [`client errors seen: ${errorsSeen.slice(0, 4).join(' | ')}`] : []),
      `machine: ${machine()} (other work shares it: figures are noisy)`,
    ]);
    printTable(
      'where a switchover pause goes (ms from the request written into etcd)',
      ['run', 'router holds', 'old leader decides', 'drained', 'old leader stopped + key released', 'new leader promoted', 'router routes to it', 'writes back'],
      stages,
    );
    await stopCluster(tc);
  });

  it(`SIGKILL of the leader, then ${runs} switchover(s), then the agents' memory`, async () => {
    // with a controller, as `keel up` runs: it fences a dead leader and ends its lease
    tc = await TestCluster.start({ portBase, nodes: 3, synchronousMode: 'on', controller: true });
    const cluster = tc;
    await cluster.query((await cluster.leader()).pgPort, 'CREATE TABLE bench_switch (id bigserial PRIMARY KEY, at timestamptz DEFAULT now())');

    // 1. SIGKILL of the leader node
    {
      const old = await cluster.leader();
      const writer = startWriter(cluster, rwPort, 'per-transaction');
      await sleep(2000);
      const killedAt = await killNode(cluster, old.name);
      const deadline = Date.now() + 60_000;
      while (!writer.times.some((t) => t > killedAt + 50) && Date.now() < deadline) await sleep(20);
      await sleep(1000);
      await writer.stop();
      const back = writer.times.find((t) => t > killedAt + 50);
      const present = await cluster.query<{ id: string }>((await cluster.leader()).pgPort, 'SELECT id FROM bench_switch WHERE id = ANY($1::bigint[])', [writer.acked]);
      rows.push(['SIGKILL of the leader node: writes back through rw', seconds(back === undefined ? null : (back - killedAt) / 1000)]);
      rows.push(['  client errors / acknowledged rows lost', `${writer.errors.length} / ${writer.acked.length - present.length}`]);
      await cluster.local.provider.start(old.name);
    }

    // 2. planned switchovers
    const modes: Mode[] = ['per-transaction', 'persistent', 'pooled'];
    const pauses: Record<Mode, number[]> = { 'per-transaction': [], persistent: [], pooled: [] };
    const errors: Record<Mode, number[]> = { 'per-transaction': [], persistent: [], pooled: [] };
    const samples: string[] = [];
    for (let run = 1; run <= runs; run++) {
      const view = await cluster.waitFor('a settled cluster', (v) => settled(v, 2) && v.sync !== null && v.sync.value.members.length === 2, 120_000);
      const old = leaderOf(view)!;
      const target = view.members.find((m) => m.name !== old.name)!.name;
      const writers: Record<Mode, Writer> = {
        'per-transaction': startWriter(cluster, rwPort, 'per-transaction'),
        persistent: startWriter(cluster, rwPort, 'persistent'),
        pooled: startWriter(cluster, poolPort, 'pooled'),
      };
      await sleep(2000);
      const requestedAt = Date.now();
      await requestLeaderChange(cluster.dcs, { failover: false, to: target, expectLeader: old.name }, requestedAt);
      await cluster.waitFor(`${target} leading`, (v) => leaderOf(v)?.name === target && leaderOf(v)?.role === 'primary', 30_000);
      await sleep(2000);
      for (const w of Object.values(writers)) await w.stop();
      for (const mode of modes) {
        pauses[mode].push(longestPauseMs(writers[mode], requestedAt - 1000));
        errors[mode].push(writers[mode].errors.length);
        samples.push(...writers[mode].errors.slice(0, 2));
      }
      const router = logLines(cluster.layout.routerLog, requestedAt);
      const oldAgent = logLines(cluster.layout.agentLog(old.name), requestedAt);
      const newAgent = logLines(cluster.layout.agentLog(target), requestedAt);
      const back = writers['per-transaction'].times.find((t) => t > requestedAt + 50);
      stages.push([
        run,
        ms(firstAt(router, /routes:.*switchover from/, requestedAt)),
        ms(firstAt(oldAgent, /^switchover to /, requestedAt)),
        ms(firstAt(oldAgent, /^switchover drain/, requestedAt)),
        ms(firstAt(oldAgent, /^state change$/, requestedAt, 'stopped')),
        ms(firstAt(newAgent, /^state change$/, requestedAt, 'primary')),
        ms(firstAt(router, new RegExp(`routes:.*rw -> ${target}`), requestedAt)),
        ms(back === undefined ? null : back - requestedAt),
      ]);
    }
    for (const mode of modes) {
      const p = pauses[mode].map((x) => x / 1000);
      rows.push([`planned switchover, ${modeText[mode]}: longest write pause (median, min-max)`, `${seconds(median(p))} (${seconds(min(p))} - ${seconds(max(p))})`]);
      rows.push([`  client errors per switchover`, errors[mode].join(', ')]);
    }
    errorsSeen.push(...new Set(samples));

    // 3. agents' memory, idle
    await cluster.waitFor('a settled cluster', (v) => settled(v, 2), 120_000);
    await sleep(3000);
    const rss = (await cluster.view()).members.map((m) => {
      const pid = readPidFile(cluster.layout.agentPidFile(m.name));
      const status = pid === null ? '' : readFileSync(`/proc/${pid}/status`, 'utf8');
      return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? NaN) / 1024;
    });
    rows.push(['agent resident memory, idle (MB, each)', rss.map((r) => r.toFixed(0)).join(', ')]);
    expect(pauses['per-transaction'].length).toBe(runs);
  });
});
