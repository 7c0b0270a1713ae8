/**
 * SQL against the local instance: one long-lived superuser connection over the
 * unix socket, and the single query that reads an instance's runtime state.
 */
import pg from 'pg';
import type { NodeConfig } from '../config/schema.js';
import type { Logger } from '../util/log.js';
import { parseLsnOrNull } from '../model/lsn.js';
import { timeIn } from '../model/parameters.js';
import type { BusyClients, BusySession, RuntimeState } from './types.js';
import { postmasterStopping } from './datadir.js';

export interface Connection {
  /** a unix socket directory (starts with /) or a host name */
  host: string;
  port: number;
  user: string;
  password: string;
  /** TLS with the server verified against this CA (PEM) and its certificate's names: libpq's verify-full */
  caPem?: string;
}

/** Connecting failed or the connection broke: the instance is down, starting or stopping. */
export class Unreachable extends Error {}

/** SQLSTATE classes 08 (connection exception) and 57 (operator intervention: shutdown, starting up). */
function isConnectionProblem(err: unknown): boolean {
  const code = (err as { code?: unknown }).code;
  return typeof code !== 'string' || code.startsWith('08') || code.startsWith('57');
}

export function newClient(target: Connection, database: string, statementTimeoutMs = 2000): pg.Client {
  const client = new pg.Client({
    host: target.host,
    port: target.port,
    user: target.user,
    password: target.password,
    database,
    application_name: 'keel-agent',
    ...(target.caPem === undefined ? {} : { ssl: { ca: target.caPem, rejectUnauthorized: true } }),
    connectionTimeoutMillis: 2000,
    statement_timeout: statementTimeoutMs,
  });
  // Without a listener a server-side disconnect would be an uncaught 'error' event.
  client.on('error', () => undefined);
  return client;
}

/** Runs `work` on a short-lived client without a statement timeout (for slow DDL and CHECKPOINT). */
export async function withClient<T>(target: Connection, database: string, work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = newClient(target, database, 0);
  try {
    try {
      await client.connect();
    } catch (err) {
      throw new Unreachable((err as Error).message);
    }
    return await work(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** What pg_rewind calls on its source server (PostgreSQL's documented minimum), plus CHECKPOINT. */
const rewindGrants = [
  'pg_catalog.pg_ls_dir(text, boolean, boolean)',
  'pg_catalog.pg_stat_file(text, boolean)',
  'pg_catalog.pg_read_binary_file(text)',
  'pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)',
  'pg_catalog.pg_control_checkpoint()',
];

/**
 * The cluster's roles, application database and extensions; safe to run again. Roles: the superuser
 * (local socket only), replication (REPLICATION, by certificate or password), pg_rewind's (the functions
 * it needs and CHECKPOINT, no superuser), and the application's, which owns the application database.
 */
export async function ensureClusterObjects(target: Connection, postgres: NodeConfig['postgres'], logger: Logger): Promise<void> {
  const { superuser, replication, rewind, app, database, extensions } = postgres;
  await withClient(target, 'postgres', async (client) => {
    const role = (name: string) => client.escapeIdentifier(name);
    const password = (value: string | undefined) => (value === undefined ? 'PASSWORD NULL' : `PASSWORD ${client.escapeLiteral(value)}`);
    const ensureRole = async (name: string, attributes: string) => {
      const exists = (await client.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [name])).rowCount;
      await client.query(`${exists ? 'ALTER' : 'CREATE'} ROLE ${role(name)} WITH ${attributes}`);
    };
    // The role statements carry passwords: keep them out of postgres.log even when they fail.
    await client.query("SET log_statement = 'none'; SET log_min_error_statement = 'panic'; SET log_min_duration_statement = -1");
    await client.query(`ALTER ROLE ${role(superuser.username)} WITH ${password(superuser.password)}`);
    await ensureRole(replication.username, `REPLICATION LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE ${password(replication.password)}`);
    if (rewind) {
      await ensureRole(rewind.username, `LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION ${password(rewind.password)}`);
      for (const fn of rewindGrants) await client.query(`GRANT EXECUTE ON FUNCTION ${fn} TO ${role(rewind.username)}`);
      await client.query(`GRANT pg_checkpoint TO ${role(rewind.username)}`);
    }
    if (app) await ensureRole(app.username, `LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION ${password(app.password)}`);
    const hasDatabase = (await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [database])).rowCount;
    if (!hasDatabase) {
      logger.info({ database }, 'creating the application database');
      await client.query(`CREATE DATABASE ${role(database)}${app ? ` OWNER ${role(app.username)}` : ''}`);
    } else if (app) {
      await client.query(`ALTER DATABASE ${role(database)} OWNER TO ${role(app.username)}`);
    }
  });
  await withClient(target, database, async (client) => {
    for (const extension of extensions) {
      await client.query(`CREATE EXTENSION IF NOT EXISTS ${client.escapeIdentifier(extension)}`);
    }
  });
}

/**
 * PostgreSQL 15's pg_rewind takes the source's timeline from its control
 * file, which still names the old timeline until the first checkpoint after
 * promotion; it would then report "no rewind required" for a diverged target.
 */
export async function checkpointIfTimelineLags(source: Connection, logger: Logger): Promise<void> {
  await withClient(source, 'postgres', async (client) => {
    const { rows } = await client.query<{ checkpoint_tli: number; current_tli: number | null }>(`
      SELECT (SELECT timeline_id FROM pg_control_checkpoint()) AS checkpoint_tli,
             CASE WHEN pg_is_in_recovery() THEN NULL
                  ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END AS current_tli`);
    const row = rows[0];
    if (row && row.current_tli !== null && row.checkpoint_tli < row.current_tli) {
      logger.info({ checkpointTimeline: row.checkpoint_tli, timeline: row.current_tli }, 'CHECKPOINT on the rewind source');
      await client.query('CHECKPOINT');
    }
  });
}

/**
 * Keeps one client; a broken one is dropped and the next call reconnects,
 * unless `dataDir`'s postmaster is shutting down: it would refuse the new
 * connection anyway (a client still connected goes on, as a smart shutdown
 * lets it).
 */
export class LocalSession {
  private client: pg.Client | null = null;
  private connecting: Promise<pg.Client> | null = null;

  constructor(
    private readonly target: Connection,
    private readonly logger: Logger,
    private readonly dataDir: string | null = null,
  ) {}

  private connect(): Promise<pg.Client> {
    if (this.client) return Promise.resolve(this.client);
    this.connecting ??= (async () => {
      if (this.dataDir !== null && (await postmasterStopping(this.dataDir))) throw new Unreachable('the postmaster is shutting down');
      const client = newClient(this.target, 'postgres');
      client.on('error', (err) => {
        this.logger.debug({ err: err.message }, 'local PostgreSQL connection broke');
        if (this.client === client) this.client = null;
      });
      client.on('end', () => {
        if (this.client === client) this.client = null;
      });
      try {
        await client.connect();
      } catch (err) {
        client.end().catch(() => undefined);
        throw new Unreachable((err as Error).message);
      }
      this.client = client;
      return client;
    })().finally(() => {
      this.connecting = null;
    });
    return this.connecting;
  }

  /** Throws Unreachable when the instance cannot be reached; other SQL errors as they are. */
  async query<Row extends object>(text: string, values: unknown[] = []): Promise<Row[]> {
    const client = await this.connect();
    try {
      const result = await client.query<Row>(text, values);
      return result.rows;
    } catch (err) {
      if (isConnectionProblem(err)) {
        this.drop(client);
        throw new Unreachable((err as Error).message);
      }
      throw err;
    }
  }

  private drop(client: pg.Client): void {
    if (this.client === client) this.client = null;
    client.end().catch(() => undefined);
  }

  async close(): Promise<void> {
    const client = this.client ?? (await this.connecting?.catch(() => null)) ?? null;
    this.client = null;
    if (client) await client.end().catch(() => undefined);
  }
}

/**
 * Client sessions a planned shutdown waits for, this one aside: sessions of
 * the last 10 s in a statement or a transaction or still logging in, and
 * those of the last 2 s yet to send their first statement (a client that
 * opens a connection per transaction or per request, routed just before the
 * routers held new ones). Not older ones: a long-lived session ends with the
 * shutdown whatever it does then (its client sees one error either way; the
 * pooled endpoint is for those). Each with when its transaction began (when
 * it connected, while it has none), so the drain waits for the work in flight
 * at the hold and not for what a session starts after it (agent/drain.ts).
 * One row with null columns when there is none: PostgreSQL's clock comes
 * anyway.
 */
export const busyClientsQuery = `
SELECT (extract(epoch FROM clock_timestamp()) * 1000)::float8 AS now_ms, s.pid, s.since_ms, s.in_transaction
FROM (SELECT 1) AS one LEFT JOIN (
  SELECT pid, (extract(epoch FROM coalesce(xact_start, backend_start)) * 1000)::float8 AS since_ms, xact_start IS NOT NULL AS in_transaction
  FROM pg_stat_activity
  WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
    AND ((state IS DISTINCT FROM 'idle' AND backend_start > clock_timestamp() - interval '10 seconds')
      OR (query = '' AND backend_start > clock_timestamp() - interval '2 seconds'))
) AS s ON true`;

export interface BusyRow {
  now_ms: number;
  pid: number | null;
  since_ms: number | null;
  in_transaction: boolean | null;
}

/** busyClientsQuery's rows, with the backends still starting and the connections not accepted yet, which it cannot show (postmaster.ts). */
export function toBusyClients(rows: readonly BusyRow[], starting: readonly number[], unaccepted: number): BusyClients {
  const nowMs = rows[0]?.now_ms ?? 0;
  const sessions: BusySession[] = rows.flatMap((r) => (r.pid === null ? [] : [{ pid: r.pid, sinceMs: r.since_ms ?? 0, inTransaction: r.in_transaction === true }]));
  const listed = new Set(sessions.map((s) => s.pid));
  for (const pid of starting) if (!listed.has(pid)) sessions.push({ pid, sinceMs: nowMs, inTransaction: false });
  return { nowMs, sessions, unaccepted };
}

export const physicalSlotsQuery = "SELECT slot_name::text AS name, active FROM pg_replication_slots WHERE slot_type = 'physical'";

/**
 * What a loop reads of PostgreSQL, in one statement (each agent runs it every
 * loop, and every few ms while it waits during a switchover). The replicas come
 * from pg_stat_get_wal_senders() and each sender's own activity row, not from
 * pg_stat_replication, which builds the whole of pg_stat_activity first; the
 * retry interval from current_setting(), not pg_settings, which builds every
 * setting: ~4.5 ms of the server's CPU a reading before, ~1.5 ms now.
 */
export const runtimeStateQuery = `
SELECT
  r.in_recovery,
  CASE WHEN r.in_recovery THEN NULL ELSE pg_current_wal_lsn()::text END AS wal_lsn,
  CASE WHEN r.in_recovery THEN NULL
       ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END AS primary_timeline,
  CASE WHEN r.in_recovery THEN pg_last_wal_receive_lsn()::text END AS received_lsn,
  CASE WHEN r.in_recovery THEN pg_last_wal_replay_lsn()::text END AS replayed_lsn,
  (SELECT timeline_id FROM pg_control_checkpoint()) AS checkpoint_timeline,
  w.status AS receiver_status, w.received_tli, w.sender_host, w.sender_port,
  (SELECT coalesce(json_agg(json_build_object(
            'applicationName', a.application_name, 'flushLsn', s.flush_lsn::text,
            'state', s.state, 'syncState', s.sync_state) ORDER BY a.application_name), '[]')
     FROM pg_stat_get_wal_senders() s CROSS JOIN LATERAL pg_stat_get_activity(s.pid) a) AS replicas,
  (SELECT coalesce(json_agg(slot_name::text ORDER BY slot_name), '[]')
     FROM pg_replication_slots WHERE slot_type = 'physical') AS slots,
  current_setting('primary_conninfo') AS primary_conninfo,
  current_setting('primary_slot_name') AS primary_slot_name,
  current_setting('synchronous_standby_names') AS synchronous_standby_names,
  current_setting('wal_retrieve_retry_interval') AS retry_interval,
  current_setting('server_version_num')::int AS server_version_num,
  extract(epoch FROM pg_postmaster_start_time())::float8 AS postmaster_start_seconds,
  CASE WHEN r.in_recovery THEN pg_is_wal_replay_paused() ELSE false END AS replay_paused,
  CASE WHEN r.in_recovery THEN extract(epoch FROM pg_last_xact_replay_timestamp())::float8 END AS replayed_xact_seconds
FROM (SELECT pg_is_in_recovery() AS in_recovery) r
LEFT JOIN pg_stat_wal_receiver w ON true`;

export interface RuntimeRow {
  in_recovery: boolean;
  wal_lsn: string | null;
  primary_timeline: number | null;
  received_lsn: string | null;
  replayed_lsn: string | null;
  checkpoint_timeline: number;
  receiver_status: string | null;
  received_tli: number | null;
  sender_host: string | null;
  sender_port: number | null;
  replicas: { applicationName: string; flushLsn: string | null; state: string; syncState: string }[];
  slots: string[];
  primary_conninfo: string;
  primary_slot_name: string;
  synchronous_standby_names: string;
  /** as SHOW gives it: '17ms', '1s', '5min' */
  retry_interval: string;
  server_version_num: number;
  postmaster_start_seconds: number;
  replay_paused: boolean;
  replayed_xact_seconds: number | null;
}

export function toRuntimeState(row: RuntimeRow): RuntimeState {
  const inRecovery = row.in_recovery;
  return {
    inRecovery,
    // A primary's checkpoint timeline lags right after promotion; its current WAL file name does not.
    timeline: inRecovery ? (row.received_tli ?? row.checkpoint_timeline) : (row.primary_timeline ?? row.checkpoint_timeline),
    walLsn: parseLsnOrNull(row.wal_lsn),
    receivedLsn: parseLsnOrNull(row.received_lsn),
    replayedLsn: parseLsnOrNull(row.replayed_lsn),
    streaming: inRecovery && row.receiver_status === 'streaming',
    upstreamHost: inRecovery ? row.sender_host : null,
    upstreamPort: inRecovery ? row.sender_port : null,
    replicas: row.replicas.map((r) => ({
      applicationName: r.applicationName,
      flushLsn: parseLsnOrNull(r.flushLsn),
      state: r.state,
      syncState: r.syncState,
    })),
    slots: row.slots,
    primaryConninfo: row.primary_conninfo,
    primarySlotName: row.primary_slot_name,
    synchronousStandbyNames: row.synchronous_standby_names,
    walRetrieveRetryMs: timeIn('ms', row.retry_interval),
    serverVersionNum: row.server_version_num,
    postmasterStartSeconds: row.postmaster_start_seconds,
    replayPaused: row.replay_paused,
    replayedXactSeconds: row.replayed_xact_seconds,
  };
}
