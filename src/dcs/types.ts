/**
 * The distributed configuration store as Keel needs it: the Dcs port, written
 * once over the key-value port (store.ts). The values it keeps are Keel's
 * shared value types, in model/values.ts.
 */
import type { DynamicConfig } from '../config/schema.js';
import type { BackupLockValue, ClusterView, ControllerValue, CreationValue, DrainingValue, EventValue, HistoryEntry, HistoryValue, InitializeValue, MemberValue, RouterValue, SpecValue, StatusValue, SwitchoverValue, SyncValue, Versioned } from '../model/values.js';

/** What takeLeaderToPromote writes. */
export interface LeaderTake {
  name: string;
  leaseId: string;
  entry: HistoryEntry;
  known: Versioned<HistoryValue> | null;
  sync: SyncValue | null;
  /** the switchover this promotion carries out goes with the same transaction (one write less while clients wait) */
  endsSwitchover?: boolean;
}

export interface LeaseMove {
  name: string;
  fromLeaseId: string;
  toLeaseId: string;
  /** written to `members/<name>` bound to toLeaseId; null leaves that key alone */
  member: MemberValue | null;
  /** move `leader` too (it must name `name` on fromLeaseId) */
  leader: boolean;
}

/** What keepCluster returns. */
export interface KeptCluster {
  /** Reads every key at one revision, as readCluster does, and returns the view with the changes the watch brought since. */
  read(): Promise<ClusterView>;
  stop(): Promise<void>;
}

export interface WatchOptions {
  /**
   * false: a put that changes only figures (a member's WAL positions, load and
   * archiving counts, the leader's WAL position in the status key, the time of
   * a put) calls nobody (wake-filter.ts). For watchers that act on decisions and
   * run on a timer as well: the agents' loops and the controller.
   */
  figures?: boolean;
}

/**
 * The distributed configuration store, as Keel needs it. Every method talks to
 * the store once; none caches but keepCluster, which keeps what its watch
 * brings. Each promises the atomicity stated beside it.
 */
export interface Dcs {
  readonly cluster: string;

  /** All keys of the prefix in ONE range read, so the view is a single revision. */
  readCluster(): Promise<ClusterView>;

  /** Calls `onChange` after any change under the prefix. Resolves once the watch is live. Returns a stop function. */
  watch(onChange: () => void, options?: WatchOptions): Promise<() => Promise<void>>;

  /**
   * The cluster kept from reads and the watch's changes (kept-keys.ts): once
   * read() has been called, `onView` gets the view after each change (the
   * changes of one transaction together; none for the events' and routers'
   * keys); `onResync` when changes may have been lost (read again). Resolves
   * once the watch is live.
   */
  keepCluster(handlers: { onView: (view: ClusterView) => void; onResync: () => void }): Promise<KeptCluster>;

  /** A new lease with the given ttl; returns its id. */
  grantLease(ttlSeconds: number): Promise<string>;
  /** One keep-alive. Resolves false when the lease no longer exists (it expired or was revoked). */
  keepAlive(leaseId: string): Promise<boolean>;
  /** Ends a lease now; every key bound to it disappears in the same step. */
  revokeLease(leaseId: string): Promise<void>;

  /** Create-if-absent in one transaction. True when this call created it. */
  claimInitialize(value: InitializeValue): Promise<boolean>;
  /** Compare-and-swap on modRevision. */
  updateInitialize(value: InitializeValue, expectModRevision: string): Promise<boolean>;
  /** Deletes `initialize` only if it is still the given revision (a failed bootstrap gives the race back). */
  deleteInitialize(expectModRevision: string): Promise<boolean>;

  /** Create-if-absent `leader`, bound to the lease, in one transaction. True when taken. */
  acquireLeader(name: string, leaseId: string): Promise<boolean>;
  /**
   * A promotion's writes in ONE transaction: `leader` created for `name` on
   * the lease, `entry` appended to `history` (whose copy `known` must still be
   * current; null: absent) and, with `sync`, the sync key; nothing unless the
   * leader key was free and the history unchanged. 'taken' also when an
   * earlier attempt whose answer was lost wrote them; 'leader-taken' when
   * another member or lease holds the key; else 'history-changed' (the caller
   * takes the key and appends on their own).
   */
  takeLeaderToPromote(take: LeaderTake): Promise<'taken' | 'leader-taken' | 'history-changed'>;
  /**
   * Binds `leader` to a new lease of the same member (an agent that restarted
   * while its postmaster kept running), only if the key still names `name` at
   * `expectModRevision`. One transaction. True when rebound.
   */
  rebindLeader(name: string, leaseId: string, expectModRevision: string): Promise<boolean>;
  /**
   * Deletes `leader` only if it names `name`, and with `finalStatus` puts
   * `status` in the same transaction (a leader handing over). True when deleted.
   */
  releaseLeader(name: string, finalStatus?: StatusValue): Promise<boolean>;
  /**
   * Moves a member's keys to another of its leases (granted with a new ttl) in
   * ONE transaction: puts `members/<name>` (when given) and, with `leader`,
   * `leader` bound to `toLeaseId`; the leader part only if `leader` still names
   * `name` AND is bound to `fromLeaseId`, else nothing is written. True when the
   * keys are on `toLeaseId` afterwards, also when an earlier attempt whose
   * answer was lost moved them (a retry after an unknown outcome is safe).
   */
  moveLease(move: LeaseMove): Promise<boolean>;

  /** Puts `members/<name>` bound to the lease. */
  putMember(value: MemberValue, leaseId: string): Promise<void>;
  deleteMember(name: string): Promise<void>;

  /** Compare-and-swap on the `config` key; expectModRevision null means create-if-absent. */
  putConfig(value: DynamicConfig, expectModRevision: string | null): Promise<boolean>;

  /** Puts `status` only if `leader` is still held by status.leader (one transaction). */
  putStatus(value: StatusValue): Promise<boolean>;
  /**
   * Puts `sync` only if `leader` names sync.leader AND is bound to `leaseId`
   * (one transaction): a leader whose lease ran out cannot name standbys.
   */
  putSync(value: SyncValue, leaseId: string): Promise<boolean>;

  /**
   * Appends an entry to `history` with compare-and-swap retries. `known`: the
   * caller's copy of the key (null: absent), tried first instead of a read.
   */
  appendHistory(entry: HistoryEntry, known?: Versioned<HistoryValue> | null): Promise<void>;

  /** Create-if-absent: false when another request is pending. */
  requestSwitchover(value: SwitchoverValue): Promise<boolean>;
  /** Sets the request's holdFromMs (only at that revision): routers hold new rw connections from then on. */
  holdSwitchover(request: Versioned<SwitchoverValue>, holdFromMs: number): Promise<boolean>;
  /** Deletes `switchover` (only at that revision when given). */
  clearSwitchover(expectModRevision?: string): Promise<void>;

  /** The routers registered now: one prefix read, where readCluster reads every key (a leader polls this during a switchover). */
  readRouters(): Promise<RouterValue[]>;
  /** Puts `routers/<id>` bound to the router's lease. */
  putRouter(value: RouterValue, leaseId: string): Promise<void>;

  /** Writes `draining/<name>` (no compare: the controller alone writes it). */
  putDraining(value: DrainingValue): Promise<void>;
  /** Deletes `draining/<name>`; absent is fine. */
  deleteDraining(name: string): Promise<void>;

  /**
   * Create-if-absent `creations/<name>`, bound to the lease, only while
   * `controller` is bound to that same lease (one transaction). True when
   * recorded; false when a record of that name exists or the lease is not the
   * active controller's.
   */
  claimCreation(value: CreationValue, leaseId: string): Promise<boolean>;
  /** Deletes `creations/<name>`; absent is fine. */
  deleteCreation(name: string): Promise<void>;

  /** `spec` with its revision; null when absent or invalid. */
  readSpec(): Promise<Versioned<SpecValue> | null>;
  /** Compare-and-swap on the `spec` key; expectModRevision null means create-if-absent. */
  putSpec(value: SpecValue, expectModRevision: string | null): Promise<boolean>;

  /** Create-if-absent `controller`, bound to the lease, in one transaction. True when taken. */
  acquireController(value: ControllerValue, leaseId: string): Promise<boolean>;
  /** Rewrites `controller` (a new report) only while it is bound to `leaseId`, keeping that binding (one transaction). */
  reportController(value: ControllerValue, leaseId: string): Promise<boolean>;
  /** Deletes `controller` only if it names `name` (one transaction). */
  releaseController(name: string): Promise<boolean>;
  /** The active controller, with the lease its key is bound to; null when none. */
  readController(): Promise<(Versioned<ControllerValue> & { leaseId: string }) | null>;

  /** Create-if-absent `backup`, bound to the lease, in one transaction: true when this runner may take a backup now. */
  claimBackup(value: BackupLockValue, leaseId: string): Promise<boolean>;
  /** Deletes `backup` only if it is still this runner's (same value, one transaction). */
  releaseBackup(value: BackupLockValue): Promise<boolean>;
  /** The backup being taken now, with the lease its key is bound to; null when none. */
  readBackup(): Promise<(Versioned<BackupLockValue> & { leaseId: string }) | null>;

  /** Calls `onEvent` for each event added from now on. Resolves once the watch is live. Returns a stop function. */
  watchEvents(onEvent: (event: EventValue) => void): Promise<() => Promise<void>>;

  /** Adds an event under `events/`; never throws (events are best effort). */
  addEvent(event: Omit<EventValue, 'v'>): Promise<void>;
  /** Events, oldest first, at most `limit`. */
  listEvents(limit: number): Promise<EventValue[]>;

  close(): Promise<void>;
}
