/**
 * The end of a demo run: every acknowledged write checked against the final
 * leader through rw, and the summary a person reads (and a test parses).
 */
import type pg from 'pg';
import { describeError } from '../errors.js';
import { sleep } from '../util/clock.js';
import type { Failover } from './changes.js';
import { formatMs } from './view.js';
import { connect, type AckLog, type Endpoint, type Workload } from './workload.js';

export interface Verification {
  checked: number;
  /** acknowledged inserts whose row is gone */
  lostInserts: number[];
  /** acknowledged expirations that were undone */
  lostExpirations: number[];
  /** set when the check could not be made (no writable leader in time) */
  error: string | null;
}

/** ids per statement: one array parameter, well below any message size limit */
const chunk = 50_000;
/** 50,000 lookups on a busy machine: far more than the workload's 5 s */
const checkTimeoutMs = 60_000;

async function missingIds(client: pg.Client, ids: number[]): Promise<number[]> {
  const lost: number[] = [];
  for (let i = 0; i < ids.length; i += chunk) {
    const { rows } = await client.query<{ id: string }>(
      'SELECT a.id FROM unnest($1::bigint[]) AS a(id) WHERE NOT EXISTS (SELECT 1 FROM deals d WHERE d.id = a.id)',
      [ids.slice(i, i + chunk)],
    );
    lost.push(...rows.map((r) => Number(r.id)));
  }
  return lost;
}

async function undoneExpirations(client: pg.Client, ids: number[]): Promise<number[]> {
  const lost: number[] = [];
  for (let i = 0; i < ids.length; i += chunk) {
    const { rows } = await client.query<{ id: string }>('SELECT id FROM deals WHERE id = ANY($1::bigint[]) AND expires_at > now()', [ids.slice(i, i + chunk)]);
    lost.push(...rows.map((r) => Number(r.id)));
  }
  return lost;
}

/** Reads every acknowledged id back through rw, waiting (bounded) for a leader that accepts writes. */
export async function verifyAcknowledged(rw: Endpoint, acked: AckLog, timeoutMs: number): Promise<Verification> {
  const checked = acked.inserted.length + acked.expired.length;
  const deadline = Date.now() + timeoutMs;
  let lastError = 'no attempt';
  while (Date.now() < deadline) {
    let client: pg.Client | null = null;
    try {
      client = await connect(rw, 'keel-demo-check', checkTimeoutMs);
      // the check must read the leader, not a replica that is still catching up
      const [{ ro }] = (await client.query<{ ro: boolean }>('SELECT pg_is_in_recovery() AS ro')).rows as [{ ro: boolean }];
      if (ro) throw new Error('rw reached a server in recovery');
      const lostInserts = await missingIds(client, acked.inserted);
      const lostExpirations = await undoneExpirations(client, acked.expired);
      return { checked, lostInserts, lostExpirations, error: null };
    } catch (err) {
      lastError = describeError(err);
      await sleep(500);
    } finally {
      await client?.end().catch(() => undefined);
    }
  }
  return { checked, lostInserts: [], lostExpirations: [], error: `no writable leader answered within ${Math.round(timeoutMs / 1000)} s (${lastError})` };
}

/** "synchronous (node2)" or "asynchronous", as the leader reports it now. */
export async function replicationMode(rw: Endpoint): Promise<string> {
  let client: pg.Client | null = null;
  try {
    client = await connect(rw, 'keel-demo-check');
    const { rows } = await client.query<{ names: string; sync: string | null }>(
      "SELECT current_setting('synchronous_standby_names') AS names, (SELECT string_agg(application_name, ', ' ORDER BY application_name) FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum')) AS sync",
    );
    const row = rows[0]!;
    if (row.sync !== null) return `synchronous (${row.sync})`;
    return row.names === '' ? 'asynchronous' : 'synchronous, no standby in sync yet';
  } catch (err) {
    return `unknown (${describeError(err)})`;
  } finally {
    await client?.end().catch(() => undefined);
  }
}

export interface SummaryInput {
  seconds: number;
  workload: Workload;
  failovers: Failover[];
  kills: { name: string; atMs: number }[];
  replication: string;
  leader: string | null;
  verification: Verification;
}

export function lostCount(v: Verification): number {
  return v.lostInserts.length + v.lostExpirations.length;
}

/** "node2 -> node1, 9.8 s after the kill" when chaos caused it. */
function describeFailover(f: Failover, kills: { name: string; atMs: number }[]): string {
  const kill = kills.filter((k) => k.name === f.from && k.atMs <= f.atMs).at(-1);
  return `${f.from ?? '?'} -> ${f.to}${kill === undefined ? '' : `, ${formatMs(f.atMs - kill.atMs)} after the kill`}`;
}

export function renderSummary(s: SummaryInput): string[] {
  const { workload: w, verification: v } = s;
  const reads = w.reads;
  const writes = w.writes;
  const ops = reads.ok + writes.ok;
  const lines = [
    `summary of ${s.seconds.toFixed(0)} s (replication ${s.replication})`,
    `  operations: ${ops} (reads ${reads.ok}, writes ${writes.ok}: ${w.inserts} new deals, ${w.expirations} expired)`,
    `  errors: ${reads.errors + writes.errors} (reads ${reads.errors}, writes ${writes.errors})`,
    `  read latency: p50 ${formatMs(reads.latency.percentile(0.5))}, p99 ${formatMs(reads.latency.percentile(0.99))}; write latency: p50 ${formatMs(writes.latency.percentile(0.5))}, p99 ${formatMs(writes.latency.percentile(0.99))}`,
    `  longest write pause: ${formatMs(w.pause.longestMs)}`,
    `  leader kills: ${s.kills.length}; failovers: ${s.failovers.length}${s.failovers.map((f) => ` (${describeFailover(f, s.kills)})`).join('')}`,
  ];
  if (v.error !== null) {
    lines.push(`  lost acknowledged writes: unknown (${v.error})`);
  } else {
    lines.push(`  lost acknowledged writes: ${lostCount(v)} (checked ${v.checked} on ${s.leader ?? 'the leader'} through rw)`);
    if (v.lostInserts.length > 0) lines.push(`    inserts lost: ids ${v.lostInserts.slice(0, 20).join(', ')}${v.lostInserts.length > 20 ? ', ...' : ''}`);
    if (v.lostExpirations.length > 0) lines.push(`    expirations undone: ids ${v.lostExpirations.slice(0, 20).join(', ')}${v.lostExpirations.length > 20 ? ', ...' : ''}`);
    if (lostCount(v) > 0 && s.replication.startsWith('asynchronous')) lines.push('    (asynchronous replication: a replica promoted before it received the last commits; synchronous replication, the default, closes that window)');
  }
  return lines;
}
