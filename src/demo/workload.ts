/**
 * The demo's application: writers add and expire deals through rw, readers ask
 * for the nearest open deals through ro. Each worker holds one connection, as
 * a pooled web worker would, and reconnects after any error: that reconnect
 * is what an application sees of a failover. The writers and readers are the
 * shared ones (src/workload); the deals, their SQL and the live figures are
 * the demo's.
 */
import type pg from 'pg';
import { describeError } from '../errors.js';
import { AckLog } from '../workload/acks.js';
import { clientConfig, type Endpoint } from '../workload/connect.js';
import { Reader } from '../workload/reader.js';
import type { WriteRecord } from '../workload/records.js';
import { Writer, type WriteStep } from '../workload/writer.js';
import { expireDealSql, insertDealSql, nearestDealsSql, randomDeal, randomPoint, seededRandom, type Random } from './dataset.js';
import { OpStats, PauseTracker } from './stats.js';

export interface WorkloadOptions {
  rw: Endpoint;
  ro: Endpoint;
  writers: number;
  readers: number;
  seed: number;
}

/** The kind of the records of an expiration; the others insert a deal. */
export const expireKind = 'expire';

/**
 * Writers pace themselves: deals are written far less often than they are
 * searched, and unpaced writers would starve the readers on a small machine.
 * 10 ms still measures a write pause to within 10 ms.
 */
const writeIntervalMs = 10;
const reconnectDelayMs = 250;
const connectTimeoutMs = 5000;
/** a statement stuck on a dead server counts as an error instead of freezing its worker */
const queryTimeoutMs = 5000;

function workerConnection(endpoint: Endpoint): pg.ClientConfig {
  return { ...clientConfig(endpoint), connectionTimeoutMillis: connectTimeoutMs, query_timeout: queryTimeoutMs, application_name: 'keel-demo', keepAlive: true };
}

export class Workload {
  readonly reads = new OpStats();
  readonly writes = new OpStats();
  /** every change the database acknowledged: checked against the final leader at the end */
  readonly acked = new AckLog();
  readonly pause: PauseTracker;
  inserts = 0;
  expirations = 0;
  lastError: { what: string; message: string; atMs: number } | null = null;
  private readonly workers: (Writer | Reader)[] = [];

  constructor(private readonly options: WorkloadOptions, private readonly now: () => number = Date.now) {
    this.pause = new PauseTracker(now());
  }

  start(): void {
    for (let i = 0; i < this.options.writers; i++) this.workers.push(this.writer(i, seededRandom(this.options.seed * 1000 + i)));
    for (let i = 0; i < this.options.readers; i++) this.workers.push(this.reader(seededRandom(this.options.seed * 1000 + 500 + i)));
    for (const worker of this.workers) worker.start();
  }

  /** Lets every worker finish its statement (bounded by the query timeout), then closes the connections. */
  async stop(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.stop()));
  }

  private writer(index: number, random: Random): Writer {
    const mine: number[] = [];
    const next = (): WriteStep => {
      // one write in four expires a deal this writer made earlier
      if (mine.length > 20 && random() < 0.25) {
        const id = mine.splice(Math.floor(random() * mine.length), 1)[0]!;
        return { statement: { name: 'expire', text: expireDealSql, values: [id] }, id, kind: expireKind };
      }
      const deal = randomDeal(random, this.now());
      const expiresAt = new Date(Math.max(deal.expiresAtMs, this.now() + 86_400_000)).toISOString();
      return { statement: { name: 'insert', text: insertDealSql, values: [deal.title, deal.category, deal.lon, deal.lat, deal.priceCents, expiresAt] } };
    };
    const onRecord = (record: WriteRecord, latencyMs: number) => {
      if (!record.ok) return this.failed('write', record.error ?? 'failed');
      const now = this.now();
      this.writes.recordOk(latencyMs, now);
      this.pause.ack(now);
      this.acked.add(record);
      if (record.kind === expireKind) {
        this.expirations += 1;
      } else {
        mine.push(record.id);
        this.inserts += 1;
      }
    };
    return new Writer({
      connection: workerConnection(this.options.rw),
      mode: 'persistent',
      writer: index,
      via: 'router',
      next,
      onRecord,
      onConnectFailure: (err) => this.failed('write', describeError(err)),
      thinkMs: writeIntervalMs,
      retryMs: reconnectDelayMs,
    });
  }

  private reader(random: Random): Reader {
    return new Reader({
      connection: workerConnection(this.options.ro),
      read: async (client) => {
        const here = randomPoint(random);
        const started = performance.now();
        await client.query({ name: 'nearest', text: nearestDealsSql, values: [here.lon, here.lat] });
        this.reads.recordOk(performance.now() - started, this.now());
      },
      onFailure: (err) => this.failed('read', describeError(err)),
      thinkMs: 0,
      retryMs: reconnectDelayMs,
    });
  }

  private failed(what: 'read' | 'write', message: string): void {
    (what === 'read' ? this.reads : this.writes).recordError(this.now());
    this.lastError = { what, message, atMs: this.now() };
  }
}
