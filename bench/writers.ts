/**
 * The clients of the switchover bench: each writes one row per transaction
 * into `bench_switch (id bigserial primary key, ...)` until stopped, and keeps
 * the time of every commit and the id it acknowledged. The same code writes
 * through Keel's router and through Patroni's HAProxy, so that both columns
 * of the bench measure the same client.
 */
import pg from 'pg';
import { sleep } from '../src/util/clock.js';

/** A new connection for every transaction (as Django with CONN_MAX_AGE 0), or one kept until an error. */
export type WriterConnection = 'per-transaction' | 'persistent';

export interface Writer {
  commits: number;
  errors: string[];
  /** when each error came (ms) */
  errorTimes: number[];
  /** for each error, how far its connection had got and when (ms after it began connecting) */
  errorPhases: string[];
  /** commit times (ms), acknowledged ids, and the port of the PostgreSQL server that acknowledged each (inet_server_port()) */
  times: number[];
  servers: number[];
  /** for each commit, when its connection began connecting (ms) and how far it had got when */
  commitConnections: { startedAtMs: number; phases: string[] }[];
  acked: number[];
  stop: () => Promise<void>;
}

/** A client writing rows as `server` says (host, port, role, database) until stopped. */
export function startWriter(server: pg.ClientConfig, connection: WriterConnection): Writer {
  // a connect timeout of 2 s, as an application would set; the query timeout only ends a statement stuck on a dead server
  const config = { ...server, connectionTimeoutMillis: 2000, query_timeout: 10_000 };
  const w: Writer = { commits: 0, errors: [], errorTimes: [], errorPhases: [], times: [], servers: [], acked: [], commitConnections: [], stop: async () => undefined };
  let stopping = false;
  let client: pg.Client | null = null;
  let phases: string[] = [];
  let startedAtMs = 0;
  const open = async (): Promise<pg.Client> => {
    const c = new pg.Client(config);
    c.on('error', () => undefined);
    startedAtMs = Date.now();
    phases = connectionPhases(c);
    await c.connect();
    return c;
  };
  const loop = (async () => {
    while (!stopping) {
      try {
        client ??= await open();
        const row = await client.query<{ id: string; port: number }>('INSERT INTO bench_switch DEFAULT VALUES RETURNING id, inet_server_port() AS port');
        w.times.push(Date.now());
        w.servers.push(row.rows[0]!.port);
        w.commitConnections.push({ startedAtMs, phases });
        w.acked.push(Number(row.rows[0]!.id));
        w.commits += 1;
      } catch (err) {
        w.errors.push((err as Error).message);
        w.errorTimes.push(Date.now());
        w.errorPhases.push(client === null ? phases.join(', ') : 'connected');
        await client?.end().catch(() => undefined);
        client = null;
        await sleep(50);
      }
      if (connection === 'per-transaction' && client !== null) {
        await client.end().catch(() => undefined);
        client = null;
      }
    }
    await client?.end().catch(() => undefined);
  })();
  w.stop = async () => {
    stopping = true;
    await loop;
  };
  return w;
}

/**
 * Where a connection attempt got to and when: TCP connected to the endpoint,
 * the server's answer to the SSLRequest, the TLS handshake done,
 * authenticated, ready for queries. Read from node-postgres's Connection
 * events; an error's line tells a connection held by the router from one
 * stuck in a server.
 */
function connectionPhases(c: pg.Client): string[] {
  const started = Date.now();
  const phases: string[] = [];
  const mark = (what: string) => () => phases.push(`${what} +${Date.now() - started} ms`);
  const con = (c as unknown as { connection: import('node:events').EventEmitter & { stream: import('node:events').EventEmitter } }).connection;
  con.once('connect', mark('tcp'));
  con.once('sslconnect', () => {
    mark('ssl answer')();
    con.stream.once('secureConnect', mark('tls'));
  });
  con.once('authenticationOk', mark('authenticated'));
  con.once('readyForQuery', mark('ready'));
  return phases;
}

/** The longest gap between commits from `fromMs` on (the first commit after it closes the first gap). */
export function longestPauseMs(w: Writer, fromMs: number): number {
  return longestPause(w, fromMs).ms;
}

/**
 * The longest gap between commits from `fromMs` on, when the commit that ended it came (null: none came), and
 * the steps of that commit's connection: `began +X ms` after originMs, then each step after it began.
 */
export function longestPause(w: Writer, fromMs: number, originMs = fromMs): { ms: number; endsAtMs: number | null; connection: string | null } {
  let last = fromMs;
  let longest = { ms: 0, endsAtMs: null as number | null, connection: null as string | null };
  w.times.forEach((t, i) => {
    if (t < fromMs) return;
    if (t - last > longest.ms) longest = { ms: t - last, endsAtMs: t, connection: commitConnection(w, i, originMs) };
    last = t;
  });
  return longest;
}

/** The steps of the connection of commit `i`: `began +X ms` after originMs, then each step after it began; null: none kept. */
export function commitConnection(w: Writer, i: number, originMs: number): string | null {
  const c = w.commitConnections[i];
  const t = w.times[i];
  if (c === undefined || t === undefined) return null;
  return [`began +${c.startedAtMs - originMs} ms`, ...c.phases, `committed +${t - c.startedAtMs} ms`].join(', ');
}
