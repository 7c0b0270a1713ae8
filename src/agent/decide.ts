/**
 * The agent's brain: one pure function from a snapshot to the next actions and
 * the sentence that explains them. No I/O here (DESIGN.md, Layout).
 */
import { switchoverHolds, type ClusterView, type MemberValue } from '../model/values.js';
import { leaseDeadlineMs } from '../model/lease.js';
import { promotionVerdict } from '../model/promotion.js';
import { recentlyGone, remember, type AgentMemory } from './memory.js';
import { nextSyncStep, promotionSyncSet } from './sync.js';
import { memberLsn } from '../model/lsn.js';
import type { Action, Decision, Handover, Snapshot } from './snapshot.js';
import { leaseStale, moveToNewTtl, primaryControlStates, startReplica, stay, switchoverWaitSeconds } from './decide-common.js';
import { decideAsFollower, mayStreamFromTarget } from './decide-follower.js';

/** Seconds a switching-over leader waits for statements in flight before it shuts down. */
export const switchoverDrainSeconds = 5;
/** how long a switchover's target waits for the old leader's last WAL before it gives up this try */
const handoverWaitMs = 10_000;

/** A decision with the memory the next one starts from. */
export type DecisionWithMemory = Decision & { memory: AgentMemory };

export function decide(snapshot: Snapshot): DecisionWithMemory {
  const memory = nextMemory(snapshot);
  const s = { ...snapshot, memory };
  return { ...waitForGuard(s, decideUnguarded(s)), memory };
}

/** The memory after this snapshot's observation (also kept up while a job runs and nothing is decided). */
export function nextMemory(s: Snapshot): AgentMemory {
  return remember({ nowMs: s.nowMs, memory: s.memory, cluster: s.cluster, runtime: s.pg.runtime, memberSlotsTtlSeconds: s.config.member_slots_ttl, lastJob: s.lastJob });
}

/**
 * With a fencing guard configured, nothing makes this node writable while the
 * agent has no live connection to it: a primary started then could outlive a
 * frozen or dead agent. Everything else (replicas, stops) goes on.
 */
function waitForGuard(s: Snapshot, decision: Decision): Decision {
  if (s.guard !== 'disconnected') return decision;
  const makesWritable = decision.actions.some(
    (a) => a.kind === 'acquireLeader' || a.kind === 'rebindLeader' || a.kind === 'promote' || a.kind === 'bootstrap' || (a.kind === 'startPostgres' && !a.replica),
  );
  if (!makesWritable) return decision;
  return stay(s, `waiting for the fencing guard (no live connection to it) before I act on: ${decision.reason}`);
}

function decideUnguarded(s: Snapshot): Decision {
  if (s.state === 'failed') {
    const systemId = s.cluster?.initialize?.value.systemId;
    const mine = s.pg.control?.systemId;
    return stay(s, systemId && mine ? foreignDataReason(mine, systemId) : 'refusing to join: the data directory belongs to another cluster');
  }
  const runtime = s.pg.runtime;
  const runningPrimary = runtime !== null && !runtime.inRecovery;
  // the lease's own granted ttl rules, never the config's (a changed ttl applies once the keys moved)
  const leaseDeadlinePassed = s.nowMs >= leaseDeadlineMs(s.lease);

  if (runningPrimary && s.lease !== null && leaseDeadlinePassed) {
    // Safety rule 1: a lease that was not renewed in time may already belong to nobody.
    return {
      to: 'stopped',
      reason: 'the leader lease was not renewed in time: stopping PostgreSQL at once',
      actions: [{ kind: 'stopPostgres', mode: 'immediate' }],
    };
  }

  if (s.cluster === null) {
    // Safety rule 1: without etcd the lease cannot be renewed; stop writes before it can expire.
    if (runningPrimary && leaseDeadlinePassed) {
      return {
        to: 'replica',
        reason: 'cannot reach etcd and the leader lease is about to expire: demoting to a read-only replica',
        actions: [
          { kind: 'stopPostgres', mode: 'immediate' },
          { kind: 'startPostgres', replica: true, upstream: null },
        ],
      };
    }
    if (runningPrimary) return stay(s, 'cannot reach etcd; the leader lease is still valid: keeping the primary');
    if (runtime === null && s.pg.postmasterPid === null && s.pg.dataDir === 'present' && s.state !== 'starting') {
      return { to: 'replica', reason: 'cannot reach etcd: starting PostgreSQL read-only', actions: [startReplica(null)] };
    }
    return stay(s, 'cannot reach etcd: waiting for it before acting');
  }

  const cluster = s.cluster;
  if (s.lease === null || s.lease.id === null) return stay(s, 'no lease: asking etcd for one', [{ kind: 'grantLease' }]);

  const init = cluster.initialize;
  if (init === null) return decideUninitialized(s, cluster);
  if (init.value.systemId === null) return decideBootstrapping(s, cluster);

  const control = s.pg.control;
  if (control !== null && control.systemId !== init.value.systemId) {
    return {
      to: 'failed',
      reason: foreignDataReason(control.systemId, init.value.systemId),
      actions: [{ kind: 'event', eventKind: 'foreign-data-dir', message: `${s.me.name} refuses a data directory of another cluster` }],
    };
  }

  const leader = cluster.leader;
  if (leader !== null && leader.value.name === s.me.name) return decideAsLeader(s, cluster);
  if (leader !== null) return decideAsFollower(s, cluster, leader.value.name);
  return decideWithoutLeader(s, cluster);
}

function foreignDataReason(mine: string, cluster: string): string {
  return `the data directory holds system ${mine} but the cluster is ${cluster}: refusing to join and touching nothing`;
}

function decideUninitialized(s: Snapshot, cluster: ClusterView): Decision {
  if (s.pg.control !== null && cluster.leader === null) {
    // etcd lost its data but this node still has a cluster: publish it rather than start a new one.
    return stay(s, `cluster not initialized in etcd: claiming it for my data (system ${s.pg.control.systemId})`, [
      { kind: 'claimInitialize', systemId: s.pg.control.systemId },
    ]);
  }
  if (s.pg.dataDir === 'present') return stay(s, 'cluster not initialized and my data directory is unreadable: waiting');
  return stay(s, 'cluster not initialized: racing to bootstrap it', [{ kind: 'claimInitialize', systemId: null }]);
}

function decideBootstrapping(s: Snapshot, cluster: ClusterView): Decision {
  const init = cluster.initialize!;
  if (init.value.by !== s.me.name) return stay(s, `waiting for ${init.value.by} to bootstrap the cluster`);
  const failed = s.lastJob?.kind === 'bootstrap' && !s.lastJob.ok;
  const leftovers = s.pg.dataDir === 'present' || s.pg.dataDir === 'incomplete';
  if (failed || (leftovers && s.state !== 'bootstrapping')) {
    // An unfinished initdb never acknowledged a write: clearing it loses nothing.
    const actions: Action[] = [{ kind: 'stopPostgres', mode: 'immediate' }, { kind: 'removeDataDir' }];
    if (cluster.leader?.value.name === s.me.name) actions.push({ kind: 'releaseLeader' });
    actions.push({ kind: 'deleteInitialize', expectModRevision: init.modRevision });
    return { to: 'stopped', reason: `bootstrap did not finish${failed ? ` (${s.lastJob!.error})` : ''}: giving the race back`, actions };
  }
  if (cluster.leader === null) return stay(s, 'won the initialize race: taking the leader key', [{ kind: 'acquireLeader' }]);
  if (cluster.leader.value.name !== s.me.name) return stay(s, `won the initialize race but ${cluster.leader.value.name} leads: waiting`);
  return { to: 'bootstrapping', reason: 'won the initialize race and hold the leader key: bootstrapping the cluster', actions: [{ kind: 'bootstrap' }] };
}

function decideAsLeader(s: Snapshot, cluster: ClusterView): Decision {
  const leader = cluster.leader!;
  const runtime = s.pg.runtime;
  if (leaseStale(s) && (runtime === null || runtime.inRecovery)) {
    // Safety rule 1: never start or promote a primary on a lease that may already have expired.
    return stay(s, 'the leader key names me but my lease was not renewed in time: not starting a primary');
  }
  if (s.lease?.moving !== undefined && leader.leaseId === s.lease.moving.id) {
    // a move whose answer was lost did commit: the same move again confirms it
    return stay(s, 'the leader key is bound to the lease my keys were being moved to: settling the move', [
      { kind: 'moveLease', ttlSeconds: s.lease.moving.ttlSeconds, leader: true },
    ]);
  }
  if (leader.leaseId !== s.lease?.id) {
    return stay(s, 'the leader key names me but is bound to an older lease: rebinding it to mine', [
      { kind: 'rebindLeader', expectModRevision: leader.modRevision },
    ]);
  }
  if (runtime !== null && runtime.inRecovery) {
    return { to: 'primary', reason: 'I hold the leader key: promoting', actions: [promoteAction(s, cluster, 'took the leader key')] };
  }
  if (runtime === null) {
    if (s.pg.postmasterPid !== null) return stay(s, 'I hold the leader key; PostgreSQL is starting or recovering: waiting');
    if (s.pg.dataDir !== 'present' || s.pg.control === null) {
      return { to: 'stopped', reason: 'I hold the leader key but have no data: releasing it', actions: [{ kind: 'releaseLeader' }] };
    }
    const wasPrimary = primaryControlStates.has(s.pg.control.clusterState) && !s.pg.control.backupLabel;
    return {
      to: 'primary',
      reason: wasPrimary ? 'I hold the leader key: starting PostgreSQL as primary' : 'I hold the leader key: starting as replica to promote',
      actions: [{ kind: 'startPostgres', replica: !wasPrimary, upstream: null }],
    };
  }
  const switchover = cluster.switchover;
  if (switchover !== null && (switchover.value.from === null || switchover.value.from === s.me.name)) {
    return decideSwitchover(s, cluster, switchover.value.to, switchover.modRevision);
  }
  const present = cluster.members.filter((m) => m.name !== s.me.name).map((m) => m.name);
  // a slot of a member that went away only recently stays; it is never created for one
  const kept = recentlyGone(s.memory, cluster).filter((name) => name !== s.me.name && runtime.slots.includes(name));
  const others = [...new Set([...present, ...kept])].sort();
  const missing = others.filter((name) => !runtime.slots.includes(name));
  const surplus = runtime.slots.filter((name) => !others.includes(name));
  const actions: Action[] = missing.length > 0 || surplus.length > 0 ? [{ kind: 'syncSlots', names: others }] : [];
  actions.push(...nextSyncStep(s.config, cluster, runtime, s.me.name, s.nowMs, s.memory.syncBarrier));
  const streaming = runtime.replicas.filter((r) => r.state === 'streaming').length;
  const sync = cluster.sync?.value;
  const syncNote = s.config.synchronous_mode === 'off' ? '' : sync && sync.members.length > 0 ? `, synchronous: ANY ${sync.quorum} of ${sync.members.join(', ')}` : ', no synchronous standby';
  const steady = `I am the leader with the lease; ${streaming} replica(s) streaming${syncNote}`;
  const move = actions.length === 0 ? moveToNewTtl(s, true, steady) : null;
  return move ?? { to: 'primary', reason: steady, actions };
}

/**
 * The standbys that move to a switchover's target before it is promoted
 * (decide-follower.ts): the new leader then has them the moment it is
 * promoted, where a standby still on the old leader re-points after the
 * promotion and the new leader's first synchronous commit waits for it.
 */
function cascadingStandbys(s: Snapshot, cluster: ClusterView, target: string): string[] {
  return cluster.members
    .filter((m) => m.name !== s.me.name && m.name !== target && m.role === 'replica' && m.running && m.streaming)
    .filter((m) => mayStreamFromTarget(s.config.synchronous_mode, cluster.sync?.value, m.name, target))
    .map((m) => m.name);
}

function decideSwitchover(s: Snapshot, cluster: ClusterView, to: string | null, modRevision: string): Decision {
  const myLsn = s.pg.runtime?.walLsn ?? 0;
  const candidates = cluster.members.filter((m) => m.name !== s.me.name && (to === null || m.name === to));
  let refusal = to !== null && candidates.length === 0 ? `${to} is not a member` : 'no replica is eligible';
  for (const candidate of candidates.sort((a, b) => memberLsn(b) - memberLsn(a))) {
    const lagBytes = myLsn - memberLsn(candidate);
    const verdict = promotionVerdict(candidate, cluster, s.config, s.nowMs, { ignoreOthers: true, handover: true });
    if (!verdict.ok) refusal = verdict.why;
    else if (!candidate.streaming) refusal = `${candidate.name} is not streaming`;
    else if (lagBytes > s.config.maximum_lag_on_failover) refusal = `${candidate.name} lags ${lagBytes} bytes`;
    else {
      const cascade = cascadingStandbys(s, cluster, candidate.name);
      // routers hold once the request says so: a planned switchover is prepared first, while writes go on
      const holding = cluster.switchover === null || switchoverHolds(cluster.switchover.value);
      return {
        to: 'stopped',
        reason: `switchover to ${candidate.name}: shutting down cleanly and releasing the leader key`,
        actions: [
          ...(holding ? [] : [{ kind: 'prepareHandover', cascade } as const]),
          { kind: 'drainClients', timeoutMs: switchoverDrainSeconds * 1000, prepared: !holding, cascade: holding ? cascade : [] },
          // A fast shutdown sends every WAL record, the shutdown checkpoint included, to connected replicas first.
          { kind: 'stopPostgres', mode: 'fast', handover: true },
          { kind: 'releaseLeader', handover: true },
          { kind: 'event', eventKind: 'switchover', message: `${s.me.name} stepped down for ${candidate.name}` },
        ],
      };
    }
  }
  return stay(s, `switchover refused: ${refusal}`, [
    { kind: 'clearSwitchover', expectModRevision: modRevision },
    { kind: 'event', eventKind: 'switchover-refused', message: refusal },
  ]);
}

function decideWithoutLeader(s: Snapshot, cluster: ClusterView): Decision {
  const runtime = s.pg.runtime;
  const switchover = cluster.switchover;
  const pendingTarget =
    switchover !== null && switchover.value.to !== null && s.nowMs - switchover.value.requestedAtMs < switchoverWaitSeconds * 1000
      ? switchover.value.to
      : null;

  const steppedDown =
    switchover !== null && switchover.value.from === s.me.name && s.nowMs - switchover.value.requestedAtMs < switchoverWaitSeconds * 1000;
  if (runtime !== null && !runtime.inRecovery) {
    if (steppedDown) return stay(s, 'I stepped down for a switchover: not taking the key back');
    return stay(s, 'the leader key is free and I run the primary: taking the key back', [{ kind: 'acquireLeader' }]);
  }
  if (runtime === null) {
    if (s.pg.postmasterPid !== null) return stay(s, 'no leader; PostgreSQL is starting: waiting');
    if (s.pg.dataDir !== 'present' || s.pg.control === null) return stay(s, 'no leader to clone from: waiting');
    const control = s.pg.control;
    const status = cluster.status?.value ?? null;
    // A timeline another node started since (a promotion the status key never saw) is in the WAL archive:
    // resuming an older one would make every standby that follows the archive's newest timeline stray.
    const newestTimeline = Math.max(0, ...(cluster.history?.value.entries ?? []).map((e) => e.timeline));
    if (
      control.clusterState === 'shut down' &&
      status !== null &&
      status.leader === s.me.name &&
      control.checkpointLsn >= status.walLsn &&
      control.timeline >= newestTimeline &&
      pendingTarget === null &&
      !steppedDown
    ) {
      // The last leader, shut down cleanly with all it ever wrote: resume without a new timeline.
      return {
        to: 'primary',
        reason: 'no leader; I was the last leader and shut down cleanly: taking the key and starting as primary',
        actions: [{ kind: 'acquireLeader' }, { kind: 'startPostgres', replica: false, upstream: null }],
      };
    }
    return { to: 'replica', reason: 'no leader: starting PostgreSQL as a replica (safety rule 5)', actions: [startReplica(null)] };
  }

  const me = selfAsMember(s);
  if (steppedDown) return stay(s, 'I stepped down for a switchover: leaving the key to a replica');
  if (pendingTarget !== null && pendingTarget !== s.me.name) {
    return stay(s, `no leader; a switchover to ${pendingTarget} is pending: waiting`);
  }
  if (leaseStale(s)) return stay(s, 'no leader, but my lease was not renewed in time: not taking the key');
  const verdict = promotionVerdict(me, cluster, s.config, s.nowMs, { ignoreOthers: pendingTarget === s.me.name });
  if (!verdict.ok) return stay(s, `no leader, but I may not take over: ${verdict.why}`);
  const why = pendingTarget === s.me.name ? 'I am the requested switchover target' : `I am the healthiest replica (lsn ${memberLsn(me)})`;
  const handover = handoverOf(s, cluster, pendingTarget);
  return {
    to: 'primary',
    reason: `no leader; ${why}: taking the leader key and promoting`,
    actions: [promoteAction(s, cluster, why, { ...(handover === null ? {} : { handover }), acquire: true })],
  };
}

/**
 * The target of a switchover whose old leader recorded its shutdown
 * checkpoint first replays WAL past it (the old leader's WAL senders send it
 * as it stops), so the new timeline forks after all of the old one's WAL.
 */
function handoverOf(s: Snapshot, cluster: ClusterView, pendingTarget: string | null): Handover | null {
  const status = cluster.status?.value;
  const lsn = status?.shutdownCheckpointLsn;
  if (pendingTarget !== s.me.name || lsn === undefined || status?.leader !== cluster.switchover?.value.from) return null;
  return { afterLsn: lsn, timeoutMs: handoverWaitMs };
}

/** acquire: the leader key is free, and the promotion's first transaction takes it (actions.ts, takeAndRecord) */
function promoteAction(s: Snapshot, cluster: ClusterView, reason: string, options: { handover?: Handover; acquire?: boolean } = {}): Action {
  const flags = { ...(options.handover === undefined ? {} : { handover: options.handover }), ...(options.acquire === true ? { acquire: true } : {}) };
  return { kind: 'promote', reason, sync: promotionSyncSet(s.config, cluster, s.me.name, s.nowMs), ...flags };
}

/** This node as the others see it, built from the snapshot rather than the possibly stale member key. */
function selfAsMember(s: Snapshot): MemberValue {
  const published = s.cluster?.members.find((m) => m.name === s.me.name);
  const runtime = s.pg.runtime;
  return {
    v: 1,
    name: s.me.name,
    role: runtime === null ? 'unknown' : runtime.inRecovery ? 'replica' : 'primary',
    state: s.state,
    running: runtime !== null,
    streaming: runtime?.streaming ?? false,
    timeline: runtime?.timeline ?? null,
    walLsn: runtime?.walLsn ?? null,
    receivedLsn: runtime?.receivedLsn ?? null,
    replayedLsn: runtime?.replayedLsn ?? null,
    upstream: null,
    zone: published?.zone ?? '',
    tags: { ...(published?.tags ?? {}), nofailover: s.me.nofailover },
    apiUrl: published?.apiUrl ?? '',
    pgHost: published?.pgHost ?? '',
    pgPort: published?.pgPort ?? 0,
    reason: '',
    systemId: null,
    agentPid: null,
    postmasterPid: s.pg.postmasterPid,
    dataDir: '',
    updatedAtMs: s.nowMs,
  };
}
