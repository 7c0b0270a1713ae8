/**
 * The load every fault runs under: writers that insert unique ids through the
 * router's rw endpoint (some on one persistent connection, some on a new
 * connection per transaction), readers on the ro endpoint, and direct
 * writers that bypass the router and connect straight to the nodes'
 * PostgreSQL addresses: one persistent connection per node, retrying its node
 * whatever it is, and connection-per-transaction writers to the node that led
 * when the run began. A router follows the leader key; a direct client is what
 * an old primary that kept accepting writes would really be serving. Every
 * write is recorded with what the server said about itself inside the
 * transaction, so the checker can tell who acknowledged it and when.
 */
import pg from 'pg';
import { sleep } from '../../src/util/clock.js';

export const tableSql = `CREATE TABLE IF NOT EXISTS chaos_writes (
  id bigint PRIMARY KEY,
  run int NOT NULL,
  writer int NOT NULL,
  at timestamptz NOT NULL DEFAULT clock_timestamp()
)`;

/**
 * One statement, one transaction. RETURNING runs before the commit, so
 * stmt_ms is a moment at which the transaction was still running on `server`.
 */
const insertSql = `INSERT INTO chaos_writes (id, run, writer) VALUES ($1, $2, $3)
RETURNING host(inet_server_addr()) AS server,
  (extract(epoch FROM clock_timestamp()) * 1000)::float8 AS stmt_ms,
  ('x' || substr(pg_walfile_name(pg_current_wal_insert_lsn()), 1, 8))::bit(32)::int AS timeline,
  pg_current_wal_insert_lsn()::text AS lsn`;

const readSql = `SELECT pg_is_in_recovery() AS recovery, host(inet_server_addr()) AS server,
  (SELECT count(*) FROM chaos_writes WHERE run = $1)::int AS rows`;

export interface Endpoint {
  host: string;
  port: number;
}

export type ClientKind = 'router' | 'direct';

export interface WriteRecord {
  id: number;
  writer: number;
  mode: 'persistent' | 'per-transaction';
  /** through the router's rw endpoint, or straight to one node's PostgreSQL */
  via: ClientKind;
  /** the node a direct writer connects to */
  node?: string;
  sentMs: number;
  doneMs: number;
  /** the client got the commit's answer: an acknowledged write */
  ok: boolean;
  server?: string;
  stmtMs?: number;
  timeline?: number;
  lsn?: string;
  error?: string;
  /** a notice that came with the answer, e.g. a cancelled synchronous-replication wait */
  notice?: string;
  /** refused by a server in recovery (a direct writer on a replica); the connection stays usable */
  readOnly?: boolean;
}

export interface ReadStats {
  ok: number;
  failed: number;
  /** moments of successful reads, for the ro availability gap */
  okTimesMs: number[];
  /** servers that answered ro while not in recovery (the leader as fallback) */
  fromPrimary: number;
}

export interface DirectTarget extends Endpoint {
  node: string;
}

export interface WorkloadOptions {
  rw: Endpoint;
  ro: Endpoint;
  password: string;
  run: number;
  persistentWriters: number;
  perTransactionWriters: number;
  readers: number;
  /** one persistent direct writer per node listed */
  directNodes: DirectTarget[];
  /** the node that led when the run began: target of the direct connection-per-transaction writers */
  directLeader: DirectTarget | null;
  directPerTransactionWriters: number;
  /** pause between two operations of one worker */
  thinkMs: number;
}

/** Where one writer sends its inserts. */
interface WriterTarget {
  endpoint: Endpoint;
  via: ClientKind;
  node?: string;
}

/** Ids are run * 10^7 + writer * 10^6 + seq: at most 10 writers per run. */
const maxWriters = 10;

/** SQLSTATE read_only_sql_transaction: a direct writer reached a replica, its connection is fine. */
const readOnlyState = '25006';

const clientConfig = (endpoint: Endpoint, password: string, via: ClientKind = 'router'): pg.ClientConfig => ({
  host: endpoint.host,
  port: endpoint.port,
  user: 'postgres',
  password,
  database: 'app',
  application_name: via === 'router' ? 'keel-chaos' : 'keel-chaos-direct',
  // a router holds new connections while it waits for a leader; a node answers at once or not at all
  connectionTimeoutMillis: via === 'router' ? 10_000 : 3000,
  // client-side bound: a write stuck behind a partition or a frozen backend gives up (outcome unknown)
  query_timeout: 8000,
  keepAlive: true,
});

/** Drops a client at once, without waiting for a goodbye a dead peer would never send. */
function discard(client: pg.Client): void {
  const stream = (client as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream;
  stream?.destroy();
  void client.end().catch(() => undefined);
}

const message = (err: unknown): string => (err instanceof Error ? err.message : String(err)).slice(0, 200);

export class Workload {
  readonly writes: WriteRecord[] = [];
  readonly reads: ReadStats = { ok: 0, failed: 0, okTimesMs: [], fromPrimary: 0 };
  private stopping = false;
  private loops: Promise<void>[] = [];

  constructor(private readonly options: WorkloadOptions) {}

  start(): void {
    const { persistentWriters, perTransactionWriters, readers, directNodes, directLeader, directPerTransactionWriters } = this.options;
    const router: WriterTarget = { endpoint: this.options.rw, via: 'router' };
    const direct = (t: DirectTarget): WriterTarget => ({ endpoint: { host: t.host, port: t.port }, via: 'direct', node: t.node });
    const persistent = [...Array<WriterTarget>(persistentWriters).fill(router), ...directNodes.map(direct)];
    const perTransaction = [...Array<WriterTarget>(perTransactionWriters).fill(router)];
    if (directLeader !== null) perTransaction.push(...Array<WriterTarget>(directPerTransactionWriters).fill(direct(directLeader)));
    if (persistent.length + perTransaction.length > maxWriters) throw new Error(`at most ${maxWriters} writers per run (ids would collide)`);
    let writer = 0;
    for (const target of persistent) this.loops.push(this.persistentWriter(writer++, target));
    for (const target of perTransaction) this.loops.push(this.perTransactionWriter(writer++, target));
    for (let i = 0; i < readers; i++) this.loops.push(this.reader());
  }

  /** Stops every loop; in-flight operations end within their own timeouts. */
  async stop(): Promise<void> {
    this.stopping = true;
    await Promise.all(this.loops);
  }

  acked(via?: ClientKind): WriteRecord[] {
    return this.writes.filter((w) => w.ok && (via === undefined || w.via === via));
  }

  private idOf(writer: number, seq: number): number {
    return this.options.run * 10_000_000 + writer * 1_000_000 + seq;
  }

  private async insert(client: pg.Client, writer: number, seq: number, mode: WriteRecord['mode'], target: WriterTarget, notices: string[]): Promise<WriteRecord> {
    const id = this.idOf(writer, seq);
    const sentMs = Date.now();
    const who = target.node === undefined ? { via: target.via } : { via: target.via, node: target.node };
    notices.length = 0;
    try {
      const res = await client.query<{ server: string; stmt_ms: number; timeline: number; lsn: string }>(insertSql, [id, this.options.run, writer]);
      const row = res.rows[0]!;
      const record: WriteRecord = {
        id, writer, mode, ...who, sentMs, doneMs: Date.now(), ok: true,
        server: row.server, stmtMs: Number(row.stmt_ms), timeline: row.timeline, lsn: row.lsn,
      };
      if (notices.length > 0) record.notice = notices.join(' | ');
      return record;
    } catch (err) {
      const record: WriteRecord = { id, writer, mode, ...who, sentMs, doneMs: Date.now(), ok: false, error: message(err) };
      if ((err as { code?: string }).code === readOnlyState) record.readOnly = true;
      return record;
    }
  }

  private async persistentWriter(writer: number, target: WriterTarget): Promise<void> {
    let client: pg.Client | null = null;
    const notices: string[] = [];
    for (let seq = 0; !this.stopping; ) {
      if (client === null) {
        const fresh = new pg.Client(clientConfig(target.endpoint, this.options.password, target.via));
        fresh.on('error', () => undefined);
        fresh.on('notice', (msg) => notices.push(msg.message ?? ''));
        try {
          await fresh.connect();
          client = fresh;
        } catch {
          discard(fresh);
          await sleep(100);
          continue;
        }
      }
      const record = await this.insert(client, writer, seq++, 'persistent', target, notices);
      this.writes.push(record);
      if (record.readOnly) {
        // a replica: keep the session, as an application would, and try again (it may be promoted)
        await sleep(200);
      } else if (!record.ok) {
        discard(client);
        client = null;
        await sleep(100);
      } else {
        await sleep(this.options.thinkMs);
      }
    }
    if (client !== null) await client.end().catch(() => undefined);
  }

  private async perTransactionWriter(writer: number, target: WriterTarget): Promise<void> {
    const notices: string[] = [];
    for (let seq = 0; !this.stopping; ) {
      const client = new pg.Client(clientConfig(target.endpoint, this.options.password, target.via));
      client.on('error', () => undefined);
      client.on('notice', (msg) => notices.push(msg.message ?? ''));
      try {
        await client.connect();
      } catch {
        discard(client);
        await sleep(100);
        continue;
      }
      const record = await this.insert(client, writer, seq++, 'per-transaction', target, notices);
      this.writes.push(record);
      discard(client);
      await sleep(record.ok ? this.options.thinkMs : record.readOnly ? 200 : 100);
    }
  }

  private async reader(): Promise<void> {
    let client: pg.Client | null = null;
    while (!this.stopping) {
      try {
        if (client === null) {
          const fresh = new pg.Client(clientConfig(this.options.ro, this.options.password));
          fresh.on('error', () => undefined);
          client = fresh;
          await fresh.connect();
        }
        const res = await client.query<{ recovery: boolean }>(readSql, [this.options.run]);
        this.reads.ok += 1;
        this.reads.okTimesMs.push(Date.now());
        if (res.rows[0]?.recovery === false) this.reads.fromPrimary += 1;
        await sleep(this.options.thinkMs * 2);
      } catch {
        this.reads.failed += 1;
        if (client !== null) discard(client);
        client = null;
        await sleep(100);
      }
    }
    if (client !== null) await client.end().catch(() => undefined);
  }
}
