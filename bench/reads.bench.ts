/**
 * Read scaling with the demo's dataset: nearest-open-deals queries per second
 * on the ro endpoint with 1, 2 and 3 replicas serving reads, the same queries
 * straight to 1, 2 and 3 replicas (no router), and single-row writes per second
 * on rw and straight to the leader. A 4-node cluster (leader + 3 replicas, the
 * default synchronous replication); replicas are stopped one by one for the 2-
 * and 1-replica figures. Closed loop: each connection sends its next query when
 * the previous one answered.
 *
 * Everything (4 PostgreSQL servers, etcd, the router and this client) shares
 * this machine's CPUs: the figures show where the machine saturates, not what
 * separate servers would do. CPU milliseconds per operation, split by who spends
 * them, say more about how reads scale on separate machines than the rates do.
 *
 * Environment:
 *   BENCH_DEALS        deals loaded (default 100000)
 *   BENCH_SECONDS      seconds measured per figure (default 8)
 *   BENCH_CONNECTIONS  client connections (default 8)
 *   BENCH_KEEP         1 keeps the cluster directory and its logs
 * Ports 18300-18399.
 */
import { readdirSync, readFileSync } from 'node:fs';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { insertDealSql, nearestDealsSql, randomDeal, randomPoint, seededRandom, type Random } from '../src/demo/dataset.js';
import { prepareDataset } from '../src/demo/load.js';
import { Histogram } from '../src/demo/stats.js';
import type { MemberValue } from '../src/model/values.js';
import { connectionStrings } from '../src/providers/local-layout.js';
import { sleep } from '../src/util/clock.js';
import { readPidFile } from '../src/util/process.js';
import { connect, type Endpoint } from '../src/workload/connect.js';
import { TestCluster } from '../test/support/cluster.js';
import { stopCluster } from './cluster.js';
import { envInteger } from './options.js';
import { fixed, machine, printTable, type Cell } from './report.js';

const deals = envInteger('BENCH_DEALS', 100_000, 1000, 5_000_000);
const seconds = envInteger('BENCH_SECONDS', 8, 1, 600);
const connections = envInteger('BENCH_CONNECTIONS', 8, 1, 200);
const portBase = 18300;
// CPU time in /proc is counted in clock ticks of 1/100 s on Linux
const clockTicks = 100;

interface Cpu {
  postgres: number;
  router: number;
  client: number;
}

interface Figure {
  label: string;
  perSecond: number;
  p50: number | null;
  p99: number | null;
  errors: number;
  firstError: string | null;
  /** CPU milliseconds per operation */
  cpu: { postgres: number | null; router: number | null; client: number | null };
  withRouter: boolean;
}

type Step = (client: pg.Client, random: Random) => Promise<unknown>;

const nearest: Step = (client, random) => {
  const here = randomPoint(random);
  return client.query({ name: 'nearest', text: nearestDealsSql, values: [here.lon, here.lat] });
};
const insert: Step = (client, random) => {
  const d = randomDeal(random, Date.now());
  return client.query({ name: 'insert', text: insertDealSql, values: [d.title, d.category, d.lon, d.lat, d.priceCents, new Date(Date.now() + 86_400_000).toISOString()] });
};

/** utime + stime of a process in seconds, and its parent; null once it is gone. */
function procStat(pid: number): { ppid: number; cpu: number } | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { ppid: Number(fields[1]), cpu: (Number(fields[11]) + Number(fields[12])) / clockTicks };
  } catch {
    return null;
  }
}

/** `connections` connections spread round-robin over the given URLs. */
const spread = (list: string[]) => Array.from({ length: connections }, (_, i) => list[i % list.length]!);

describe('read scaling', () => {
  let tc: TestCluster | undefined;
  let urls: { rw: string; ro: string };
  const endpoint = (url: string): Endpoint => ({ connectionString: url, password: tc!.login.password });
  const pgUrl = (m: MemberValue) => `postgresql://app@${m.pgHost}:${m.pgPort}/app?sslmode=verify-full&sslrootcert=${encodeURIComponent(tc!.layout.caFiles.cert)}`;
  const reads: Figure[] = [];
  const writes: Figure[] = [];

  /** CPU seconds so far of the cluster's PostgreSQL servers (postmasters and their backends), of the router and of this process. */
  function clusterCpu(): Cpu {
    const layout = tc!.layout;
    const postmasters = new Set(layout.nodeNames().map((name) => readPidFile(`${layout.dataDir(name)}/postmaster.pid`)).filter((p): p is number => p !== null));
    let postgres = 0;
    for (const entry of readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      const st = procStat(Number(entry));
      if (st !== null && (postmasters.has(Number(entry)) || postmasters.has(st.ppid))) postgres += st.cpu;
    }
    const routerPid = readPidFile(layout.routerPidFile);
    const router = routerPid === null ? 0 : (procStat(routerPid)?.cpu ?? 0);
    const usage = process.cpuUsage();
    return { postgres, router, client: (usage.user + usage.system) / 1e6 };
  }

  /** Runs `step` on `targets.length` connections for `measureSeconds` after a warm-up second. */
  async function closedLoop(label: string, targets: string[], step: Step, withRouter: boolean, measureSeconds = seconds): Promise<Figure> {
    const latency = new Histogram();
    let ok = 0;
    let errors = 0;
    let firstError: string | null = null;
    let measuring = false;
    let stopping = false;
    const worker = async (target: string, index: number) => {
      const random = seededRandom(1000 + index);
      let client: pg.Client | null = null;
      while (!stopping) {
        try {
          client ??= await connect(endpoint(target), 'keel-bench');
          const started = performance.now();
          await step(client, random);
          if (measuring) {
            latency.add(performance.now() - started);
            ok += 1;
          }
        } catch (err) {
          if (measuring) {
            errors += 1;
            firstError ??= err instanceof Error ? err.message : String(err);
          }
          await client?.end().catch(() => undefined);
          client = null;
          await sleep(100);
        }
      }
      await client?.end().catch(() => undefined);
    };
    const running = targets.map(worker);
    // one second of warm-up: connections made, statements prepared, caches warm
    await sleep(1000);
    measuring = true;
    const cpuBefore = clusterCpu();
    const started = performance.now();
    await sleep(measureSeconds * 1000);
    measuring = false;
    const elapsed = (performance.now() - started) / 1000;
    // before the connections close: a backend's CPU time goes with it
    const cpuAfter = clusterCpu();
    stopping = true;
    await Promise.all(running);
    const perOpMs = (key: keyof Cpu) => (ok === 0 ? null : ((cpuAfter[key] - cpuBefore[key]) * 1000) / ok);
    return { label, perSecond: ok / elapsed, p50: latency.percentile(0.5), p99: latency.percentile(0.99), errors, firstError, cpu: { postgres: perOpMs('postgres'), router: perOpMs('router'), client: perOpMs('client') }, withRouter };
  }

  async function replicasNow(): Promise<{ leader: MemberValue; replicas: MemberValue[] }> {
    const view = await tc!.view();
    const leader = view.members.find((m) => m.name === view.leader?.value.name);
    if (leader === undefined) throw new Error('no leader');
    return { leader, replicas: view.members.filter((m) => m.name !== leader.name && m.role === 'replica' && m.streaming) };
  }

  /** Waits until exactly `n` replicas stream (a stopped one's key gone). */
  async function waitForReplicas(n: number): Promise<void> {
    await tc!.waitFor(`${n} streaming replicas`, (view) => {
      const others = view.members.filter((m) => m.name !== view.leader?.value.name);
      return others.length === n && others.every((m) => m.role === 'replica' && m.streaming);
    }, 60_000);
  }

  const rows = (figures: Figure[]): Cell[][] =>
    figures.map((f) => [
      f.label,
      Math.round(f.perSecond).toLocaleString('en-US'),
      fixed(f.p50, 2),
      fixed(f.p99, 1),
      fixed(f.cpu.postgres, 3),
      f.withRouter ? fixed(f.cpu.router, 3) : '',
      fixed(f.cpu.client, 3),
      f.errors,
    ]);
  const headers = ['', 'ops/s', 'p50 ms', 'p99 ms', 'CPU ms/op postgres', 'router', 'client', 'errors'];
  const errorNotes = (figures: Figure[]) => figures.filter((f) => f.firstError !== null).map((f) => `${f.label.trim()}: first error ${f.firstError}`);

  beforeAll(async () => {
    const t0 = Date.now();
    tc = await TestCluster.start({ portBase, nodes: 4 });
    urls = connectionStrings(tc.layout, tc.file);
    const loaded = await prepareDataset(endpoint(urls.rw), deals, 42, () => undefined, () => false);
    console.log(`cluster of 4 ready and ${loaded.loaded.toLocaleString('en-US')} deals loaded in ${((Date.now() - t0) / 1000).toFixed(1)} s; ${machine()}; ${connections} connections, ${seconds} s per figure`);
    // every replica must have replayed the whole dataset and its index before reads count
    for (const r of (await replicasNow()).replicas) {
      const c = await connect(endpoint(pgUrl(r)), 'keel-bench');
      try {
        for (let i = 0; i < 300 && Number((await c.query<{ n: string }>('SELECT count(*) AS n FROM deals')).rows[0]!.n) < deals; i++) await sleep(100);
      } finally {
        await c.end();
      }
    }
  });
  afterAll(async () => {
    await stopCluster(tc);
  });

  it('nearest open deals within 2 km: straight to replicas, then through ro with 3, 2, 1 replicas', async () => {
    const { replicas } = await replicasNow();
    expect(replicas).toHaveLength(3);
    // unmeasured: every replica reads its index and table into memory once
    await closedLoop('warm-up', spread(replicas.map(pgUrl)), nearest, false, 2);
    for (let n = 1; n <= 3; n++) reads.push(await closedLoop(`straight to ${n} replica(s)`, spread(replicas.slice(0, n).map(pgUrl)), nearest, false));
    for (let n = 3; n >= 1; n--) {
      await waitForReplicas(n);
      // a moment for the router to follow
      await sleep(1500);
      reads.push(await closedLoop(`ro endpoint, ${n} replica(s) serving`, spread([urls.ro]), nearest, true));
      if (n > 1) await tc!.local.provider.stop(replicas[n - 1]!.name);
    }
    printTable(`nearest open deals within 2 km (ST_DWithin + <-> LIMIT 10), ${connections} connections, ${seconds} s each`, headers, rows(reads), [
      ...errorNotes(reads),
      `machine: ${machine()} (other work shares it: figures are noisy)`,
    ]);
    expect(reads.filter((f) => f.perSecond === 0).map((f) => f.label), 'figures where no query answered').toEqual([]);
  });

  it('single-row INSERT ... RETURNING id (autocommit): straight to the leader and through rw', async () => {
    const { leader } = await replicasNow();
    writes.push(await closedLoop('straight to the leader', spread([pgUrl(leader)]), insert, false));
    writes.push(await closedLoop('rw endpoint', spread([urls.rw]), insert, true));
    const mode = (await tc!.view()).config?.value.synchronous_mode;
    printTable(`single-row INSERT ... RETURNING id (autocommit), ${connections} connections, ${seconds} s each, synchronous_mode ${mode}, 1 replica`, headers, rows(writes), [
      ...errorNotes(writes),
      `machine: ${machine()} (other work shares it: figures are noisy)`,
    ]);
    expect(writes.filter((f) => f.perSecond === 0).map((f) => f.label), 'figures where no write committed').toEqual([]);
  });
});
