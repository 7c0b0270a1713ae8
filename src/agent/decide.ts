/**
 * The agent's brain: one pure function from a snapshot to the next actions and
 * the sentence that explains them. No I/O here (DESIGN.md, Layout).
 */
import type { ClusterView, HistoryEntry, MemberValue } from '../dcs/types.js';
import type { ControlData } from '../postgres/types.js';
import { leaseDeadlineMs, ttlChange } from '../model/lease.js';
import { promotionVerdict } from '../model/promotion.js';
import { divergence } from './divergence.js';
import { recentlyGone, remember, type AgentMemory } from './memory.js';
import { nextSyncStep, promotionSyncSet } from './sync.js';
import { memberLsn } from '../model/lsn.js';
import { upstreamOf, type Action, type Decision, type Snapshot } from './snapshot.js';

/** Seconds a switchover request may hold back an election before it is ignored. */
export const switchoverWaitSeconds = 30;
/** Seconds a switching-over leader waits for statements in flight before it shuts down. */
export const switchoverDrainSeconds = 5;
/** Seconds to wait after a failed background job before trying it again. */
export const retryAfterFailureSeconds = 5;
/** Seconds a replica may fail to stream from the leader before its WAL is checked for divergence. */
export const streamFailureSeconds = 10;
/** Part of an action error that says the upstream could not be reached: retry, never discard data for it. */
export const unreachableMarker = 'unreachable at';
/**
 * What PostgreSQL says when a standby's data cannot reach the leader's
 * timeline at all (a rewind from a leader whose promotion was not yet
 * checkpointed can leave that): only a fresh clone helps.
 */
const unfollowableMarkers = [
  'does not contain minimum recovery point',
  "is not a child of this server's history",
  'could not locate required checkpoint record',
];

/** Cluster states pg_controldata reports for an instance that last ran as a primary. */
const primaryControlStates = new Set(['in production', 'shut down', 'in crash recovery', 'shutting down']);

function stay(s: Snapshot, reason: string, actions: Action[] = []): Decision {
  return { to: s.state, reason, actions };
}

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

function startReplica(upstream: ReturnType<typeof upstreamOf> | null): Action {
  return { kind: 'startPostgres', replica: true, upstream };
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

function leaseStale(s: Snapshot): boolean {
  return s.lease !== null && s.nowMs >= leaseDeadlineMs(s.lease);
}

/**
 * The config's ttl differs from the one this agent's lease was granted with:
 * move the keys to a lease with the new ttl, in a steady state only (never
 * ahead of a safety step), and only while the old lease can be trusted.
 */
function moveToNewTtl(s: Snapshot, leader: boolean, steady: string): Decision | null {
  const change = ttlChange(s.lease, s.config.ttl);
  if (change === null || leaseStale(s)) return null;
  const keys = leader ? 'my member and leader keys' : 'my member key';
  const why =
    change.fromSeconds === change.toSeconds
      ? `a move of ${keys} to a new lease may not have completed: settling it`
      : `ttl changed from ${change.fromSeconds} s to ${change.toSeconds} s: moving ${keys} to a lease granted with ${change.toSeconds} s`;
  return stay(s, `${steady}; ${why}`, [{ kind: 'moveLease', ttlSeconds: change.toSeconds, leader }]);
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
  actions.push(...nextSyncStep(s.config, cluster, runtime, s.me.name, s.nowMs));
  const streaming = runtime.replicas.filter((r) => r.state === 'streaming').length;
  const sync = cluster.sync?.value;
  const syncNote = s.config.synchronous_mode === 'off' ? '' : sync && sync.members.length > 0 ? `, synchronous: ANY ${sync.quorum} of ${sync.members.join(', ')}` : ', no synchronous standby';
  const steady = `I am the leader with the lease; ${streaming} replica(s) streaming${syncNote}`;
  const move = actions.length === 0 ? moveToNewTtl(s, true, steady) : null;
  return move ?? { to: 'primary', reason: steady, actions };
}

function decideSwitchover(s: Snapshot, cluster: ClusterView, to: string | null, modRevision: string): Decision {
  const myLsn = s.pg.runtime?.walLsn ?? 0;
  const candidates = cluster.members.filter((m) => m.name !== s.me.name && (to === null || m.name === to));
  let refusal = to !== null && candidates.length === 0 ? `${to} is not a member` : 'no replica is eligible';
  for (const candidate of candidates.sort((a, b) => memberLsn(b) - memberLsn(a))) {
    const lagBytes = myLsn - memberLsn(candidate);
    const verdict = promotionVerdict(candidate, cluster, s.config, s.nowMs, { ignoreOthers: true });
    if (!verdict.ok) refusal = verdict.why;
    else if (!candidate.streaming) refusal = `${candidate.name} is not streaming`;
    else if (lagBytes > s.config.maximum_lag_on_failover) refusal = `${candidate.name} lags ${lagBytes} bytes`;
    else {
      return {
        to: 'stopped',
        reason: `switchover to ${candidate.name}: shutting down cleanly and releasing the leader key`,
        actions: [
          { kind: 'drainClients', timeoutMs: switchoverDrainSeconds * 1000 },
          // A fast shutdown sends every WAL record, the shutdown checkpoint included, to connected replicas first.
          { kind: 'stopPostgres', mode: 'fast' },
          { kind: 'releaseLeader' },
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

function recentFailure(s: Snapshot, kind: string): boolean {
  const job = s.lastJob;
  return job !== null && job.kind === kind && !job.ok && s.nowMs - job.finishedAtMs < retryAfterFailureSeconds * 1000;
}

/** Position and timeline of a stopped data directory, or 'unknown' when only replay can tell. */
function stoppedPosition(control: ControlData): { timeline: number; lsn: number } | 'crashed-primary' | 'standby' {
  // A base backup or a rewound copy still says "in production": its backup_label makes it a standby.
  if (control.backupLabel) return 'standby';
  if (control.clusterState === 'shut down') return { timeline: control.timeline, lsn: control.checkpointLsn };
  if (primaryControlStates.has(control.clusterState)) return 'crashed-primary';
  return 'standby';
}

function decideAsFollower(s: Snapshot, cluster: ClusterView, leaderName: string): Decision {
  const runtime = s.pg.runtime;
  if (runtime !== null && !runtime.inRecovery) {
    // Never two writable primaries: the key names someone else.
    return { to: 'stopped', reason: `${leaderName} holds the leader key: stopping my primary at once`, actions: [{ kind: 'stopPostgres', mode: 'immediate' }] };
  }
  const leaderMember = cluster.members.find((m) => m.name === leaderName);
  if (leaderMember === undefined || !leaderMember.running || leaderMember.timeline === null) {
    return stay(s, `waiting for leader ${leaderName} to publish a running primary`);
  }
  const upstream = upstreamOf(leaderMember);
  const history = cluster.history?.value.entries ?? [];

  if (s.pg.dataDir === 'incomplete' && s.pg.postmasterPid === null) {
    // Without pg_control this is no database yet: a clone that was interrupted.
    return { to: 'stopped', reason: 'the data directory is an interrupted clone: removing it to clone again', actions: [{ kind: 'removeDataDir' }] };
  }
  if (s.pg.dataDir !== 'present' || s.pg.control === null) {
    if (s.pg.postmasterPid !== null) return stay(s, 'PostgreSQL runs without a readable data directory: waiting');
    if (recentFailure(s, 'clone')) return { to: 'stopped', reason: `cloning failed (${s.lastJob!.error}): retrying shortly`, actions: [] };
    return { to: 'cloning', reason: `empty data directory: cloning from leader ${leaderName}`, actions: [{ kind: 'clone', from: upstream }] };
  }

  if (runtime === null) {
    if (s.pg.postmasterPid !== null) return stay(s, 'PostgreSQL is starting: waiting');
    if (recentFailure(s, 'rewind') && s.lastJob!.error!.includes(unreachableMarker)) {
      return stay(s, `pg_rewind could not reach ${leaderName}: retrying shortly`);
    }
    if (s.lastJob?.kind === 'rewind' && !s.lastJob.ok && !s.lastJob.error!.includes(unreachableMarker)) {
      return { to: 'stopped', reason: `pg_rewind failed (${s.lastJob.error}): removing the data to clone again`, actions: [{ kind: 'removeDataDir' }] };
    }
    const startError = s.lastJob?.kind === 'startPostgres' && !s.lastJob.ok ? (s.lastJob.error ?? '') : '';
    const unfollowable = unfollowableMarkers.find((marker) => startError.includes(marker));
    if (unfollowable !== undefined) {
      return {
        to: 'stopped',
        reason: `my data cannot follow leader ${leaderName}'s timeline (PostgreSQL: "${unfollowable}"): removing it to clone again`,
        actions: [{ kind: 'removeDataDir' }],
      };
    }
    const position = stoppedPosition(s.pg.control);
    const diverged =
      position === 'crashed-primary' ||
      (position !== 'standby' && divergence(position.timeline, position.lsn, leaderMember.timeline, history) === 'diverged');
    if (diverged) return rewindOrReclone(s, leaderName, upstream, []);
    return { to: 'replica', reason: `starting as a replica of leader ${leaderName}`, actions: [startReplica(upstream)] };
  }

  const stuckSince = s.memory.notStreamingSinceMs;
  const former = s.memory.formerPrimary;
  const runningDiverged =
    // PostgreSQL refuses to stream a history that diverged, so a replica that has failed to stream
    // for a while is checked; while not streaming its timeline is its last restartpoint's.
    (!runtime.streaming &&
      stuckSince !== null &&
      s.nowMs - stuckSince >= streamFailureSeconds * 1000 &&
      divergence(runtime.timeline, runtime.replayedLsn ?? 0, leaderMember.timeline, history) === 'diverged') ||
    // A demoted primary that wrote past the fork of the leader's timeline cannot follow it: no need
    // to wait for streaming to fail.
    (!runtime.streaming && former !== null && replayedPastFork(former.timeline, former.walLsn, leaderMember.timeline, history)) ||
    // A diverged replica still streams its old timeline for an instant after each reconnect, which
    // restarts the count above; while streaming, its timeline is the received one and exact.
    (runtime.streaming && replayedPastFork(runtime.timeline, runtime.replayedLsn ?? 0, leaderMember.timeline, history));
  if (runningDiverged) return rewindOrReclone(s, leaderName, upstream, [{ kind: 'stopPostgres', mode: 'fast' }]);
  const target = conninfoTarget(runtime.primaryConninfo);
  const following = target !== null && target.host === upstream.host && target.port === upstream.port;
  if (!following || runtime.primarySlotName !== s.me.name) {
    return { to: 'replica', reason: `re-pointing replication to leader ${leaderName}`, actions: [{ kind: 'follow', upstream }] };
  }
  const lagBytes = Math.max(0, (leaderMember.walLsn ?? 0) - Math.max(runtime.receivedLsn ?? 0, runtime.replayedLsn ?? 0));
  const steady = `following leader ${leaderName}${runtime.streaming ? `, streaming, ${lagBytes} bytes behind` : ', not streaming yet'}`;
  return moveToNewTtl(s, false, steady) ?? stay(s, steady);
}

/** On an older timeline than the leader, with WAL replayed past the point where the next timeline forked off it. */
function replayedPastFork(timeline: number, replayedLsn: number, leaderTimeline: number, history: HistoryEntry[]): boolean {
  if (timeline >= leaderTimeline) return false;
  const fork = history.findLast((entry) => entry.timeline === timeline + 1);
  return fork !== undefined && replayedLsn > fork.switchLsn;
}

/** host and port of a libpq key=value connection string (values may be single-quoted). */
export function conninfoTarget(conninfo: string): { host: string; port: number } | null {
  const value = (key: string): string | null => {
    const match = new RegExp(`(?:^|\\s)${key}\\s*=\\s*(?:'((?:[^'\\\\]|\\\\.)*)'|(\\S+))`).exec(conninfo);
    return match === null ? null : (match[1] ?? match[2] ?? null);
  };
  const host = value('host');
  const port = Number(value('port') ?? '5432');
  return host === null || !Number.isInteger(port) ? null : { host, port };
}

function rewindOrReclone(s: Snapshot, leaderName: string, upstream: ReturnType<typeof upstreamOf>, before: Action[]): Decision {
  if (!s.config.use_rewind) {
    return { to: 'stopped', reason: `my WAL diverged from leader ${leaderName} and use_rewind is off: re-cloning`, actions: [...before, { kind: 'removeDataDir' }] };
  }
  return {
    to: 'rewinding',
    reason: `my WAL diverged from leader ${leaderName}'s timeline: rewinding`,
    actions: [...before, { kind: 'rewind', from: upstream }],
  };
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
    if (
      control.clusterState === 'shut down' &&
      status !== null &&
      status.leader === s.me.name &&
      control.checkpointLsn >= status.walLsn &&
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
  return {
    to: 'primary',
    reason: `no leader; ${why}: taking the leader key and promoting`,
    actions: [{ kind: 'acquireLeader' }, promoteAction(s, cluster, why)],
  };
}

function promoteAction(s: Snapshot, cluster: ClusterView, reason: string): Action {
  return { kind: 'promote', reason, sync: promotionSyncSet(s.config, cluster, s.me.name, s.nowMs) };
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
