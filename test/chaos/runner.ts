/**
 * One fault run: workload on, fault in, wait for the cluster to heal, workload
 * off, then check every acknowledged write against the final leader and each
 * replica once caught up. Returns a record; judging it is the suite's job.
 */
import type { ClusterView } from '../../src/model/values.js';
import { parseLsn } from '../../src/model/lsn.js';
import { isReady } from '../../src/supervisor/local-cluster.js';
import { netnsPgPort } from '../../src/providers/netns.js';
import { sleep } from '../../src/util/clock.js';
import { missingIds, presentIds, presentRowsSql } from '../../src/workload/acks.js';
import type { MemberNote, Observer } from '../../src/workload/observer.js';
import type { ClientKind, LeaderSample, WriteRecord } from '../../src/workload/records.js';
import { classifyWrites, forkedAcks, longestGapMs, oldPrimaryStopMargin, tenures, type StopMargin } from '../../src/workload/split-brain.js';
import type { ChaosCluster } from './cluster.js';
import type { Fault, FaultContext, FaultOutcome } from './faults.js';
import type { Rng } from './plan.js';
import { tableName, Workload } from './workload.js';

/** A fault not healed this long after it ended is a failure. */
export const healBudgetMs = 30_000;
/** How long a repaired cluster may take to heal. */
const repairTimeoutMs = 90_000;
const catchUpTimeoutMs = 20_000;

export interface RunResult {
  mode: string;
  fault: string;
  run: number;
  target: string | null;
  details: Record<string, unknown>;
  leaderBefore: string | null;
  leaderAfter: string | null;
  startedAt: string;
  faultSeconds: number | null;
  /** seconds from the end of the fault until every member streamed again; null when not within the budget */
  healSeconds: number | null;
  healed: boolean;
  writes: {
    attempted: number;
    acked: number;
    failed: number;
    /** acknowledged but absent from the final leader */
    lost: number;
    lostIds: number[];
    splitBrain: number;
    splitBrainSamples: WriteRecord[];
    /** answered after the leader's tenure ended although the statement ran within it (not proven violations) */
    lateAcks: number;
    /** acknowledged past the point where a later timeline forked off */
    forked: number;
    /** acknowledged and on the leader, but missing on a caught-up replica */
    missingOnReplicas: Record<string, number>;
    /** acknowledged with a notice attached (e.g. a cancelled synchronous-replication wait) */
    ackedWithNotice: number;
    /** acknowledged by an address that is no node */
    unknownServer: number;
    /** the same figures by the way the client came: through the router or straight to a node */
    byClient: Record<ClientKind, ClientFigures>;
  };
  /** did the leader before the fault stop acknowledging writes before another member led? null when none did */
  oldPrimary: StopMargin | null;
  /** longest stretch without a write acknowledged through the router, from the fault's start */
  unavailabilitySeconds: number;
  roUnavailabilitySeconds: number;
  /** acknowledged writes per 500 ms, from 2 s before the fault to the end of the workload (to see a stall at a glance) */
  ackTimeline: { fromMs: number; bucketMs: number; counts: number[] };
  reads: { ok: number; failed: number };
  /** replicas that did not catch up with the leader in time for the check */
  notCaughtUp: string[];
  notes: string[];
  memberNotes: MemberNote[];
  /** the leader samples of the run's window, to audit the split-brain verdicts */
  leaderSamples: LeaderSample[];
  error: string | null;
}

export interface ClientFigures {
  attempted: number;
  acked: number;
  lost: number;
  splitBrain: number;
}

const noFigures = (): ClientFigures => ({ attempted: 0, acked: 0, lost: 0, splitBrain: 0 });

/** Every member streams from a running leader, each having published after `sinceMs`. */
export function healthySince(view: ClusterView, nodes: number, sinceMs: number): boolean {
  return isReady(view, nodes) && view.members.length === nodes && view.members.every((m) => m.updatedAtMs > sinceMs);
}

export interface RunContext {
  cluster: ChaosCluster;
  observer: Observer;
  rng: Rng;
  mode: string;
  ttlMs: number;
}

export async function runFault(ctx: RunContext, fault: Fault, run: number): Promise<RunResult> {
  const { cluster, observer } = ctx;
  const nodes = cluster.names.length;
  const result: RunResult = {
    mode: ctx.mode, fault: fault.id, run, target: null, details: {}, leaderBefore: null, leaderAfter: null,
    startedAt: new Date().toISOString(), faultSeconds: null, healSeconds: null, healed: false,
    writes: {
      attempted: 0, acked: 0, failed: 0, lost: 0, lostIds: [], splitBrain: 0, splitBrainSamples: [], lateAcks: 0, forked: 0, missingOnReplicas: {}, ackedWithNotice: 0, unknownServer: 0,
      byClient: { router: noFigures(), direct: noFigures() },
    },
    oldPrimary: null, unavailabilitySeconds: 0, roUnavailabilitySeconds: 0, ackTimeline: { fromMs: 0, bucketMs: 500, counts: [] }, reads: { ok: 0, failed: 0 }, notCaughtUp: [], notes: [], memberNotes: [], leaderSamples: [], error: null,
  };
  const ready = await observer.waitFor((view) => isReady(view, nodes), 90_000);
  if (ready === null) {
    result.error = 'the cluster was not healthy before the fault';
    return result;
  }
  result.leaderBefore = ready.view.leader?.value.name ?? null;
  const exitsBefore = cluster.provider.exits.length;
  const direct = (node: string) => ({ node, host: cluster.provider.address(node), port: netnsPgPort });
  const workload = new Workload({
    rw: { host: '127.0.0.1', port: cluster.rwPort },
    ro: { host: '127.0.0.1', port: cluster.roPort },
    login: cluster.login,
    run,
    persistentWriters: 2,
    perTransactionWriters: 2,
    readers: 2,
    directNodes: cluster.names.map(direct),
    directLeader: result.leaderBefore === null ? null : direct(result.leaderBefore),
    directPerTransactionWriters: 2,
    thinkMs: 20,
  });
  workload.start();
  let outcome: FaultOutcome | null = null;
  let workloadStopMs = 0;
  try {
    await sleep(ctx.rng.between(500, 1500));
    const faultCtx: FaultContext = { cluster, observer, rng: ctx.rng, ttlMs: ctx.ttlMs };
    outcome = await fault.inject(faultCtx);
    result.target = outcome.target;
    result.details = outcome.details;
    result.faultSeconds = (outcome.endMs - outcome.startMs) / 1000;
    const endMs = outcome.endMs;
    const healed = await observer.waitFor((view) => healthySince(view, nodes, endMs), Math.max(0, endMs + healBudgetMs - Date.now()));
    if (healed !== null) {
      result.healed = true;
      result.healSeconds = (healed.atMs - endMs) / 1000;
    } else {
      result.notes.push(`not healed ${healBudgetMs / 1000} s after the fault; ${await repair(ctx)}`);
    }
    // writes go on a little after healing, so the unavailability window closes
    await sleep(1000);
  } catch (err) {
    result.error = `fault injection failed: ${(err as Error).stack ?? String(err)}`;
  } finally {
    workloadStopMs = Date.now();
    await workload.stop();
  }
  result.leaderSamples = observer.samples.filter((x) => x.atMs >= (outcome?.startMs ?? workloadStopMs) - 5000 && x.atMs <= workloadStopMs);
  result.memberNotes = observer.memberNotes.filter((n) => n.atMs >= (outcome?.startMs ?? workloadStopMs) - 1000 && n.atMs <= workloadStopMs);
  for (const exit of cluster.provider.exits.slice(exitsBefore)) {
    if (!exit.expected) result.notes.push(`agent of ${exit.node} (pid ${exit.pid}) exited by itself: code ${exit.code}, signal ${exit.signal}`);
  }
  if (!cluster.routerAlive()) result.notes.push('the router process is gone');
  await check(ctx, result, workload, outcome, workloadStopMs);
  return result;
}

/**
 * What an operator would do so the next runs mean something: re-clone every
 * replica that does not stream from the leader. Says what it did.
 */
async function repair(ctx: RunContext): Promise<string> {
  const { cluster, observer } = ctx;
  const view = observer.latest;
  const leader = view?.leader?.value.name ?? null;
  if (view === null || leader === null || !view.members.some((m) => m.name === leader && m.role === 'primary')) {
    return 'no running leader: nothing to repair from';
  }
  const stuck = cluster.names.filter((name) => {
    if (name === leader) return false;
    const m = view.members.find((x) => x.name === name);
    return m === undefined || !(m.role === 'replica' && m.streaming && m.upstream === leader);
  });
  for (const name of stuck) {
    await cluster.provider.kill(name);
    await cluster.provider.removeData(name);
    await cluster.provider.start(name);
  }
  const since = Date.now();
  const healed = await observer.waitFor((v) => healthySince(v, cluster.names.length, since), repairTimeoutMs);
  return `repaired by re-cloning ${stuck.join(', ') || 'nothing'}: ${healed === null ? 'still not healthy' : 'healthy again'}`;
}

async function check(ctx: RunContext, result: RunResult, workload: Workload, outcome: FaultOutcome | null, workloadStopMs: number): Promise<void> {
  const { cluster, observer } = ctx;
  const acked = workload.acked();
  // availability is what an application behind the router sees; direct writers may reach a replica or a fenced node
  const routerAcked = workload.acked('router');
  const w = result.writes;
  w.attempted = workload.writes.length;
  w.acked = acked.length;
  w.failed = w.attempted - w.acked;
  w.ackedWithNotice = acked.filter((x) => x.notice !== undefined).length;
  for (const x of workload.writes) {
    const figures = w.byClient[x.via];
    figures.attempted += 1;
    if (x.ok) figures.acked += 1;
  }
  result.reads = { ok: workload.reads.ok, failed: workload.reads.failed };
  const fromMs = outcome?.startMs ?? workloadStopMs;
  result.unavailabilitySeconds = longestGapMs(routerAcked.map((x) => x.doneMs), fromMs, workloadStopMs) / 1000;
  result.roUnavailabilitySeconds = longestGapMs(workload.reads.okTimesMs, fromMs, workloadStopMs) / 1000;
  const timeline = result.ackTimeline;
  timeline.fromMs = fromMs - 2000;
  timeline.counts = new Array<number>(Math.max(0, Math.ceil((workloadStopMs - timeline.fromMs) / timeline.bucketMs))).fill(0);
  for (const x of routerAcked) {
    const bucket = Math.floor((x.doneMs - timeline.fromMs) / timeline.bucketMs);
    if (bucket >= 0 && bucket < timeline.counts.length) timeline.counts[bucket] = (timeline.counts[bucket] ?? 0) + 1;
  }

  const history = observer.latest?.history?.value.entries ?? [];
  const allTenures = tenures(observer.samples, history);
  const verdicts = classifyWrites(workload.writes, allTenures, cluster.nodeOfAddress);
  w.splitBrain = verdicts.splitBrain.length;
  for (const x of verdicts.splitBrain) w.byClient[x.via].splitBrain += 1;
  if (result.leaderBefore !== null) result.oldPrimary = oldPrimaryStopMargin(workload.writes, allTenures, result.leaderBefore, fromMs, cluster.nodeOfAddress);
  w.splitBrainSamples = verdicts.splitBrain.slice(0, 10);
  w.lateAcks = verdicts.lateAcks.length;
  w.unknownServer = verdicts.unknownServer.length;
  w.forked = forkedAcks(acked, history, parseLsn).length;

  const view = observer.latest;
  const leader = view?.leader?.value.name ?? null;
  result.leaderAfter = leader;
  if (view === null || leader === null) {
    result.error ??= 'no leader after the fault: acknowledged writes could not be checked';
    return;
  }
  try {
    const [{ lsn }] = (await cluster.query<{ lsn: string }>(leader, 'SELECT pg_current_wal_lsn()::text AS lsn')) as [{ lsn: string }];
    const idsOn = (node: string, writes: WriteRecord[]) =>
      presentIds((sql, params) => cluster.query<{ id: string }>(node, sql, params), writes.map((x) => x.id), presentRowsSql(tableName));
    const onLeader = await idsOn(leader, acked);
    const lost = missingIds(acked, onLeader);
    w.lost = lost.length;
    for (const kind of ['router', 'direct'] as const) w.byClient[kind].lost = missingIds(workload.acked(kind), onLeader).length;
    w.lostIds = lost.slice(0, 20);
    const keptByLeader = acked.filter((x) => onLeader.has(x.id));
    for (const replica of cluster.names.filter((n) => n !== leader)) {
      if (!(await caughtUp(cluster, replica, lsn))) {
        result.notCaughtUp.push(replica);
        continue;
      }
      const missing = missingIds(keptByLeader, await idsOn(replica, keptByLeader));
      if (missing.length > 0) w.missingOnReplicas[replica] = missing.length;
    }
  } catch (err) {
    result.error ??= `checking the writes failed: ${(err as Error).message}`;
  }
}

async function caughtUp(cluster: ChaosCluster, replica: string, leaderLsn: string): Promise<boolean> {
  const deadline = Date.now() + catchUpTimeoutMs;
  while (Date.now() < deadline) {
    try {
      const [row] = await cluster.query<{ done: boolean }>(replica, 'SELECT coalesce(pg_last_wal_replay_lsn() >= $1::pg_lsn, false) AS done', [leaderLsn]);
      if (row?.done) return true;
    } catch {
      // restarting or not yet accepting connections
    }
    await sleep(200);
  }
  return false;
}
