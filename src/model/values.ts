import type { DynamicConfig } from '../config/schema.js';

/**
 * Values kept under `/keel/<cluster>/`. Every value is versioned JSON
 * (`{"v":1,...}`) and validated on read (see dcs/codec.ts); a value that does not
 * validate is logged and treated as absent.
 *
 * LSNs are byte positions as plain numbers (2^53 bytes is 8 PiB of WAL).
 */

export type Role = 'primary' | 'replica' | 'unknown';

/** `initialize`: the bootstrap race and the cluster's system identifier. */
export interface InitializeValue {
  v: 1;
  /** member that won the race and runs initdb */
  by: string;
  /** pg_controldata's system identifier once initdb is done; null while it runs */
  systemId: string | null;
}

/** `leader`: its existence, bound to the holder's lease, is the right to accept writes. */
export interface LeaderValue {
  v: 1;
  name: string;
}

/** `members/<name>`: what each agent publishes every loop, bound to its lease. */
export interface MemberValue {
  v: 1;
  name: string;
  role: Role;
  /** the agent state (see agent/states.ts) */
  state: string;
  running: boolean;
  /** a replica whose WAL receiver streams from the leader */
  streaming: boolean;
  timeline: number | null;
  /** primary: current WAL insert position; replica: null */
  walLsn: number | null;
  receivedLsn: number | null;
  replayedLsn: number | null;
  /** name of the member this replica streams from, if any */
  upstream: string | null;
  /** a replica's physical slots: a switchover's target makes them for the others before it is promoted */
  slots?: string[];
  zone: string;
  tags: Record<string, string | number | boolean>;
  apiUrl: string;
  pgHost: string;
  pgPort: number;
  /** the sentence that explains the last decision */
  reason: string;
  systemId: string | null;
  agentPid: number | null;
  postmasterPid: number | null;
  dataDir: string;
  updatedAtMs: number;
  /** load the agent measured (agent/load.ts); absent until it has two samples */
  metrics?: MemberMetrics;
  /** WAL archiving as the primary's pg_stat_archiver shows it (backup/archive-monitor.ts); absent on replicas and without a repository */
  archive?: MemberArchive;
}

/**
 * A member key without its figures (WAL positions, load, archiving counts, the
 * time of the put) and without its reason: what other members act on. An
 * agent puts its key at once when this changes and otherwise once per
 * loop_wait; a watcher that acts on decisions, not on figures, wakes only when
 * it changes. The reason is words for people (status, dashboard, the
 * controller's report) and changes at nearly every loop of a switchover:
 * put at once, it made 8 of the 19 etcd writes between the routers' hold
 * and the route, each fsynced beside the release and the take, and each a
 * read of the whole cluster by every agent, the controller and the router.
 * It goes with the next periodic put. Takes any object, as a watcher sees
 * values that were not validated yet.
 */
export function memberEssentials(value: object): Record<string, unknown> {
  const { updatedAtMs: _at, walLsn: _w, receivedLsn: _r, replayedLsn: _p, metrics: _m, reason: _why, archive, ...rest } = value as Record<string, unknown>;
  const state = typeof archive === 'object' && archive !== null ? ((archive as { state?: unknown }).state ?? null) : null;
  return { ...rest, archiveState: state };
}

/** The status key without its figures: the leader's WAL position and the time of the put. */
export function statusEssentials(value: object): Record<string, unknown> {
  const { updatedAtMs: _at, walLsn: _w, ...rest } = value as Record<string, unknown>;
  return rest;
}

/** WAL archiving on a primary: what reached the repository, what failed, what waits. */
export interface MemberArchive {
  /** failing: the last attempt failed after the last success */
  state: 'ok' | 'failing';
  archivedCount: number;
  failedCount: number;
  lastArchivedWal: string | null;
  lastArchivedAtMs: number | null;
  lastFailedWal: string | null;
  lastFailedAtMs: number | null;
  /** WAL written but not yet in the repository: the current segment's part and the segments waiting */
  lagBytes: number;
  /** seconds since the last success while WAL waits (0 when nothing waits; null before any success) */
  lagSeconds: number | null;
  /** when the agent read it */
  atMs: number;
}

export interface MemberMetrics {
  /** CPU of the postmaster and its backends, percent of one core */
  cpuPercent: number;
  /** client backends, Keel's own included */
  connections: number;
  /** committed + rolled back transactions per second (on a replica: reads) */
  roQueriesPerSecond: number;
}

/** `status`: written by the leader so the last known leader position outlives its lease. */
export interface StatusValue {
  v: 1;
  leader: string;
  timeline: number;
  walLsn: number;
  updatedAtMs: number;
  /**
   * Written by a leader that shut down cleanly to hand over: where its shutdown
   * checkpoint record starts. The switchover's candidate promotes only once it
   * has received WAL past it, so it holds every commit the old leader made.
   */
  shutdownCheckpointLsn?: number;
}

/** `sync`: the standbys the leader made synchronous; only those may be promoted in synchronous mode. */
export interface SyncValue {
  v: 1;
  leader: string;
  members: string[];
  /** how many of `members` must confirm each commit (synchronous_standby_names = ANY quorum (members)) */
  quorum: number;
}

/** `switchover`: a requested switchover (leader healthy) or failover (leader gone or unhealthy). */
export interface SwitchoverValue {
  v: 1;
  /** the leader expected to step down; null for a failover with no leader */
  from: string | null;
  /** the member that should take over; null lets the healthiest replica take it */
  to: string | null;
  failover: boolean;
  requestedAtMs: number;
  /**
   * When routers began to hold new rw connections for it. A planned
   * switchover is first prepared by the leader stepping down, while writes go
   * on (a checkpoint, its other standbys moved to the target), and the leader
   * sets this once done; a failover request holds at once (switchoverHolds).
   */
  holdFromMs?: number;
}

/** Whether routers hold new rw connections for this request now: a failover at once, a switchover once its leader prepared it. */
export function switchoverHolds(request: SwitchoverValue): boolean {
  return request.failover || request.from === null || request.holdFromMs !== undefined;
}

/**
 * `draining/<name>`: a replica the controller is about to remove. Routers
 * send it no new reads; the reads already on it go on until it is removed.
 */
export interface DrainingValue {
  v: 1;
  name: string;
  sinceMs: number;
  reason: string;
}

/**
 * `routers/<id>`: a router that is running, bound to its own lease. It says
 * which switchover request it already holds new rw connections for, so a
 * leader handing over stops as soon as every router holds, not after a fixed
 * wait.
 */
export interface RouterValue {
  v: 1;
  id: string;
  /** requestedAtMs of the switchover whose hold the router applied; null when it holds for none */
  holding: number | null;
  atMs: number;
}

/**
 * `creations/<name>`: a node the active controller asked the provider for,
 * written before the provider is called and bound to that controller's lease.
 * It goes when the node shows in the provider's list or the creation fails;
 * a record of a controller that died goes with its lease.
 */
export interface CreationValue {
  v: 1;
  name: string;
  zone: string;
  instanceClass: string;
  /** the down node this one replaces; null for a node added to reach the count */
  replaces: string | null;
  sinceMs: number;
  /** the controller that records it */
  by: string;
}

/**
 * `backup`: the backup being taken now, bound to its runner's lease (the controller's scheduler, or
 * `keel backup now`): one at a time in a cluster, and the key goes with a runner that dies.
 */
export interface BackupLockValue {
  v: 1;
  /** who runs it: `controller <name>`, `cli <host>-<pid>` */
  by: string;
  type: 'full' | 'diff' | 'incr';
  /** the member it is taken from (a streaming replica, else the leader) */
  source: string;
  startedAtMs: number;
}

export interface HistoryEntry {
  /** the timeline the new leader started */
  timeline: number;
  /** where the previous timeline ended on the new leader: WAL past this point on other nodes diverged */
  switchLsn: number;
  leader: string;
  atMs: number;
  reason: string;
}

/** `history`: timeline switches, oldest first. */
export interface HistoryValue {
  v: 1;
  entries: HistoryEntry[];
}

/** `config`: the dynamic settings plus a version. */
export type ConfigValue = { v: 1 } & DynamicConfig;

/** `events/<key>`: what happened and why. */
export interface EventValue {
  v: 1;
  atMs: number;
  /** member, controller, cli... */
  source: string;
  kind: string;
  message: string;
}

export type AutoscaleMetric = 'cpu' | 'connections' | 'roQps';

/** Target tracking over replicas (controller/autoscale.ts). */
export interface AutoscalePolicy {
  enabled: boolean;
  /** averaged over streaming replicas from their member keys' metrics */
  metric: AutoscaleMetric;
  target: number;
  minReplicas: number;
  maxReplicas: number;
  scaleOutCooldownSeconds: number;
  scaleInCooldownSeconds: number;
  scaleInEnabled: boolean;
}

/** What the autoscaler did, kept in the spec so that a controller taking over knows it. */
export interface ScalingState {
  /** replicas the autoscaler added; it removes only these */
  added: string[];
  lastScaleOutAtMs: number | null;
  lastScaleInAtMs: number | null;
}

/** `spec`: the declared shape the controller keeps. */
export interface SpecValue {
  v: 1;
  /** nodes the operator declared, the leader included (the autoscaler's replicas come on top) */
  nodes: number;
  zones: string[];
  instanceClass: string;
  /** a node down this long is fenced, destroyed and replaced */
  replaceAfterSeconds: number;
  autoscale: AutoscalePolicy;
  /** written by the controller, not by people */
  scaling: ScalingState;
  /** scheduled backups and where new replicas get their data (absent in specs written before backups existed) */
  backup?: BackupPolicy;
}

/** The backups the controller takes, and what it keeps. */
export interface BackupPolicy {
  /** when each kind is due: a cron line in UTC (`0 3 * * 0`) or an interval (`6h`, `7d`), model/schedule.ts; null: never */
  full: string | null;
  /** changes since the last full backup */
  diff: string | null;
  /** changes since the last backup of any kind */
  incr: string | null;
  /** full backups kept; older ones go, with the WAL only they needed */
  retentionFull: number;
  /** a new replica's data: the newest backup then the WAL archive, falling back to the leader; or pg_basebackup from the leader */
  replicaSource: 'backup' | 'leader';
}

/** `controller`: bound to the active controller's lease; its existence is the right to act. */
export interface ControllerValue {
  v: 1;
  name: string;
  pid: number;
  startedAtMs: number;
  /** what the active controller decided last, so that `keel autoscale status` shows its answer, not a second opinion */
  report?: ControllerReport;
}

export interface ControllerReport {
  atMs: number;
  /** the plan's sentence on the whole cluster */
  plan: string;
  autoscale: {
    /** hold (code), add N, remove NAME */
    decision: string;
    reason: string;
    metric: number | null;
    currentReplicas: number;
    wantedReplicas: number | null;
  };
}

/** A value with the etcd revision it was last modified at (for compare-and-swap). */
export interface Versioned<T> {
  value: T;
  modRevision: string;
}

/** What Dcs.moveLease moves: one member's keys, from one of its leases to another. */
/** One consistent read of the cluster's prefix. */
export interface ClusterView {
  /** etcd header revision of the read */
  revision: string;
  initialize: Versioned<InitializeValue> | null;
  config: Versioned<DynamicConfig> | null;
  leader: (Versioned<LeaderValue> & { leaseId: string }) | null;
  members: MemberValue[];
  status: Versioned<StatusValue> | null;
  sync: Versioned<SyncValue> | null;
  switchover: Versioned<SwitchoverValue> | null;
  history: Versioned<HistoryValue> | null;
  /** replicas being drained before their removal, by name */
  draining: DrainingValue[];
  /** nodes the active controller is creating, by name */
  creations: CreationValue[];
  /** the routers running now, by id */
  routers: RouterValue[];
}
