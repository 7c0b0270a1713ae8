/**
 * A writer that commits one row per transaction on a fresh connection, as a
 * web request without a pool would, and remembers every row whose commit was
 * acknowledged. Afterwards `lost()` says which acknowledged rows a server does
 * not have: the figure synchronous replication promises to keep at zero.
 */
import pg from 'pg';
import { sleep } from '../src/util/clock.js';

export const ackTableSql = 'CREATE TABLE IF NOT EXISTS bench_acks (run int NOT NULL, n int NOT NULL, at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (run, n))';

export interface Ack {
  /** the writer's own number for the row: ids from a sequence could be handed out twice across a failover */
  n: number;
  atMs: number;
  /** the PostgreSQL server that committed it (seen through the router) */
  serverPort: number;
}

export interface AckWriterOptions {
  port: number;
  password: string;
  /** rows of one run are told apart from other runs' by this number */
  run: number;
  connectTimeoutMs?: number;
  /** a commit waiting this long for a synchronous standby is given up (not acknowledged) */
  queryTimeoutMs?: number;
  /** between two commits: leaves the machine's CPUs to the cluster */
  pauseMs?: number;
}

export class AckWriter {
  readonly acks: Ack[] = [];
  errors = 0;
  readonly errorMessages = new Set<string>();
  private next = 1;
  private stopping = false;
  private loop: Promise<void> | null = null;

  constructor(private readonly o: AckWriterOptions) {}

  start(): void {
    this.loop ??= this.run();
  }

  async stop(): Promise<void> {
    this.stopping = true;
    await this.loop;
  }

  /** The first acknowledged commit at or after `sinceMs` from a server other than `notPort`. */
  firstAckAfter(sinceMs: number, notPort: number): Ack | undefined {
    return this.acks.find((a) => a.atMs >= sinceMs && a.serverPort !== notPort);
  }

  /** Acknowledged rows missing on the server at `port`. */
  async lost(port: number): Promise<number[]> {
    const client = this.client(port, 10_000);
    try {
      await client.connect();
      const rows = (await client.query<{ n: number }>('SELECT n FROM bench_acks WHERE run = $1', [this.o.run])).rows;
      const present = new Set(rows.map((r) => r.n));
      return this.acks.map((a) => a.n).filter((n) => !present.has(n));
    } finally {
      await client.end().catch(() => undefined);
    }
  }

  private client(port: number, queryTimeoutMs: number): pg.Client {
    const client = new pg.Client({
      host: '127.0.0.1',
      port,
      user: 'postgres',
      password: this.o.password,
      database: 'app',
      connectionTimeoutMillis: this.o.connectTimeoutMs ?? 2000,
      query_timeout: queryTimeoutMs,
    });
    // a server that dies mid-query fails the query; the event itself needs no handling
    client.on('error', () => undefined);
    return client;
  }

  private async run(): Promise<void> {
    while (!this.stopping) {
      const n = this.next++;
      const client = this.client(this.o.port, this.o.queryTimeoutMs ?? 10_000);
      try {
        await client.connect();
        const result = await client.query<{ port: number }>('INSERT INTO bench_acks (run, n) VALUES ($1, $2) RETURNING inet_server_port() AS port', [this.o.run, n]);
        this.acks.push({ n, atMs: Date.now(), serverPort: result.rows[0]!.port });
      } catch (err) {
        this.errors += 1;
        if (this.errorMessages.size < 5) this.errorMessages.add(err instanceof Error ? err.message : String(err));
        // a refused connection fails at once: no busy loop while nothing listens
        await sleep(50);
      } finally {
        await client.end().catch(() => undefined);
      }
      await sleep(this.o.pauseMs ?? 10);
    }
  }
}
