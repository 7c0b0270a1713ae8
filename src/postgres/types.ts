/**
 * One local PostgreSQL instance, as the agent sees and drives it.
 * LSNs are byte positions as numbers (see lsn.ts to convert from `X/Y`).
 */

/** incomplete: files but no global/pg_control (pg_basebackup writes it last: an interrupted clone) */
export type DataDirState = 'missing' | 'empty' | 'incomplete' | 'present';

/** What pg_controldata says, parsed (controldata.ts). */
export interface ControlData {
  systemId: string;
  /** "in production", "shut down", "shut down in recovery", "in archive recovery", "in crash recovery", ... */
  clusterState: string;
  /** "Latest checkpoint's TimeLineID" */
  timeline: number;
  /** "Latest checkpoint location" */
  checkpointLsn: number;
  /** "Minimum recovery ending location" */
  minRecoveryLsn: number;
  dataChecksums: boolean;
  /** a backup_label file exists: a fresh base backup or a rewound directory, to be started as a standby */
  backupLabel: boolean;
}

/** What SQL says about a running instance. */
export interface RuntimeState {
  inRecovery: boolean;
  /** primary: pg_control_checkpoint().timeline_id after promotion is reliable via pg_current_wal_lsn's timeline; replica: the WAL receiver's or replay timeline */
  timeline: number;
  /** primary only: pg_current_wal_lsn() */
  walLsn: number | null;
  /** replica only: pg_last_wal_receive_lsn() */
  receivedLsn: number | null;
  /** replica only: pg_last_wal_replay_lsn() */
  replayedLsn: number | null;
  /** replica: pg_stat_wal_receiver.status = 'streaming' */
  streaming: boolean;
  /** replica: host and port the WAL receiver is connected to */
  upstreamHost: string | null;
  upstreamPort: number | null;
  /** primary: application_name of each connected walsender, with its flush LSN and sync_state */
  replicas: { applicationName: string; flushLsn: number | null; state: string; syncState: string }[];
  /** names of physical replication slots that exist */
  slots: string[];
  /** current value of primary_conninfo's host/port as the server sees them ('' when unset) */
  primaryConninfo: string;
  primarySlotName: string;
  synchronousStandbyNames: string;
  /** wal_retrieve_retry_interval in ms: 1000 normally, short while a standby is promoted or cascades through a switchover's target */
  walRetrieveRetryMs: number;
  /** server_version_num, e.g. 150012 (for /metrics; absent in fakes) */
  serverVersionNum?: number;
  /** pg_postmaster_start_time() in Unix seconds */
  postmasterStartSeconds?: number;
  /** replica: pg_is_wal_replay_paused() */
  replayPaused?: boolean;
  /** replica: pg_last_xact_replay_timestamp() in Unix seconds; null before the first replayed transaction */
  replayedXactSeconds?: number | null;
}

/** Where a replica streams from. Secrets come from the passfile, never from this struct's printing. */
export interface UpstreamTarget {
  /** member name of the upstream, used in logs */
  name: string;
  host: string;
  port: number;
}

export interface StartOptions {
  /** start in recovery (standby.signal) following `upstream`, or a standby with no upstream when null */
  replica: boolean;
  upstream: UpstreamTarget | null;
  /** this node's slot name on the upstream */
  slotName: string;
  /** extra postgresql.conf parameters from the dynamic config */
  parameters: Record<string, string | number | boolean>;
  /** retry the upstream every few ms, not every second (conf.ts, promotionRetryLine): a standby streaming from a switchover's target */
  shortRetry?: boolean;
  /**
   * synchronous_standby_names to write (no effect on a standby): a switchover's target names the standbys it
   * will have, so that its promotion has nothing left to write; the conf's own value is kept when absent
   */
  synchronousStandbyNames?: string;
}

export type StopMode = 'smart' | 'fast' | 'immediate';

export interface PromoteOptions {
  synchronousStandbyNames?: string;
  streamOnly?: boolean;
  /** what must be in etcd before PostgreSQL is asked to promote (the history entry, the sync key); prepared meanwhile */
  recorded?: Promise<unknown>;
  /** the caller read a moment ago that PostgreSQL runs in recovery: not asked again */
  inRecovery?: true;
}

/**
 * The agent's handle on its PostgreSQL. Methods run programs as the
 * configured OS user and never print passwords. Errors are KeelErrors with
 * code KEEL_POSTGRES_FAILED and the program's last lines of output.
 */
export interface Postgres {
  readonly dataDir: string;

  dataDirState(): Promise<DataDirState>;
  /** null when there is no data directory (or no pg_control) */
  controlData(): Promise<ControlData | null>;
  /** postmaster PID when a postmaster for this data dir is alive (postmaster.pid + kill 0), else null */
  postmasterPid(): Promise<number | null>;
  /** null when it cannot connect (not running, starting, shutting down) */
  runtimeState(): Promise<RuntimeState | null>;

  /** initdb (checksums, scram-sha-256, UTF8), writes Keel's conf files. Data dir must be missing or empty. */
  initdb(): Promise<void>;
  /** After the first start as primary: replication role, superuser password, application database and its extensions. Idempotent. */
  createClusterObjects(): Promise<void>;
  /** pg_basebackup from the upstream into the (missing or empty) data directory. */
  basebackup(from: UpstreamTarget): Promise<void>;
  /** pg_rewind against the upstream; the instance must be stopped. */
  rewind(from: UpstreamTarget): Promise<void>;
  /** Removes the data directory (used only when re-cloning our own cluster's node). */
  removeDataDir(): Promise<void>;

  /** Writes the conf files for this role and starts; resolves once it accepts connections. */
  start(options: StartOptions): Promise<void>;
  /**
   * Stops PostgreSQL. untilCheckpointed: returns once the control file says
   * "shut down" (no more WAL can be written) even if the postmaster still
   * waits for its archiver and WAL senders to finish.
   */
  stop(mode: StopMode, options?: { untilCheckpointed?: boolean }): Promise<void>;
  /**
   * Promotes a running standby and waits until it accepts writes; with
   * synchronousStandbyNames, sets them first, applied before the promotion is
   * requested; streamOnly: without restore_command (a switchover's target that
   * replayed the old leader's last WAL; conf.ts, streamOnlyLine).
   */
  promote(options?: PromoteOptions): Promise<void>;
  /** The newest timeline this data directory knows of: its own, or the highest history file in pg_wal. */
  newestTimeline(controlTimeline?: number): Promise<number>;
  /** Where PostgreSQL switched into `timeline`, from its history file in pg_wal; null without one. */
  switchPoint(timeline: number): Promise<number | null>;
  /**
   * Makes the next promotion start timeline `next` or later: PostgreSQL takes one past the newest
   * history file it finds, so the history files of timelines the cluster used elsewhere (`known`,
   * from the `history` key) are written into pg_wal where they are missing.
   */
  reserveTimelines(next: number, known: readonly { timeline: number; switchLsn: number }[]): Promise<void>;
  /** Rewrites primary_conninfo / primary_slot_name / parameters and reloads (no restart). */
  follow(options: StartOptions): Promise<void>;

  /** Physical slots: creates missing names, drops the others (never drops active slots). */
  syncSlots(wanted: string[]): Promise<void>;
  /** CHECKPOINT: before a planned shutdown, so that the shutdown checkpoint is short. */
  checkpoint(): Promise<void>;
  /** Client sessions a planned shutdown may wait for (sql.ts, busyClientsQuery), and PostgreSQL's clock; acceptQueue false leaves the accept queue unread (0). */
  busyClients(options?: { acceptQueue?: boolean }): Promise<BusyClients>;
  /** Sets synchronous_standby_names and reloads. */
  setSynchronousStandbyNames(value: string): Promise<void>;

  close(): Promise<void>;
}

/** A client session in a statement or a transaction, or still logging in. Times: PostgreSQL's clock, ms since the epoch. */
export interface BusySession {
  pid: number;
  /** when its transaction began; when it has none, when it connected */
  sinceMs: number;
  inTransaction: boolean;
}

export interface BusyClients {
  /** PostgreSQL's clock at the reading */
  nowMs: number;
  sessions: BusySession[];
  /** connections that wait for the postmaster to accept them: no process shows them yet */
  unaccepted: number;
}
