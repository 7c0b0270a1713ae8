/**
 * Failover with the defaults of `keel up`: synchronous replication, ttl and
 * loop from the default dynamic config, the default spec (replaceAfterSeconds
 * 30) and a `keel controller` process beside the cluster, as `keel up` runs
 * one. Each run SIGKILLs the leader node (agent + postmaster; the node stays
 * dead, as a machine would) while one writer commits a row per transaction
 * through the router's rw endpoint on a fresh connection each time (connect
 * timeout 2 s). Figures per run and over all runs (median, max):
 *   (a) seconds from the kill until a commit on the new leader is acknowledged
 *       through rw;
 *   (b) acknowledged writes lost: every acknowledged row must be on the new
 *       leader afterwards (synchronous mode promises none lost; a loss fails
 *       the bench);
 * and beside them when the new leader key appeared, whether the controller
 * ended the dead leader's lease, and when the controller's replacement node
 * streamed again.
 *
 * Environment:
 *   BENCH_RUNS  runs (default 3)
 *   BENCH_KEEP  1 keeps the cluster directory and its logs
 * Ports 19300-19399.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ClusterView } from '../src/model/values.js';
import { portOffsets } from '../src/providers/local-layout.js';
import { sleep } from '../src/util/clock.js';
import { presentRowsSql } from '../src/workload/acks.js';
import { connectClient } from '../src/workload/connect.js';
import { leaderOf, settled, shapeIs } from '../src/workload/shape.js';
import { lackedOnLeader } from '../src/workload/verify.js';
import { untilView } from '../src/workload/wait.js';
import { ackRowSteps, ackTableSql, Writer } from '../src/workload/writer.js';
import { appConnection, TestCluster } from '../test/support/cluster.js';
import { killNode, stopCluster } from './cluster.js';
import { envInteger } from './options.js';
import { fixed, machine, max, median, printTable, seconds, type Cell } from './report.js';

const runs = envInteger('BENCH_RUNS', 3, 1, 50);
const portBase = 19300;
/** far beyond any failover this cluster should take (ttl 10 s): a run past it did not fail over at all */
const writeBoundMs = 120_000;
/** replaceAfterSeconds 30, then a clone on a busy machine */
const shapeBoundMs = 300_000;
const ackTable = 'bench_acks';

interface Run {
  killed: string;
  newLeader: string | null;
  leaderKeySeconds: number | null;
  leaseEnded: boolean;
  writeSeconds: number | null;
  shapeSeconds: number;
  acks: number;
  lost: number[];
  writerErrors: number;
}

describe('failover with the defaults of keel up', () => {
  let tc: TestCluster | undefined;

  beforeAll(async () => {
    tc = await TestCluster.start({ portBase, nodes: 3, controller: true });
  });
  afterAll(async () => {
    await stopCluster(tc);
  });

  /** Polls etcd until `accept` holds; the members' states in the error after `timeoutMs`. */
  const until = (what: string, accept: (view: ClusterView) => boolean | Promise<boolean>, timeoutMs: number) => untilView(() => tc!.view(), what, accept, { timeoutMs, pollMs: 100 });

  /** Acknowledged rows missing on the server at `port`. */
  async function lostOn(port: number, ids: number[]): Promise<number[]> {
    const check = await lackedOnLeader(() => connectClient(appConnection('127.0.0.1', port, tc!.login, 10_000)), { rows: { ids, presentSql: presentRowsSql(ackTable) } }, 30_000);
    if (check.error !== null) throw new Error(`could not check the acknowledged writes: ${check.error}`);
    return check.lacked.rows;
  }

  it(`SIGKILL of the leader node, ${runs} run(s): seconds until writes succeed through rw, acknowledged writes lost`, async () => {
    const cluster = tc!;
    const rwPort = portBase + portOffsets.routerRw;
    // the controller writes the first spec from the nodes that exist once it is the active one
    await until('active controller and spec', async () => (await cluster.dcs.readController()) !== null && (await cluster.dcs.readSpec()) !== null, 60_000);
    const spec = (await cluster.dcs.readSpec())!.value;
    await cluster.untilWritable(rwPort, ackTableSql(ackTable), 30_000);

    const results: Run[] = [];
    for (let run = 1; run <= runs; run++) {
      const before = await until('settled cluster (leader, 2 streaming replicas, a synchronous standby)', (v) => settled(v, 2), shapeBoundMs);
      const old = leaderOf(before)!;
      // one row per transaction on a fresh connection, as a web request without a pool would; a commit waiting 10 s is given up
      const writer = new Writer({
        connection: { ...appConnection('127.0.0.1', rwPort, cluster.login, 10_000), connectionTimeoutMillis: 2000 },
        mode: 'per-transaction',
        writer: 0,
        via: 'router',
        next: ackRowSteps(ackTable, run, 0),
        keepRecords: true,
        // leaves the machine's CPUs to the cluster; a refused connection fails at once, so no busy loop while nothing listens
        thinkMs: 10,
        retryMs: 60,
      });
      const acks = () => writer.records.filter((r) => r.ok);
      /** the first acknowledged commit at or after `sinceMs` from a server other than the one on `notPort` */
      const firstAckAfter = (sinceMs: number, notPort: number) => writer.records.find((r) => r.ok && r.doneMs >= sinceMs && r.serverPort !== notPort);
      writer.start();
      try {
        // the writer runs against the old leader before the kill
        const warm = Date.now() + 30_000;
        while (acks().length < 20 && Date.now() < warm) await sleep(100);
        const killedAtMs = await killNode(cluster, old.name);

        let leaderKeyAtMs: number | null = null;
        let newLeader: string | null = null;
        const writeDeadline = killedAtMs + writeBoundMs;
        while (Date.now() < writeDeadline && (leaderKeyAtMs === null || firstAckAfter(killedAtMs, old.pgPort) === undefined)) {
          if (leaderKeyAtMs === null) {
            const name = (await cluster.view().catch(() => null))?.leader?.value.name;
            if (name !== undefined && name !== old.name) {
              leaderKeyAtMs = Date.now();
              newLeader = name;
            }
          }
          await sleep(50);
        }
        const firstAck = firstAckAfter(killedAtMs, old.pgPort);
        // back to the declared shape: the dead node destroyed, its replacement streaming; the writer still runs
        await until(`replacement of ${old.name} streaming`, (v) => shapeIs(v, 2) && !v.members.some((m) => m.name === old.name), shapeBoundMs);
        const shapeSeconds = (Date.now() - killedAtMs) / 1000;
        await writer.stop();
        const now = leaderOf(await cluster.view())!;
        const leaseEnded = (await cluster.dcs.listEvents(500)).some((e) => e.kind === 'lease-ended' && e.message.includes(`leader ${old.name} `) && e.atMs >= killedAtMs);
        results.push({
          killed: old.name,
          newLeader: newLeader ?? now.name,
          leaderKeySeconds: leaderKeyAtMs === null ? null : (leaderKeyAtMs - killedAtMs) / 1000,
          leaseEnded,
          writeSeconds: firstAck === undefined ? null : (firstAck.doneMs - killedAtMs) / 1000,
          shapeSeconds,
          acks: acks().length,
          // the rows are read on the leader of now: the new one, unless another failover happened meanwhile
          lost: await lostOn(now.pgPort, acks().map((r) => r.id)),
          writerErrors: writer.connectFailures + writer.records.filter((r) => !r.ok).length,
        });
        const r = results.at(-1)!;
        console.log(`run ${run}: ${r.killed} killed -> write through rw ${seconds(r.writeSeconds)} (new leader ${r.newLeader}), ${r.lost.length} of ${r.acks} acknowledged writes lost`);
      } finally {
        await writer.stop();
      }
    }

    const rows: Cell[][] = results.map((r, i) => [
      `run ${i + 1}`,
      `${r.killed} -> ${r.newLeader ?? '?'}`,
      seconds(r.leaderKeySeconds),
      r.leaseEnded ? 'yes' : 'no (ttl)',
      r.writeSeconds === null ? `never (${writeBoundMs / 1000} s)` : seconds(r.writeSeconds),
      r.acks,
      r.lost.length,
      r.writerErrors,
      seconds(r.shapeSeconds, 1),
    ]);
    const writes = results.flatMap((r) => (r.writeSeconds === null ? [] : [r.writeSeconds]));
    const lost = results.map((r) => r.lost.length);
    rows.push(['median', '', seconds(median(results.flatMap((r) => (r.leaderKeySeconds === null ? [] : [r.leaderKeySeconds])))), '', seconds(median(writes)), '', fixed(median(lost)), '', seconds(median(results.map((r) => r.shapeSeconds)), 1)]);
    rows.push(['max', '', seconds(max(results.flatMap((r) => (r.leaderKeySeconds === null ? [] : [r.leaderKeySeconds])))), '', seconds(max(writes)), '', fixed(max(lost)), '', seconds(max(results.map((r) => r.shapeSeconds)), 1)]);
    const config = (await cluster.view()).config?.value;
    printTable(
      `failover with keel up's defaults (synchronous_mode ${config?.synchronous_mode}, ttl ${config?.ttl} s, loop_wait ${config?.loop_wait} s, controller process, replaceAfterSeconds ${spec.replaceAfterSeconds}): SIGKILL of the leader node, ${runs} run(s)`,
      ['run', 'leader', 'new leader key', 'lease ended', 'write through rw', 'acks', 'lost', 'writer errors', 'back to 3 streaming'],
      rows,
      [
        'write through rw: from the SIGKILL to the first acknowledged commit on the new leader; one row per transaction, a new connection each (connect timeout 2 s)',
        'lost: acknowledged rows missing on the new leader afterwards; lease ended: the controller fenced the dead leader and ended its lease instead of waiting for ttl',
        `machine: ${machine()} (other work shares it: figures are noisy)`,
      ],
    );

    // correctness, not speed: synchronous mode loses no acknowledged write, and a failover happens at all
    expect(results.map((r) => r.lost), 'acknowledged writes missing on the new leader, by run').toEqual(results.map(() => []));
    expect(results.filter((r) => r.writeSeconds === null).map((r) => r.killed), `runs with no write through rw within ${writeBoundMs / 1000} s`).toEqual([]);
  });
});
