/**
 * A writer commits one statement per transaction, on one persistent
 * connection or a new connection per transaction, and records every
 * statement it sent: what it wrote, when, whether the commit was
 * acknowledged, and what the server said about itself inside the
 * transaction. What to write is the caller's (`next`); the acknowledged-row
 * table below serves the checks of the fault suite, the benches and the tests.
 */
import type pg from 'pg';
import { describeError } from '../errors.js';
import { connectionLoop } from './connect.js';
import type { ClientKind, WriteMode, WriteRecord } from './records.js';

/**
 * Facts about the server, read inside the transaction. RETURNING runs before
 * the commit, so stmt_ms is a moment at which the transaction was still
 * running on `server`.
 */
export const serverFactsSql = `host(inet_server_addr()) AS server, inet_server_port() AS server_port,
  (extract(epoch FROM clock_timestamp()) * 1000)::float8 AS stmt_ms,
  ('x' || substr(pg_walfile_name(pg_current_wal_insert_lsn()), 1, 8))::bit(32)::int AS timeline,
  pg_current_wal_insert_lsn()::text AS lsn`;

/** A table of rows written one per transaction, each keyed by the id its writer chose. */
export function ackTableSql(table: string): string {
  return `CREATE TABLE IF NOT EXISTS ${table} (
  id bigint PRIMARY KEY,
  run int NOT NULL,
  writer int NOT NULL,
  at timestamptz NOT NULL DEFAULT clock_timestamp()
)`;
}

/** Ids are run * 10^7 + writer * 10^6 + seq: at most 10 writers per run, 10^6 rows each. */
export const maxWritersPerRun = 10;

export function ackRowId(run: number, writer: number, seq: number): number {
  return run * 10_000_000 + writer * 1_000_000 + seq;
}

/** What a writer sends next. */
export interface WriteStep {
  /** a statement with a name is prepared once per connection */
  statement: pg.QueryConfig;
  /** the row's id when the writer chose it; otherwise the answer's `id` column */
  id?: number;
  kind?: string;
}

/** One row per transaction into an ack table, answering with the server's facts. Ids are chosen here, not by a sequence: a sequence could hand one out twice across a failover. */
export function ackRowSteps(table: string, run: number, writer: number): (seq: number) => WriteStep {
  if (writer < 0 || writer >= maxWritersPerRun) throw new Error(`writer ${writer}: at most ${maxWritersPerRun} writers per run (ids would collide)`);
  const text = `INSERT INTO ${table} (id, run, writer) VALUES ($1, $2, $3) RETURNING ${serverFactsSql}`;
  return (seq) => {
    const id = ackRowId(run, writer, seq);
    return { statement: { text, values: [id, run, writer] }, id };
  };
}

export interface WriterOptions {
  connection: pg.ClientConfig;
  mode: WriteMode;
  /** this writer's number in its records */
  writer: number;
  via: ClientKind;
  /** the node a direct writer connects to */
  node?: string;
  /** seq counts this writer's statements from 0 */
  next: (seq: number) => WriteStep;
  /** every statement's record, acknowledged or not, in order; latencyMs from the monotonic clock */
  onRecord?: (record: WriteRecord, latencyMs: number) => void;
  /** keep every record in `records` too (a run of minutes; a workload of hours keeps only what it checks) */
  keepRecords?: boolean;
  /** a connection that could not be made: nothing was sent, so there is no record */
  onConnectFailure?: (err: unknown) => void;
  /** pause after an acknowledged write */
  thinkMs: number;
  /** pause after a failure */
  retryMs: number;
  /**
   * A server in recovery refused the write: with this set, a persistent writer
   * keeps its session, as an application tied to one node would (the node may
   * be promoted), and tries again after this long; without it, the refusal is
   * a failure like any other.
   */
  readOnlyRetryMs?: number;
}

/** SQLSTATE read_only_sql_transaction: the server is in recovery, the connection is fine. */
const readOnlyState = '25006';

const message = (err: unknown): string => describeError(err).slice(0, 200);

type FactsRow = { id?: string | number; server?: string; server_port?: number; stmt_ms?: number | string; timeline?: number; lsn?: string };

export class Writer {
  readonly records: WriteRecord[] = [];
  /** connections that could not be made */
  connectFailures = 0;
  private stopping = false;
  private loop: Promise<void> | null = null;
  private seq = 0;

  constructor(private readonly o: WriterOptions) {}

  start(): void {
    this.loop ??= connectionLoop({
      connection: this.o.connection,
      stopped: () => this.stopping,
      onConnectFailure: (err) => {
        this.connectFailures += 1;
        this.o.onConnectFailure?.(err);
      },
      retryMs: this.o.retryMs,
      step: async (client, notices) => {
        const record = await this.write(client, notices);
        const readOnlyKept = record.readOnly === true && this.o.readOnlyRetryMs !== undefined;
        return {
          keep: this.o.mode === 'persistent' && (record.ok || readOnlyKept),
          pauseMs: record.ok ? this.o.thinkMs : readOnlyKept ? this.o.readOnlyRetryMs! : this.o.retryMs,
        };
      },
    });
  }

  /** Stops the loop; a statement in flight ends within the connection's own timeouts. */
  async stop(): Promise<void> {
    this.stopping = true;
    await this.loop;
  }

  private async write(client: pg.Client, notices: string[]): Promise<WriteRecord> {
    const step = this.o.next(this.seq++);
    const { writer, mode, via, node } = this.o;
    const base = { writer, mode, via, ...(node === undefined ? {} : { node }), ...(step.kind === undefined ? {} : { kind: step.kind }) };
    const sentMs = Date.now();
    const started = performance.now();
    notices.length = 0;
    let record: WriteRecord;
    try {
      const res = await client.query<FactsRow>(step.statement);
      const row = res.rows[0] ?? {};
      record = { id: step.id ?? Number(row.id), ...base, sentMs, doneMs: Date.now(), ok: true };
      if (res.rowCount !== null) record.rowCount = res.rowCount;
      if (row.server !== undefined) record.server = row.server;
      if (row.server_port !== undefined) record.serverPort = row.server_port;
      if (row.stmt_ms !== undefined) record.stmtMs = Number(row.stmt_ms);
      if (row.timeline !== undefined) record.timeline = row.timeline;
      if (row.lsn !== undefined) record.lsn = row.lsn;
      if (notices.length > 0) record.notice = notices.join(' | ');
    } catch (err) {
      record = { id: step.id ?? NaN, ...base, sentMs, doneMs: Date.now(), ok: false, error: message(err) };
      if ((err as { code?: string }).code === readOnlyState) record.readOnly = true;
    }
    if (this.o.keepRecords) this.records.push(record);
    this.o.onRecord?.(record, performance.now() - started);
    return record;
  }
}
