/**
 * The controller's figures, with a controller running in this process beside
 * a three-node cluster (replaceAfterSeconds 5, ticks of 250 ms):
 *  1. seconds from SIGKILL of the leader node (agent + postmaster) to a write
 *     through the router's rw endpoint, and to all declared members streaming
 *     again (the dead node replaced by a fresh clone), over BENCH_RUNS runs;
 *  2. seconds to add one replica to a database of BENCH_SIZE_MB, against a
 *     bare pg_basebackup of the same database in the same run.
 * The cluster runs in the default replication mode (synchronous).
 *
 * Environment:
 *   BENCH_RUNS     failover runs (default 3)
 *   BENCH_SIZE_MB  database size for the replica figure (default 1024)
 *   BENCH_KEEP     1 keeps the cluster directory and its logs
 * Ports 18200-18299.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Controller } from '../src/controller/controller.js';
import type { ClusterView } from '../src/model/values.js';
import { portOffsets } from '../src/providers/local-layout.js';
import { sleep } from '../src/util/clock.js';
import { leaderOf, shapeIs } from '../src/workload/shape.js';
import { untilView } from '../src/workload/wait.js';
import { TestCluster } from '../test/support/cluster.js';
import { localController } from '../test/support/controller.js';
import { killNode, removeDir, stopCluster } from './cluster.js';
import { envInteger } from './options.js';
import { fixed, machine, max, median, printTable, seconds } from './report.js';

const runs = envInteger('BENCH_RUNS', 3, 1, 50);
const sizeMb = envInteger('BENCH_SIZE_MB', 1024, 1, 100_000);
const portBase = 18200;
const rwPort = portBase + portOffsets.routerRw;
const writeBoundMs = 60_000;

describe('controller', () => {
  let tc: TestCluster | undefined;
  let controller: Controller | undefined;

  beforeAll(async () => {
    tc = await TestCluster.start({ portBase, nodes: 3 });
    controller = localController('bench', tc.dcs, tc.local.provider);
    await controller.start();
    for (let i = 0; i < 100 && (await tc.dcs.readSpec()) === null; i++) await sleep(100);
    const first = await tc.dcs.readSpec();
    if (first === null) throw new Error('the controller wrote no spec within 10 s');
    await tc.dcs.putSpec({ ...first.value, replaceAfterSeconds: 5 }, first.modRevision);
    await tc.untilWritable(rwPort, 'CREATE TABLE bench_writes (id bigserial PRIMARY KEY, at timestamptz DEFAULT now())', 30_000);
  });
  afterAll(async () => {
    // the controller first: it would replace nodes being stopped
    await controller?.stop().catch(() => undefined);
    await stopCluster(tc);
  });

  const until = (what: string, accept: (view: ClusterView) => boolean, timeoutMs: number) =>
    untilView(() => tc!.view(), what, accept, { timeoutMs, pollMs: 50, detail: () => `controller: ${controller?.lastPlan?.reason}` });

  it(`SIGKILL of the leader node -> write through rw, -> all members streaming again; ${runs} run(s)`, async () => {
    const cluster = tc!;
    const toWrite: (number | null)[] = [];
    const toStreaming: number[] = [];
    for (let run = 1; run <= runs; run++) {
      const old = leaderOf(await until('settled cluster', (v) => shapeIs(v, 2), 120_000))!;
      const killedAtMs = await killNode(cluster, old.name);
      let wrote: number | null = null;
      while (wrote === null && Date.now() - killedAtMs < writeBoundMs) {
        try {
          await cluster.query(rwPort, 'INSERT INTO bench_writes DEFAULT VALUES');
          wrote = (Date.now() - killedAtMs) / 1000;
        } catch {
          await sleep(20);
        }
      }
      await until('all members streaming again', (v) => shapeIs(v, 2) && !v.members.some((m) => m.name === old.name), 120_000);
      const streaming = (Date.now() - killedAtMs) / 1000;
      toWrite.push(wrote);
      toStreaming.push(streaming);
      console.log(`run ${run}: SIGKILL of leader ${old.name} -> write through rw ${wrote === null ? `never (${writeBoundMs / 1000} s)` : seconds(wrote)}; -> all 3 members streaming ${seconds(streaming, 1)}`);
    }
    const writes = toWrite.filter((w): w is number => w !== null);
    printTable(
      `failover with the controller (replaceAfterSeconds 5, synchronous_mode ${(await cluster.view()).config?.value.synchronous_mode}), ${runs} run(s)`,
      ['figure', 'median', 'max'],
      [
        ['SIGKILL leader node -> write through rw', seconds(median(writes)), seconds(max(writes))],
        ['SIGKILL leader node -> all 3 members streaming (replaced by a clone)', seconds(median(toStreaming), 1), seconds(max(toStreaming), 1)],
      ],
      [`machine: ${machine()} (other work shares it: figures are noisy)`],
    );
    expect(toWrite.filter((w) => w === null), `runs with no write through rw within ${writeBoundMs / 1000} s`).toEqual([]);
  });

  it(`one replica added through the spec, against a bare pg_basebackup of ${sizeMb} MB`, async () => {
    const cluster = tc!;
    // a database of about BENCH_SIZE_MB: rows of ~1 kB
    const rows = Math.round((sizeMb * 1024 * 1024) / 1100);
    const loadStartedMs = Date.now();
    await cluster.untilWritable(rwPort, `CREATE TABLE bench_big AS SELECT g AS id, repeat(md5(g::text), 30) AS pad FROM generate_series(1, ${rows}) g`, 5000);
    const loadSeconds = (Date.now() - loadStartedMs) / 1000;
    const [{ bytes }] = (await cluster.query<{ bytes: string }>(rwPort, "SELECT pg_database_size('app')::bigint AS bytes")) as [{ bytes: string }];
    const mb = Number(bytes) / 1024 / 1024;
    await until(
      'replicas caught up',
      (v) => shapeIs(v, 2) && v.members.every((m) => m.role === 'primary' || (m.replayedLsn ?? 0) >= (leaderOf(v)?.walLsn ?? 0) - 1024 * 1024),
      600_000,
    );
    const leader = leaderOf(await cluster.view())!;
    const bareBasebackup = async (): Promise<number> => {
      const target = `${cluster.layout.dir}/bare-basebackup`;
      const startedMs = Date.now();
      // not execFileSync: the controller shares this event loop and must keep renewing its lease
      await promisify(execFile)(
        '/usr/lib/postgresql/15/bin/pg_basebackup',
        ['-D', target, '-h', '127.0.0.1', '-p', String(leader.pgPort), '-U', 'replicator', '-X', 'stream', '--checkpoint=fast', '--no-password'],
        { env: { ...process.env, PGPASSWORD: cluster.local.secrets.replication }, timeout: 900_000 },
      );
      const took = (Date.now() - startedMs) / 1000;
      await removeDir(target);
      return took;
    };
    // once before and once after the replica is added: the first copy also warms the page cache
    const bareBefore = await bareBasebackup();
    const spec = (await cluster.dcs.readSpec())!;
    const addStartedMs = Date.now();
    expect(await cluster.dcs.putSpec({ ...spec.value, nodes: spec.value.nodes + 1 }, spec.modRevision)).toBe(true);
    await until('a fourth member streaming', (v) => shapeIs(v, 3), 900_000);
    const added = (Date.now() - addStartedMs) / 1000;
    const bareAfter = await bareBasebackup();
    const bare = (bareBefore + bareAfter) / 2;
    printTable(
      `one replica added through the spec (create, agent start, clone, stream), database of ${fixed(mb)} MB loaded in ${seconds(loadSeconds, 1)}`,
      ['figure', 'seconds', 'x bare pg_basebackup'],
      [
        ['bare pg_basebackup, before the replica was added', seconds(bareBefore, 1), ''],
        ['bare pg_basebackup, after the replica was added', seconds(bareAfter, 1), ''],
        ['replica added through the spec', seconds(added, 1), fixed(added / bare, 2)],
      ],
      ['x bare pg_basebackup: against the mean of the two bare copies', `machine: ${machine()} (other work shares it: figures are noisy)`],
    );
  });
});
