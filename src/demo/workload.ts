/**
 * The demo's application: writers add and expire deals through rw, readers ask
 * for the nearest open deals through ro. Each worker holds one connection, as
 * a pooled web worker would, and reconnects after any error: that reconnect
 * is what an application sees of a failover.
 */
import pg from 'pg';
import { describeError } from '../errors.js';
import { sleep } from '../util/clock.js';
import { expireDealSql, insertDealSql, nearestDealsSql, randomDeal, randomPoint, seededRandom, type Random } from './dataset.js';
import { OpStats, PauseTracker } from './stats.js';

export interface Endpoint {
  /** libpq URL; its password (if any) is never printed */
  connectionString: string;
  /** used when the URL carries none (local clusters); else PGPASSFILE / ~/.pgpass apply */
  password?: string;
}

/** pg's settings for an endpoint. */
export function clientConfig(endpoint: Endpoint): pg.ClientConfig {
  if (endpoint.password === undefined) return { connectionString: endpoint.connectionString };
  // pg lets the URL's empty password override an explicit one: take the URL apart instead
  const url = new URL(endpoint.connectionString);
  return {
    host: url.hostname,
    port: Number(url.port || 5432),
    user: decodeURIComponent(url.username) || 'postgres',
    database: decodeURIComponent(url.pathname.slice(1)) || 'postgres',
    password: endpoint.password,
  };
}

export interface WorkloadOptions {
  rw: Endpoint;
  ro: Endpoint;
  writers: number;
  readers: number;
  seed: number;
}

/** Every write the database acknowledged: checked against the final leader at the end. */
export interface AckLog {
  inserted: number[];
  expired: number[];
}

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

export class Workload {
  readonly reads = new OpStats();
  readonly writes = new OpStats();
  readonly acked: AckLog = { inserted: [], expired: [] };
  readonly pause: PauseTracker;
  inserts = 0;
  expirations = 0;
  lastError: { what: string; message: string; atMs: number } | null = null;
  private stopping = false;
  private loops: Promise<void>[] = [];

  constructor(private readonly options: WorkloadOptions, private readonly now: () => number = Date.now) {
    this.pause = new PauseTracker(now());
  }

  start(): void {
    for (let i = 0; i < this.options.writers; i++) this.loops.push(this.writerLoop(seededRandom(this.options.seed * 1000 + i)));
    for (let i = 0; i < this.options.readers; i++) this.loops.push(this.readerLoop(seededRandom(this.options.seed * 1000 + 500 + i)));
  }

  /** Lets every worker finish its statement (bounded by the query timeout), then closes the connections. */
  async stop(): Promise<void> {
    this.stopping = true;
    await Promise.all(this.loops);
  }

  private async writerLoop(random: Random): Promise<void> {
    const mine: number[] = [];
    await this.withConnection('write', this.options.rw, async (client) => {
      const started = performance.now();
      // one write in four expires a deal this writer made earlier
      if (mine.length > 20 && random() < 0.25) {
        const id = mine.splice(Math.floor(random() * mine.length), 1)[0]!;
        const result = await client.query({ name: 'expire', text: expireDealSql, values: [id] });
        this.ackWrite(performance.now() - started);
        if (result.rowCount === 1) this.acked.expired.push(id);
        this.expirations += 1;
      } else {
        const deal = randomDeal(random, this.now());
        const expiresAt = new Date(Math.max(deal.expiresAtMs, this.now() + 86_400_000)).toISOString();
        const result = await client.query<{ id: string }>({
          name: 'insert',
          text: insertDealSql,
          values: [deal.title, deal.category, deal.lon, deal.lat, deal.priceCents, expiresAt],
        });
        this.ackWrite(performance.now() - started);
        const id = Number(result.rows[0]!.id);
        this.acked.inserted.push(id);
        mine.push(id);
        this.inserts += 1;
      }
      await sleep(writeIntervalMs);
    });
  }

  private ackWrite(latencyMs: number): void {
    const now = this.now();
    this.writes.recordOk(latencyMs, now);
    this.pause.ack(now);
  }

  private async readerLoop(random: Random): Promise<void> {
    await this.withConnection('read', this.options.ro, async (client) => {
      const here = randomPoint(random);
      const started = performance.now();
      await client.query({ name: 'nearest', text: nearestDealsSql, values: [here.lon, here.lat] });
      this.reads.recordOk(performance.now() - started, this.now());
    });
  }

  /** Runs `step` over and over on one connection, reconnecting after each error, until stop(). */
  private async withConnection(what: 'read' | 'write', endpoint: Endpoint, step: (client: pg.Client) => Promise<void>): Promise<void> {
    const stats = what === 'read' ? this.reads : this.writes;
    let client: pg.Client | null = null;
    while (!this.stopping) {
      try {
        if (client === null) client = await connect(endpoint, 'keel-demo');
        await step(client);
      } catch (err) {
        stats.recordError(this.now());
        this.lastError = { what, message: describeError(err), atMs: this.now() };
        await client?.end().catch(() => undefined);
        client = null;
        if (!this.stopping) await sleep(reconnectDelayMs);
      }
    }
    await client?.end().catch(() => undefined);
  }
}

/** A connected client whose background errors (a server that went away while idle) cannot crash the process. */
export async function connect(endpoint: Endpoint, applicationName: string, timeoutMs = queryTimeoutMs): Promise<pg.Client> {
  const client = new pg.Client({
    ...clientConfig(endpoint),
    connectionTimeoutMillis: connectTimeoutMs,
    query_timeout: timeoutMs,
    application_name: applicationName,
    keepAlive: true,
  });
  // the next query fails and the worker reconnects; the event itself needs no handling
  client.on('error', () => undefined);
  try {
    await client.connect();
  } catch (err) {
    await client.end().catch(() => undefined);
    throw err;
  }
  return client;
}
