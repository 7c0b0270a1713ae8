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
 * transaction, so the checker can tell who acknowledged it and when. The
 * writers and readers are the shared ones (src/workload); the mix is the suite's.
 */
import type pg from 'pg';
import { loginConfig, type Login } from '../../src/workload/connect.js';
import type { ClientKind, WriteRecord } from '../../src/workload/records.js';
import { Reader } from '../../src/workload/reader.js';
import { ackRowSteps, ackTableSql, maxWritersPerRun, Writer } from '../../src/workload/writer.js';

export const tableName = 'chaos_writes';
export const tableSql = ackTableSql(tableName);

const readSql = `SELECT pg_is_in_recovery() AS recovery, host(inet_server_addr()) AS server,
  (SELECT count(*) FROM chaos_writes WHERE run = $1)::int AS rows`;

export interface Endpoint {
  host: string;
  port: number;
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
  /** the application role over TLS (verify-full), as applications log in */
  login: Login;
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

const clientConfig = (endpoint: Endpoint, login: Login, via: ClientKind = 'router'): pg.ClientConfig => ({
  ...loginConfig(login, endpoint.host, endpoint.port),
  application_name: via === 'router' ? 'keel-chaos' : 'keel-chaos-direct',
  // a router holds new connections while it waits for a leader; a node answers at once or not at all
  connectionTimeoutMillis: via === 'router' ? 10_000 : 3000,
  // client-side bound: a write stuck behind a partition or a frozen backend gives up (outcome unknown)
  query_timeout: 8000,
  keepAlive: true,
});

export class Workload {
  readonly writes: WriteRecord[] = [];
  readonly reads: ReadStats = { ok: 0, failed: 0, okTimesMs: [], fromPrimary: 0 };
  private readonly workers: (Writer | Reader)[] = [];

  constructor(private readonly options: WorkloadOptions) {}

  start(): void {
    const { persistentWriters, perTransactionWriters, readers, directNodes, directLeader, directPerTransactionWriters } = this.options;
    const router: WriterTarget = { endpoint: this.options.rw, via: 'router' };
    const direct = (t: DirectTarget): WriterTarget => ({ endpoint: { host: t.host, port: t.port }, via: 'direct', node: t.node });
    const persistent = [...Array<WriterTarget>(persistentWriters).fill(router), ...directNodes.map(direct)];
    const perTransaction = [...Array<WriterTarget>(perTransactionWriters).fill(router)];
    if (directLeader !== null) perTransaction.push(...Array<WriterTarget>(directPerTransactionWriters).fill(direct(directLeader)));
    if (persistent.length + perTransaction.length > maxWritersPerRun) throw new Error(`at most ${maxWritersPerRun} writers per run (ids would collide)`);
    let writer = 0;
    for (const target of persistent) this.workers.push(this.writer(writer++, 'persistent', target));
    for (const target of perTransaction) this.workers.push(this.writer(writer++, 'per-transaction', target));
    for (let i = 0; i < readers; i++) this.workers.push(this.reader());
    for (const worker of this.workers) worker.start();
  }

  /** Stops every loop; in-flight operations end within their own timeouts. */
  async stop(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.stop()));
  }

  acked(via?: ClientKind): WriteRecord[] {
    return this.writes.filter((w) => w.ok && (via === undefined || w.via === via));
  }

  private writer(writer: number, mode: WriteRecord['mode'], target: WriterTarget): Writer {
    return new Writer({
      connection: clientConfig(target.endpoint, this.options.login, target.via),
      mode,
      writer,
      via: target.via,
      ...(target.node === undefined ? {} : { node: target.node }),
      next: ackRowSteps(tableName, this.options.run, writer),
      onRecord: (record) => this.writes.push(record),
      thinkMs: this.options.thinkMs,
      retryMs: 100,
      // a direct writer on a replica keeps its session, as an application would, and tries again (it may be promoted)
      readOnlyRetryMs: 200,
    });
  }

  private reader(): Reader {
    return new Reader({
      connection: clientConfig(this.options.ro, this.options.login),
      read: async (client) => {
        const res = await client.query<{ recovery: boolean }>(readSql, [this.options.run]);
        this.reads.ok += 1;
        this.reads.okTimesMs.push(Date.now());
        if (res.rows[0]?.recovery === false) this.reads.fromPrimary += 1;
      },
      onFailure: () => {
        this.reads.failed += 1;
      },
      thinkMs: this.options.thinkMs * 2,
      retryMs: 100,
    });
  }
}
