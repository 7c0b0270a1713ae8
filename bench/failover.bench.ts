/**
 * Failover time without a controller, bound by the leader's lease: seconds
 * from SIGKILL of the leader node (agent + postmaster) until a write succeeds
 * on the new leader, tried straight on every other node's PostgreSQL. The
 * killed node stays down until that write succeeded (a dead machine does not
 * come back in a second), then rejoins before the next run. One cluster in
 * synchronous mode (the default) and one in asynchronous mode, one after the
 * other on the same ports.
 *
 * Environment:
 *   BENCH_RUNS  runs per mode (default 5)
 *   BENCH_KEEP  1 keeps the cluster directories and their logs
 * Ports 18000-18099.
 */
import pg from 'pg';
import { loginConfig, type Login } from '../src/workload/connect.js';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { sleep } from '../src/util/clock.js';
import { describeMembers, settled } from '../src/workload/shape.js';
import { TestCluster } from '../test/support/cluster.js';
import { killNode, stopCluster } from './cluster.js';
import { envInteger } from './options.js';
import { machine, max, median, min, printTable, seconds } from './report.js';

const runs = envInteger('BENCH_RUNS', 5, 1, 50);
const portBase = 18000;
/** far beyond ttl: a run past it did not fail over at all */
const writeBoundMs = 60_000;

/** One autocommit INSERT on a fresh connection, refused by a server in recovery. */
async function write(port: number, login: Login): Promise<void> {
  const client = new pg.Client({ ...loginConfig(login, '127.0.0.1', port), connectionTimeoutMillis: 1000, query_timeout: 5000 });
  client.on('error', () => undefined);
  try {
    await client.connect();
    if ((await client.query<{ r: boolean }>('SELECT pg_is_in_recovery() AS r')).rows[0]!.r) throw new Error('read-only');
    await client.query('INSERT INTO bench_writes DEFAULT VALUES');
  } finally {
    await client.end().catch(() => undefined);
  }
}

const figures: Record<string, { ttl: number; seconds: (number | null)[] }> = {};

describe('failover without a controller (lease-bound)', () => {
  let tc: TestCluster | undefined;
  afterEach(async () => {
    await stopCluster(tc);
    tc = undefined;
  });
  // printed after both modes, whatever became of either
  afterAll(() => {
    const rows = Object.entries(figures).map(([mode, f]) => {
      const xs = f.seconds.filter((s): s is number => s !== null);
      return [mode === 'on' ? 'synchronous (default)' : 'asynchronous', f.ttl, f.seconds.length, seconds(median(xs)), seconds(min(xs)), seconds(max(xs))];
    });
    printTable(
      'failover without a controller (SIGKILL of the leader node -> write on the new leader, straight to PostgreSQL)',
      ['replication', 'ttl s', 'runs', 'median', 'min', 'max'],
      rows,
      [
        "bound by the lease: the dead leader's key lives until its ttl ends, then a replica promotes",
        `machine: ${machine()} (other work shares it: figures are noisy)`,
      ],
    );
  });

  for (const mode of ['on', 'off'] as const) {
    it(`synchronous_mode ${mode}: SIGKILL of the leader node -> write on the new leader, ${runs} run(s)`, async () => {
      tc = await TestCluster.start({ portBase, nodes: 3, synchronousMode: mode });
      const cluster = tc;
      await cluster.query((await cluster.leader()).pgPort, 'CREATE TABLE bench_writes (id bigserial PRIMARY KEY, at timestamptz DEFAULT now())');
      const times: (number | null)[] = [];
      for (let run = 1; run <= runs; run++) {
        await cluster.waitFor('a settled cluster', (v) => settled(v, 2), 120_000);
        const old = await cluster.leader();
        const others = (await cluster.view()).members.filter((m) => m.name !== old.name).map((m) => m.pgPort);
        const killedAtMs = await killNode(cluster, old.name);
        let took: number | null = null;
        while (took === null && Date.now() - killedAtMs < writeBoundMs) {
          for (const port of others) {
            try {
              await write(port, cluster.login);
              took = (Date.now() - killedAtMs) / 1000;
              break;
            } catch {
              // not writable yet
            }
          }
          if (took === null) await sleep(50);
        }
        times.push(took);
        console.log(`sync ${mode} run ${run}: write on the new leader ${took === null ? `never (${writeBoundMs / 1000} s): ${describeMembers(await cluster.view().catch(() => null))}` : seconds(took)} after SIGKILL of ${old.name}`);
        await cluster.local.provider.start(old.name);
      }
      figures[mode] = { ttl: (await cluster.view()).config?.value.ttl ?? 10, seconds: times };
      expect(times.filter((t) => t === null), `runs with no write on a new leader within ${writeBoundMs / 1000} s`).toEqual([]);
    });
  }
});
