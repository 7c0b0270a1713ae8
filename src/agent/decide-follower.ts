/**
 * decide() for a node while another member holds the leader key: follow it,
 * or find out that this node's WAL diverged from it and rewind or re-clone
 * (safety rule 4). Pure.
 */
import type { ClusterView, HistoryEntry, MemberValue, SyncValue } from '../model/values.js';
import { shortRetryMs } from '../postgres/conf.js';
import type { ControlData } from '../postgres/types.js';
import { divergence } from './divergence.js';
import { promotionSyncSet } from './sync.js';
import { moveToNewTtl, primaryControlStates, recentFailure, startReplica, stay, switchoverWaitSeconds } from './decide-common.js';
import { upstreamOf, type Action, type Decision, type Snapshot } from './snapshot.js';

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

/** Position and timeline of a stopped data directory, or 'unknown' when only replay can tell. */
function stoppedPosition(control: ControlData): { timeline: number; lsn: number } | 'crashed-primary' | 'standby' {
  // A base backup or a rewound copy still says "in production": its backup_label makes it a standby.
  if (control.backupLabel) return 'standby';
  if (control.clusterState === 'shut down') return { timeline: control.timeline, lsn: control.checkpointLsn };
  if (primaryControlStates.has(control.clusterState)) return 'crashed-primary';
  return 'standby';
}

export function decideAsFollower(s: Snapshot, cluster: ClusterView, leaderName: string): Decision {
  const runtime = s.pg.runtime;
  if (runtime !== null && !runtime.inRecovery) {
    // Never two writable primaries: the key names someone else.
    return { to: 'stopped', reason: `${leaderName} holds the leader key: stopping my primary at once`, actions: [{ kind: 'stopPostgres', mode: 'immediate' }] };
  }
  const leaderMember = cluster.members.find((m) => m.name === leaderName);
  // a leader still promoting publishes its replica timeline: nothing is compared against that
  if (leaderMember === undefined || !leaderMember.running || leaderMember.role !== 'primary' || leaderMember.timeline === null) {
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
    if (diverged) {
      const where = position === 'crashed-primary' ? 'a primary that did not shut down cleanly' : `timeline ${position.timeline} up to ${position.lsn}`;
      return rewindOrReclone(s, leaderName, upstream, [], `${where}; leader on timeline ${leaderMember.timeline}`);
    }
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
  const via = switchoverTargetToStreamFrom(s, cluster, leaderName);
  const promoting = pendingHandover(s, cluster, leaderName)?.to === s.me.name;
  const wanted = via === null ? upstream : upstreamOf(via);
  const target = conninfoTarget(runtime.primaryConninfo);
  const following = target !== null && target.host === wanted.host && target.port === wanted.port;
  // The target and the standbys streaming from it retry every few ms and without the WAL archive while the
  // switchover is pending (conf.ts, promotionRetryLine and streamOnlyLine): set before the leader's stream ends,
  // so no restore_command runs between that end and the promotion. A standby already on the new leader keeps
  // them a few seconds past its promotion: going back at once reloaded it in the pause, while the new leader's
  // first synchronous commits waited for its answer.
  const settling = following && runtime.walRetrieveRetryMs === shortRetryMs && promotedRecently(cluster, leaderName, s.nowMs);
  const shortRetry = via !== null || promoting || settling;
  // and the target names the standbys its promotion will name (no effect before it), so that nothing is left to write then
  const standbyNames = promoting ? promotionSyncSet(s.config, cluster, s.me.name, s.nowMs)?.standbyNames : undefined;
  const slots = handoverSlots(s, cluster, leaderName);
  const missingSlots = slots.filter((name) => !runtime.slots.includes(name));
  const surplusSlots = runtime.slots.filter((name) => !slots.includes(name));
  const slotActions: Action[] = missingSlots.length > 0 || surplusSlots.length > 0 ? [{ kind: 'syncSlots', names: slots }] : [];
  // the other standbys wait for the target's slots before they stream from it, and the old leader waits for them
  if (promoting && missingSlots.length > 0) {
    const reason = `a switchover from ${leaderName} to me is pending: making slots for ${missingSlots.join(', ')}, so they can stream from me before I am promoted`;
    return { to: 'replica', reason, actions: slotActions };
  }
  const namesDiffer = standbyNames !== undefined && runtime.synchronousStandbyNames !== standbyNames;
  if (!following || runtime.primarySlotName !== s.me.name || (runtime.walRetrieveRetryMs === shortRetryMs) !== shortRetry || namesDiffer) {
    const reason =
      via !== null
        ? `a switchover from ${leaderName} to ${via.name} is pending: streaming from ${via.name} already (my stream retries every few ms until it holds my slot), so it has a standby the moment it is promoted`
        : promoting
          ? `a switchover from ${leaderName} to me is pending: retrying my stream every few ms and without the WAL archive until I am promoted`
          : following
            ? `following leader ${leaderName}: back to retrying it once a second`
            : `re-pointing replication to leader ${leaderName}`;
    return { to: 'replica', reason, actions: [{ kind: 'follow', upstream: wanted, shortRetry, ...(standbyNames === undefined ? {} : { synchronousStandbyNames: standbyNames }) }] };
  }
  if (slotActions.length > 0) {
    const reason = `dropping replication slots a replica does not need (${surplusSlots.join(', ')}; active ones stay until their standby leaves)`;
    return { to: 'replica', reason, actions: slotActions };
  }
  const lagBytes = Math.max(0, (leaderMember.walLsn ?? 0) - Math.max(runtime.receivedLsn ?? 0, runtime.replayedLsn ?? 0));
  const steady = `following leader ${leaderName}${runtime.streaming ? `, streaming, ${lagBytes} bytes behind` : ', not streaming yet'}`;
  return moveToNewTtl(s, false, steady) ?? stay(s, steady);
}

/** How long a standby on a newly promoted leader keeps the short retry and no archive after the promotion. */
export const promotionSettleMs = 5000;

/** The newest history entry is `leader`'s promotion, from less than promotionSettleMs ago. */
function promotedRecently(cluster: ClusterView, leader: string, nowMs: number): boolean {
  const newest = cluster.history?.value.entries.at(-1);
  return newest !== undefined && newest.leader === leader && nowMs - newest.atMs < promotionSettleMs;
}

/** The switchover from the leader that is pending now, with a named target; null when none (or a stale request). */
function pendingHandover(s: Snapshot, cluster: ClusterView, leaderName: string): { to: string } | null {
  const request = cluster.switchover?.value;
  if (request === undefined || request.failover || request.to === null || request.to === leaderName) return null;
  if (request.from !== null && request.from !== leaderName) return null;
  if (s.nowMs - request.requestedAtMs >= switchoverWaitSeconds * 1000) return null;
  return { to: request.to };
}

/**
 * The slots a replica should hold: none (a demoted primary's old ones go too,
 * or they would keep its WAL), except on a switchover's target, which makes
 * one for every other member so that they can stream from it before it is
 * promoted (and then need not re-point once it is).
 */
function handoverSlots(s: Snapshot, cluster: ClusterView, leaderName: string): string[] {
  if (pendingHandover(s, cluster, leaderName)?.to !== s.me.name) return [];
  return cluster.members.map((m) => m.name).filter((name) => name !== s.me.name);
}

/**
 * While a switchover from the leader to another replica is pending, stream
 * from that target: its promotion then ends my stream's timeline and I go on
 * with the new one, instead of re-pointing after it (a newly promoted
 * synchronous primary waits for a standby before its first commit). At once,
 * not once its member key shows the slot it makes for me: my stream retries
 * every few ms (the short retry comes with the move) and starts the moment
 * the slot exists, where waiting to see it cost the old leader's shutdown
 * 100-200 ms more. Not when my leaving would hold up the leader's commits in
 * flight: in synchronous mode the target alone must then satisfy the
 * leader's quorum.
 */
function switchoverTargetToStreamFrom(s: Snapshot, cluster: ClusterView, leaderName: string): MemberValue | null {
  const handover = pendingHandover(s, cluster, leaderName);
  if (handover === null || handover.to === s.me.name) return null;
  const target = cluster.members.find((m) => m.name === handover.to);
  if (target === undefined || target.role !== 'replica' || !target.running || !target.streaming) return null;
  return mayStreamFromTarget(s.config.synchronous_mode, cluster.sync?.value, s.me.name, target.name) ? target : null;
}

/**
 * Whether standby `name` may leave the leader for a switchover's target: not
 * when its leaving would hold up the leader's commits in flight (in
 * synchronous mode the target alone must then satisfy the leader's quorum).
 * The leader waits, bounded, for those that may before it shuts down.
 */
export function mayStreamFromTarget(synchronousMode: string, sync: SyncValue | undefined, name: string, target: string): boolean {
  return synchronousMode === 'off' || sync === undefined || !sync.members.includes(name) || (sync.quorum <= 1 && sync.members.includes(target));
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

function rewindOrReclone(s: Snapshot, leaderName: string, upstream: ReturnType<typeof upstreamOf>, before: Action[], detail?: string): Decision {
  if (!s.config.use_rewind) {
    return { to: 'stopped', reason: `my WAL diverged from leader ${leaderName} and use_rewind is off: re-cloning`, actions: [...before, { kind: 'removeDataDir' }] };
  }
  return {
    to: 'rewinding',
    reason: `my WAL diverged from leader ${leaderName}'s timeline${detail === undefined ? '' : ` (${detail})`}: rewinding`,
    actions: [...before, { kind: 'rewind', from: upstream }],
  };
}
