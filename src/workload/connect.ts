/**
 * Connections of a workload: libpq endpoints, clients whose background
 * errors cannot crash the process, one-off queries, and the loop every
 * writer and reader runs on its connection.
 */
import { readFileSync } from 'node:fs';
import pg from 'pg';
import { sleep } from '../util/clock.js';

/** How a client logs in: a role, its password, and the CA the server's certificate must chain to (TLS, verify-full). */
export interface Login {
  user: string;
  password: string;
  /** PEM; without it the connection is plain TCP */
  caPem?: string;
}

/** pg's settings for one server as `login`: TLS verified against the CA and the host name (libpq's verify-full). */
export function loginConfig(login: Login, host: string, port: number, database = 'app'): pg.ClientConfig {
  return { host, port, user: login.user, password: login.password, database, ...(login.caPem === undefined ? {} : { ssl: { ca: login.caPem } }) };
}

/** pg's TLS settings for a URL's sslmode and sslrootcert, as libpq reads them (undefined: pg's own reading of the URL). */
function sslFromUrl(url: URL): pg.ClientConfig['ssl'] {
  const mode = url.searchParams.get('sslmode');
  const root = url.searchParams.get('sslrootcert');
  if (mode === null || mode === 'disable') return undefined;
  const ca = root === null ? undefined : readFileSync(root, 'utf8');
  if (mode === 'verify-full') return { ...(ca === undefined ? {} : { ca }) };
  // verify-ca: the chain, not the name; require/prefer: encrypted, unverified (libpq's meaning)
  if (mode === 'verify-ca') return { ...(ca === undefined ? {} : { ca }), checkServerIdentity: () => undefined };
  return { rejectUnauthorized: false };
}

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
  const ssl = sslFromUrl(url);
  return {
    host: url.hostname,
    port: Number(url.port || 5432),
    user: decodeURIComponent(url.username) || 'postgres',
    database: decodeURIComponent(url.pathname.slice(1)) || 'postgres',
    password: endpoint.password,
    ...(ssl === undefined ? {} : { ssl }),
  };
}

/** A client whose background errors (a server that went away while idle) cannot crash the process. */
function newClient(config: pg.ClientConfig): pg.Client {
  const client = new pg.Client(config);
  // the next query fails and its caller decides; the event itself needs no handling
  client.on('error', () => undefined);
  return client;
}

/** A connected client; a failed attempt leaves nothing open. */
export async function connectClient(config: pg.ClientConfig): Promise<pg.Client> {
  const client = newClient(config);
  try {
    await client.connect();
  } catch (err) {
    discard(client);
    throw err;
  }
  return client;
}

const endpointConnectTimeoutMs = 5000;

/** A connected client of an endpoint; `timeoutMs` bounds each statement, so one stuck on a dead server fails instead of hanging. */
export function connect(endpoint: Endpoint, applicationName: string, timeoutMs = 5000): Promise<pg.Client> {
  return connectClient({
    ...clientConfig(endpoint),
    connectionTimeoutMillis: endpointConnectTimeoutMs,
    query_timeout: timeoutMs,
    application_name: applicationName,
    keepAlive: true,
  });
}

/** Drops a client at once, without waiting for a goodbye a dead peer would never send. */
function discard(client: pg.Client): void {
  const stream = (client as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream;
  stream?.destroy();
  void client.end().catch(() => undefined);
}

/** One statement on a connection of its own. */
export async function queryOnce<T extends pg.QueryResultRow = pg.QueryResultRow>(config: pg.ClientConfig, sql: string, params: unknown[] = []): Promise<T[]> {
  const client = await connectClient(config);
  try {
    return (await client.query<T>(sql, params)).rows;
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** What one step of a loop leaves behind: whether its connection serves the next step, and the pause before it. */
export interface LoopStep {
  keep: boolean;
  pauseMs: number;
}

export interface LoopOptions {
  connection: pg.ClientConfig;
  stopped: () => boolean;
  /** notices holds what the server said alongside the answers since the step last emptied it */
  step: (client: pg.Client, notices: string[]) => Promise<LoopStep>;
  onConnectFailure?: (err: unknown) => void;
  /** pause after a connection that could not be made */
  retryMs: number;
}

/** A pause that a stopping loop does not wait out. */
async function pause(ms: number, stopped: () => boolean): Promise<void> {
  if (ms > 0 && !stopped()) await sleep(ms);
}

/** Runs `step` over and over until stopped, on a new connection whenever the last step did not keep its own. */
export async function connectionLoop(o: LoopOptions): Promise<void> {
  let client: pg.Client | null = null;
  const notices: string[] = [];
  while (!o.stopped()) {
    if (client === null) {
      const fresh = newClient(o.connection);
      fresh.on('notice', (msg) => notices.push(msg.message ?? ''));
      try {
        await fresh.connect();
        client = fresh;
      } catch (err) {
        discard(fresh);
        o.onConnectFailure?.(err);
        await pause(o.retryMs, o.stopped);
        continue;
      }
    }
    const { keep, pauseMs } = await o.step(client, notices);
    if (!keep) {
      discard(client);
      client = null;
    }
    await pause(pauseMs, o.stopped);
  }
  if (client !== null) await client.end().catch(() => undefined);
}
