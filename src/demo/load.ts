/**
 * Puts the demo dataset in place through rw: the table, the deals that are
 * missing (a second run on the same cluster loads nothing), the GiST index and
 * fresh planner statistics. A batch that fails (a failover, a slow machine)
 * is retried on a new connection; at worst a batch whose commit was not
 * acknowledged lands twice, which only adds deals.
 */
import type pg from 'pg';
import { KeelError, describeError, redactSecrets } from '../errors.js';
import { sleep } from '../util/clock.js';
import { connect, type Endpoint } from '../workload/connect.js';
import { batchParams, createIndexSql, createTableSql, dealBatch, insertBatchSql, seededRandom } from './dataset.js';

export interface LoadProgress {
  done: number;
  total: number;
  elapsedMs: number;
}

export interface LoadResult {
  /** deals that were there already */
  existing: number;
  loaded: number;
  seconds: number;
}

/** Big enough that round trips do not dominate, small enough for a smooth progress bar. */
const batchRows = 5000;
/** an index build over millions of rows on a busy laptop takes minutes, not seconds */
const statementTimeoutMs = 15 * 60_000;
const attemptsPerStep = 5;

const expectedColumns: Record<string, string> = {
  id: 'bigint',
  title: 'text',
  category: 'text',
  position: 'USER-DEFINED',
  price_cents: 'integer',
  expires_at: 'timestamp with time zone',
  created_at: 'timestamp with time zone',
};

/** Connects to rw, retrying while the cluster settles (a router that waits for its leader, a restart). */
export async function connectWithRetry(endpoint: Endpoint, what: string, timeoutMs: number): Promise<pg.Client> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await connect(endpoint, 'keel-demo-setup', statementTimeoutMs);
    } catch (err) {
      if (Date.now() > deadline) {
        throw new KeelError('KEEL_ENDPOINT_UNREACHABLE', `could not connect to the ${what} endpoint ${redactSecrets(endpoint.connectionString)} within ${Math.round(timeoutMs / 1000)} s: ${describeError(err)}`);
      }
      await sleep(500);
    }
  }
}

/** A `deals` table made by something else must not be filled with demo rows. */
async function checkExistingTable(client: pg.Client): Promise<void> {
  const { rows } = await client.query<{ column_name: string; data_type: string }>(
    "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = 'deals'",
  );
  if (rows.length === 0) return;
  const found = new Map(rows.map((r) => [r.column_name, r.data_type]));
  const wrong = Object.entries(expectedColumns).filter(([name, type]) => found.get(name) !== type);
  if (wrong.length > 0 || found.size !== Object.keys(expectedColumns).length) {
    throw new KeelError('KEEL_DEMO_SCHEMA_CONFLICT', `a table "deals" exists with other columns than the demo's (${rows.map((r) => r.column_name).join(', ')})`);
  }
}

export async function prepareDataset(
  endpoint: Endpoint,
  wanted: number,
  seed: number,
  onProgress: (p: LoadProgress) => void,
  shouldStop: () => boolean,
  connectTimeoutMs = 60_000,
  say: (text: string) => void = () => undefined,
): Promise<LoadResult> {
  const started = Date.now();
  let client = await connectWithRetry(endpoint, 'read-write', connectTimeoutMs);
  /** Runs one step; after an error, again on a fresh connection, a few times. */
  const step = async <T>(what: string, run: (c: pg.Client) => Promise<T>): Promise<T> => {
    for (let attempt = 1; ; attempt++) {
      try {
        return await run(client);
      } catch (err) {
        if (err instanceof KeelError) throw err;
        if (attempt >= attemptsPerStep) {
          throw new KeelError('KEEL_DEMO_LOAD_FAILED', `${what} failed ${attemptsPerStep} times; the last time: ${describeError(err)}`);
        }
        await client.end().catch(() => undefined);
        await sleep(1000);
        client = await connectWithRetry(endpoint, 'read-write', connectTimeoutMs);
      }
    }
  };
  try {
    const existing = await step('creating the deals table', async (c) => {
      await checkExistingTable(c);
      // Keel creates PostGIS in its database; another cluster may need it here
      await c.query('CREATE EXTENSION IF NOT EXISTS postgis');
      await c.query(createTableSql);
      const { rows } = await c.query<{ n: string }>('SELECT count(*) AS n FROM deals');
      return Number(rows[0]!.n);
    });
    const total = Math.max(0, wanted - existing);
    // a different seed per top-up: a second load must not repeat the first one's points
    const random = seededRandom(seed + existing);
    let done = 0;
    onProgress({ done, total, elapsedMs: 0 });
    while (done < total && !shouldStop()) {
      const batch = dealBatch(random, Math.min(batchRows, total - done), Date.now());
      await step('loading a batch of deals', (c) => c.query(insertBatchSql, batchParams(batch)));
      done += batch.title.length;
      onProgress({ done, total, elapsedMs: Date.now() - started });
    }
    if (!shouldStop()) {
      if (total > 0) say(`building the GiST index on position and analyzing ${(existing + done).toLocaleString('en-US')} deals...`);
      // built after the rows: one sorted build is much faster than 100,000 inserts into the tree
      await step('building the GiST index', (c) => c.query(createIndexSql));
      await step('analyzing the table', (c) => c.query('ANALYZE deals'));
    }
    return { existing, loaded: done, seconds: (Date.now() - started) / 1000 };
  } finally {
    await client.end().catch(() => undefined);
  }
}
