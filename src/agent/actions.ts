import { connect } from 'node:net';
import type { NodeConfig } from '../config/schema.js';
import type { HistoryEntry, HistoryValue, RouterValue, StatusValue, SyncValue, Versioned } from '../model/values.js';
import type { Dcs } from '../dcs/types.js';
import type { Postgres, RuntimeState, UpstreamTarget } from '../postgres/types.js';
import type { Logger } from '../util/log.js';
import type { LeaseKeeper } from '../dcs/lease-keeper.js';
import { unreachableMarker } from './decide-follower.js';
import { Drain } from './drain.js';
import type { Action, Handover, Snapshot } from './snapshot.js';

export interface ActionContext {
  config: NodeConfig;
  dcs: Dcs;
  pg: Postgres;
  lease: LeaseKeeper;
  logger: Logger;
  now: () => number;
  /** told when PostgreSQL may accept writes (true) or surely does not (false) */
  setWritable: (writable: boolean) => void;
  /** publishes the member key at once with this reading of PostgreSQL, even while this job runs */
  publishNow?: (runtime: RuntimeState) => Promise<void>;
  /** a new replica's data from the cluster's newest backup (backup/replica.ts); false: clone from the leader */
  replicaFromBackup?: (systemId: string | null, leader: string) => Promise<boolean>;
}

class ActionFailed extends Error {}

function requireLease(ctx: ActionContext): string {
  if (ctx.lease.id === null) throw new ActionFailed('no lease');
  return ctx.lease.id;
}

/** Carries out one action. Throws when it did not succeed; the loop then keeps the old state. */
export async function runAction(action: Action, snap: Snapshot, ctx: ActionContext): Promise<void> {
  const me = ctx.config.name;
  const startOptions = (replica: boolean, upstream: UpstreamTarget | null) => ({
    replica,
    upstream,
    slotName: me,
    parameters: snap.config.postgresql_parameters,
  });
  switch (action.kind) {
    case 'grantLease':
      return ctx.lease.grant(snap.config.ttl);
    case 'moveLease': {
      // the member value last published rides along; the next put refreshes it
      const published = snap.cluster?.members.find((m) => m.name === me) ?? null;
      if (!(await ctx.lease.move(action.ttlSeconds, { name: me, member: published, leader: action.leader }))) {
        throw new ActionFailed(action.leader ? 'the leader key changed before it could move to the new lease' : 'the lease was lost before the move');
      }
      const keys = action.leader ? 'member and leader keys' : 'member key';
      return ctx.dcs.addEvent({ atMs: ctx.now(), source: me, kind: 'lease-moved', message: `${me} moved its ${keys} to a lease granted with ttl ${action.ttlSeconds} s` });
    }
    case 'claimInitialize': {
      const won = await ctx.dcs.claimInitialize({ v: 1, by: me, systemId: action.systemId });
      ctx.logger.info({ won }, 'initialize race');
      return;
    }
    case 'deleteInitialize':
      await ctx.dcs.deleteInitialize(action.expectModRevision);
      return;
    case 'bootstrap':
      return bootstrap(snap, ctx);
    case 'acquireLeader':
      if (!(await ctx.dcs.acquireLeader(me, requireLease(ctx)))) throw new ActionFailed('another member took the leader key first');
      return;
    case 'rebindLeader':
      if (!(await ctx.dcs.rebindLeader(me, requireLease(ctx), action.expectModRevision))) {
        throw new ActionFailed('the leader key changed before it could be rebound');
      }
      return;
    case 'releaseLeader':
      await ctx.dcs.releaseLeader(me, action.handover === true ? await handoverStatus(me, ctx) : undefined);
      return;
    case 'clone':
      if (await ctx.replicaFromBackup?.(snap.cluster?.initialize?.value.systemId ?? null, action.from.name)) return;
      return withReachability(action.from, () => ctx.pg.basebackup(action.from));
    case 'rewind':
      return withReachability(action.from, () => ctx.pg.rewind(action.from));
    case 'removeDataDir':
      return ctx.pg.removeDataDir();
    case 'startPostgres':
      if (!action.replica) ctx.setWritable(true);
      return ctx.pg.start(startOptions(action.replica, action.upstream));
    case 'stopPostgres':
      if (action.handover === true) return stepDown(ctx);
      await ctx.pg.stop(action.mode);
      ctx.setWritable(false);
      return;
    case 'prepareHandover':
      return prepareHandover(action, snap, ctx);
    case 'drainClients':
      return drainClients(action, snap.cluster?.switchover?.value.requestedAtMs ?? null, ctx);
    case 'promote':
      return promote(action, snap, ctx);
    case 'follow':
      return ctx.pg.follow({
        ...startOptions(true, action.upstream),
        shortRetry: action.shortRetry === true,
        ...(action.synchronousStandbyNames === undefined ? {} : { synchronousStandbyNames: action.synchronousStandbyNames }),
      });
    case 'syncSlots': {
      await ctx.pg.syncSlots(action.names);
      // others act on them (a switchover's standbys stream from its target once it holds their slots): published at once
      const runtime = await ctx.pg.runtimeState().catch(() => null);
      if (runtime !== null) await ctx.publishNow?.(runtime).catch(() => undefined);
      return;
    }
    case 'putSync':
      return putSync({ v: 1, leader: me, members: action.set.members, quorum: action.set.quorum }, ctx);
    case 'setSynchronousStandbys':
      return ctx.pg.setSynchronousStandbyNames(action.value);
    case 'clearSwitchover':
      return ctx.dcs.clearSwitchover(action.expectModRevision);
    case 'event':
      return ctx.dcs.addEvent({ atMs: ctx.now(), source: me, kind: action.eventKind, message: action.message });
  }
}

/**
 * Runs an action that copies from the upstream. When it fails and the
 * upstream does not even accept a TCP connection, the error says so, and the
 * agent retries instead of throwing its data away.
 */
async function withReachability(from: UpstreamTarget, run: () => Promise<void>): Promise<void> {
  try {
    await run();
  } catch (err) {
    if (await canConnect(from.host, from.port, 1000)) throw err;
    throw new ActionFailed(`${from.name} ${unreachableMarker} ${from.host}:${from.port}`);
  }
}

function canConnect(host: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

/** The sync key is written only while the leader key names this member on its own lease. */
async function putSync(value: SyncValue, ctx: ActionContext): Promise<void> {
  if (!(await ctx.dcs.putSync(value, requireLease(ctx)))) {
    throw new ActionFailed('the leader key no longer names me on my lease: not writing the sync key');
  }
}

/**
 * Before a planned shutdown: routers hold new connections once they see the
 * switchover key, and each says so in its `routers/<id>` key. Wait until all
 * of them hold (at most routerHoldGraceMs: a router that cannot write, or
 * none registered at all, costs that whole wait), then, bounded, for
 * statements and transactions in flight, so that clients see a pause rather
 * than an error.
 */
const routerHoldGraceMs = 250;

/** True once every router registered in etcd holds for the switchover requested at `requestedAtMs`; false with none registered. */
export function routersHolding(routers: readonly RouterValue[], requestedAtMs: number | null): boolean {
  return requestedAtMs !== null && routers.length > 0 && routers.every((r) => r.holding === requestedAtMs);
}

/**
 * A reading of the drain that finds connections in the accept queue of
 * PostgreSQL's port takes on the sessions that begin this much later: once
 * accepted they are backends still starting (drain.ts). Nothing else is taken
 * on after the first reading, which comes once every router said it holds: a
 * connection a router sent before its hold reached PostgreSQL before it said so
 * (a backend logging in, or a connection in that queue, at the first reading).
 * Taking on what began up to 60 ms after the first reading held every drain
 * 60 ms and took on sessions in 6 of 16 switchovers, each one a persistent
 * client's next transaction where looked at closely (a session idle at the
 * first reading): its client loses its connection at the shutdown either way.
 */
const queueSettleMs = 60;

/** Until every registered router holds, at most routerHoldGraceMs: whether they all did. */
async function awaitRouters(requestedAtMs: number | null, ctx: ActionContext): Promise<boolean> {
  const deadline = ctx.now() + routerHoldGraceMs;
  while (ctx.now() < deadline) {
    const routers = await ctx.dcs.readRouters().catch(() => null);
    if (routers !== null && routersHolding(routers, requestedAtMs)) return true;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return false;
}

/**
 * How long a leader handing over waits for the standbys that move to the
 * target (they need its slots first, then a reload and a new stream): a
 * standby that does not come costs this, one that does saves the re-pointing
 * after the promotion, which held the new leader's first commits 0.5-0.7 s.
 */
const cascadeWaitMs = 600;

async function awaitCascade(names: readonly string[], ctx: ActionContext): Promise<void> {
  const deadline = ctx.now() + cascadeWaitMs;
  while (names.length > 0 && ctx.now() < deadline) {
    const replicas = (await ctx.pg.runtimeState().catch(() => null))?.replicas ?? [];
    if (!replicas.some((r) => names.includes(r.applicationName))) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** A checkpoint and the cascade, side by side; how long each took (ms). */
async function checkpointAndCascade(cascade: readonly string[], ctx: ActionContext): Promise<{ checkpointMs: number; cascadeMs: number }> {
  const startedAt = ctx.now();
  const took = { checkpointMs: 0, cascadeMs: 0 };
  await Promise.all([
    awaitCascade(cascade, ctx).then(() => (took.cascadeMs = ctx.now() - startedAt)),
    // a checkpoint now leaves little for the shutdown checkpoint to write: a shorter pause
    ctx.pg
      .checkpoint()
      .catch((err: unknown) => ctx.logger.warn({ err: String(err) }, 'checkpoint before switchover failed'))
      .then(() => (took.checkpointMs = ctx.now() - startedAt)),
  ]);
  return took;
}

/**
 * A planned switchover's first step, while writes go on: the checkpoint and
 * the standbys' move to the target (each 100-300 ms on a busy 2-core machine)
 * no longer lengthen the pause. Then the request says routers hold from now.
 * A request that changed or went meanwhile fails the job: this node leads on.
 */
async function prepareHandover(action: Extract<Action, { kind: 'prepareHandover' }>, snap: Snapshot, ctx: ActionContext): Promise<void> {
  const request = snap.cluster?.switchover ?? null;
  if (request === null) throw new ActionFailed('the switchover request went before it was prepared');
  const took = await checkpointAndCascade(action.cascade, ctx);
  ctx.logger.info(took, 'switchover prepared: routers are to hold new rw connections from now');
  if (!(await ctx.dcs.holdSwitchover(request, ctx.now()))) throw new ActionFailed('the switchover request changed or went while it was prepared');
}

async function drainClients(action: Extract<Action, { kind: 'drainClients' }>, requestedAtMs: number | null, ctx: ActionContext): Promise<void> {
  const startedAt = ctx.now();
  const deadline = startedAt + action.timeoutMs;
  const took = { routersMs: 0, checkpointMs: 0, cascadeMs: 0 };
  const [routersHeld] = await Promise.all([
    awaitRouters(requestedAtMs, ctx).then((all) => ((took.routersMs = ctx.now() - startedAt), all)),
    // a failover request holds at once: what a prepared switchover did before the hold is done in it
    action.prepared ? Promise.resolve() : checkpointAndCascade(action.cascade, ctx).then((t) => Object.assign(took, t)),
  ]);
  // The work in flight at the hold: each transaction then, each session logging in and each connection waiting to
  // be accepted (drain.ts).
  const readyAt = ctx.now();
  const drain = new Drain(queueSettleMs);
  while (ctx.now() < deadline) {
    const busy = await ctx.pg.busyClients({ acceptQueue: drain.readsQueue }).catch(() => null);
    if (busy === null || drain.update(busy)) break;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  if (ctx.now() >= deadline) {
    ctx.logger.warn({ timeoutMs: action.timeoutMs, sessions: drain.pending }, 'sessions still busy after the drain period: shutting down anyway');
    return;
  }
  ctx.logger.info({ routersHeld, ...took, drainMs: ctx.now() - readyAt, sessions: drain.waitedFor, lateSessions: drain.lateSessions, lateByMs: Math.round(drain.lateByMs), notAccepted: drain.notAccepted }, 'switchover drain done');
}

/**
 * The reading a promotion records its switch point from. A failover's reads
 * again: WAL may have come since the snapshot. A switchover's target waits
 * until it has replayed past the start of the old leader's shutdown
 * checkpoint. Replayed, not only received: the replay position is the end of
 * the last whole record, so past that start means the record is here in full
 * and the new timeline forks after it (the old leader then follows without a
 * rewind). No WAL can follow that record, so the first reading past it, the
 * snapshot's most often, is final, and no other is taken in the pause.
 * answered: PostgreSQL answered the reading in this loop (a failover's fresh one can fail, and the snapshot's stands in).
 */
async function promotionReading(handover: Handover | undefined, snap: Snapshot, ctx: ActionContext): Promise<{ runtime: RuntimeState | null; answered: boolean }> {
  if (handover === undefined) {
    const fresh = await ctx.pg.runtimeState().catch(() => null);
    return fresh === null ? { runtime: snap.pg.runtime, answered: false } : { runtime: fresh, answered: true };
  }
  if ((snap.pg.runtime?.replayedLsn ?? 0) > handover.afterLsn) return { runtime: snap.pg.runtime, answered: true };
  const deadline = ctx.now() + handover.timeoutMs;
  for (;;) {
    const reading = await ctx.pg.runtimeState().catch(() => null);
    const replayed = reading?.replayedLsn ?? 0;
    if (replayed > handover.afterLsn) return { runtime: reading, answered: true };
    if (ctx.now() >= deadline) throw new ActionFailed(`replayed WAL up to ${replayed} only, not past the old leader's shutdown checkpoint at ${handover.afterLsn}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/**
 * A leader handing over stops as soon as its shutdown checkpoint is written
 * (no WAL can follow it), not when the postmaster is gone: that may wait for
 * the archiver, and the new leader archives what is left.
 */
async function stepDown(ctx: ActionContext): Promise<void> {
  await ctx.pg.stop('fast', { untilCheckpointed: true });
  ctx.setWritable(false);
}

/**
 * Where the shutdown checkpoint starts, for the status key: the candidate
 * waits to have replayed past it. Written in the transaction that releases
 * the leader key (one etcd round trip in the pause, and no view in which the
 * key is gone but the status is older). Nothing when PostgreSQL did not shut
 * down cleanly.
 */
async function handoverStatus(me: string, ctx: ActionContext): Promise<StatusValue | undefined> {
  const control = await ctx.pg.controlData();
  if (control?.clusterState !== 'shut down') return undefined;
  const lsn = control.checkpointLsn;
  ctx.logger.info({ timeline: control.timeline, shutdownCheckpointLsn: lsn }, 'shut down to hand over');
  return { v: 1, leader: me, timeline: control.timeline, walLsn: lsn, updatedAtMs: ctx.now(), shutdownCheckpointLsn: lsn };
}

/**
 * The entry written before the promotion holds the WAL position read then; PostgreSQL switches at the end of
 * what it has replayed when promoted, later when WAL still came in meanwhile (the old leader's last records, as
 * it shuts down). A node that rejoins compares its WAL end with the entry: one ending between the two was told
 * to rewind, and pg_rewind, which reads the real point, found nothing to do, again and again. The newest entry
 * of a timeline counts: the exact point goes in after the first.
 */
async function recordExactSwitch(timeline: number, recordedLsn: number, reason: string, ctx: ActionContext): Promise<void> {
  const exact = await ctx.pg.switchPoint(timeline).catch(() => null);
  if (exact === null || exact === recordedLsn) return;
  ctx.logger.info({ timeline, recordedLsn, exact }, 'recording where PostgreSQL switched timelines');
  await ctx.dcs
    .appendHistory({ timeline, switchLsn: exact, leader: ctx.config.name, atMs: ctx.now(), reason })
    .catch((err: unknown) => ctx.logger.warn({ err: String(err) }, 'could not record the exact switch point'));
}

async function bootstrap(snap: Snapshot, ctx: ActionContext): Promise<void> {
  const init = snap.cluster?.initialize;
  if (!init) throw new ActionFailed('initialize key vanished');
  await ctx.pg.initdb();
  ctx.setWritable(true);
  await ctx.pg.start({ replica: false, upstream: null, slotName: ctx.config.name, parameters: snap.config.postgresql_parameters });
  await ctx.pg.createClusterObjects();
  const control = await ctx.pg.controlData();
  if (control === null) throw new ActionFailed('pg_controldata gave nothing after initdb');
  if (snap.cluster?.config === null) await ctx.dcs.putConfig(snap.config, null);
  if (!(await ctx.dcs.updateInitialize({ v: 1, by: ctx.config.name, systemId: control.systemId }, init.modRevision))) {
    throw new ActionFailed('the initialize key changed during bootstrap');
  }
  ctx.logger.info({ systemId: control.systemId }, 'cluster bootstrapped');
}

/** A promotion's history entry and sync key, by a node that holds the leader key: two transactions at once. */
async function record(entry: HistoryEntry, sync: SyncValue | null, known: Versioned<HistoryValue> | null | undefined, ctx: ActionContext): Promise<void> {
  await Promise.all([ctx.dcs.appendHistory(entry, known), sync !== null && putSync(sync, ctx)]);
}

/**
 * The leader key with them, and the end of the switchover request it carries
 * out, in one transaction (one etcd round trip less in the pause, and one
 * write less waking every watcher while held clients log in); when the
 * history changed since the snapshot, the key first and then the two as
 * above. True: the request went with the key.
 */
async function takeAndRecord(entry: HistoryEntry, sync: SyncValue | null, known: Versioned<HistoryValue> | null, endsSwitchover: boolean, ctx: ActionContext): Promise<boolean> {
  const outcome = await ctx.dcs.takeLeaderToPromote({ name: ctx.config.name, leaseId: requireLease(ctx), entry, known, sync, endsSwitchover });
  if (outcome === 'taken') return endsSwitchover;
  if (outcome === 'leader-taken' || !(await ctx.dcs.acquireLeader(ctx.config.name, requireLease(ctx)))) throw new ActionFailed('another member took the leader key first');
  await record(entry, sync, undefined, ctx);
  return false;
}

async function promote(action: Extract<Action, { kind: 'promote' }>, snap: Snapshot, ctx: ActionContext): Promise<void> {
  const reason = action.reason;
  const { runtime, answered } = await promotionReading(action.handover, snap, ctx);
  if (runtime === null) throw new ActionFailed('PostgreSQL is not running');
  // Recorded before promoting: a node that rejoins compares its WAL end with this point (safety rule 4).
  // PostgreSQL picks one past the newest timeline it knows of, which a standby that stopped streaming
  // may know from a history file while its own reported timeline still lags.
  // Nor may it take a timeline another node already started (a promotion this node never streamed, e.g.
  // while the cluster was stopped): two histories under one number make pg_rewind and streaming go wrong.
  const recorded = snap.cluster?.history?.value.entries ?? [];
  const own = Math.max(runtime.timeline, await ctx.pg.newestTimeline(snap.pg.control?.timeline).catch(() => runtime.timeline));
  const nextTimeline = Math.max(own, ...recorded.map((e) => e.timeline)) + 1;
  if (nextTimeline > own + 1) await ctx.pg.reserveTimelines(nextTimeline, recorded);
  const switchLsn = Math.max(runtime.receivedLsn ?? 0, runtime.replayedLsn ?? 0);
  ctx.logger.info({ timeline: nextTimeline, switchLsn, receivedLsn: runtime.receivedLsn, replayedLsn: runtime.replayedLsn }, 'promoting: history entry');
  const sync = action.sync;
  const entry: HistoryEntry = { timeline: nextTimeline, switchLsn, leader: ctx.config.name, atMs: ctx.now(), reason };
  const syncValue: SyncValue | null = sync === null ? null : { v: 1, leader: ctx.config.name, ...sync.key };
  // the snapshot's copy of the history: one round trip, not a read and a write, unless it changed since
  const known = snap.cluster === null ? undefined : snap.cluster.history;
  const switchover = snap.cluster?.switchover ?? null;
  let switchoverEnded = false;
  const taken = action.acquire === true ? takeAndRecord(entry, syncValue, known ?? null, switchover !== null, ctx).then((ended) => void (switchoverEnded = ended)) : record(entry, syncValue, known, ctx);
  const recordedInEtcd = taken.then(() => ctx.setWritable(true));
  // promote() waits for it; one that fails before must not leave its failure unhandled
  recordedInEtcd.catch(() => undefined);
  // in synchronous mode the new primary names its standbys before it can take a single write
  const standbyNames = sync === null ? {} : { synchronousStandbyNames: sync.standbyNames };
  // a reading of this loop saw it in recovery, and only this agent promotes it: no query to ask again
  const seenInRecovery = answered && runtime.inRecovery ? { inRecovery: true as const } : {};
  await ctx.pg.promote({ ...standbyNames, streamOnly: action.handover !== undefined, recorded: recordedInEtcd, ...seenInRecovery });
  // A replica that had stopped streaming reports its last restartpoint's timeline, which may lag:
  // the promoted primary's own timeline is exact, and the newest history entry wins.
  const promoted = await ctx.pg.runtimeState().catch(() => null);
  if (promoted !== null && !promoted.inRecovery && promoted.timeline !== nextTimeline) {
    await ctx.dcs.appendHistory({ timeline: promoted.timeline, switchLsn, leader: ctx.config.name, atMs: ctx.now(), reason });
  }
  // Routers follow the member key: it says primary now (its timeline has its history entry), from the reading just
  // taken, not after the rest of this job and a loop's reading of etcd and PostgreSQL (100-200 ms of the pause).
  if (promoted !== null && !promoted.inRecovery) await ctx.publishNow?.(promoted).catch(() => undefined);
  if (promoted !== null && !promoted.inRecovery) await recordExactSwitch(promoted.timeline, switchLsn, reason, ctx);
  if (switchover !== null && !switchoverEnded) await ctx.dcs.clearSwitchover();
  await ctx.dcs.addEvent({ atMs: ctx.now(), source: ctx.config.name, kind: 'promoted', message: `${ctx.config.name} promoted: ${reason}` });
}
