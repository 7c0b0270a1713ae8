/**
 * The end of a demo run: every acknowledged write checked against the final
 * leader through rw, and the summary a person reads (and a test parses).
 */
import { parseSynchronousStandbyNames } from '../postgres/standby-names.js';
import type pg from 'pg';
import { describeError } from '../errors.js';
import { insertKind, presentRowsSql, type AckLog } from '../workload/acks.js';
import { connect, type Endpoint } from '../workload/connect.js';
import { lackedOnLeader } from '../workload/verify.js';
import type { Failover } from './changes.js';
import { formatMs } from './view.js';
import { expireKind, type Workload } from './workload.js';

export interface Verification {
  checked: number;
  /** acknowledged inserts whose row is gone */
  lostInserts: number[];
  /** acknowledged expirations that were undone */
  lostExpirations: number[];
  /** set when the check could not be made (no writable leader in time) */
  error: string | null;
}

/** 50,000 lookups on a busy machine: far more than the workload's 5 s */
const checkTimeoutMs = 60_000;

/** The expirations that hold: no open deal carries the id. */
const expiredSql = 'SELECT a.id FROM unnest($1::bigint[]) AS a(id) WHERE NOT EXISTS (SELECT 1 FROM deals d WHERE d.id = a.id AND d.expires_at > now())';

/** Reads every acknowledged id back through rw, waiting (bounded) for a leader that accepts writes. */
export async function verifyAcknowledged(rw: Endpoint, acked: AckLog, timeoutMs: number): Promise<Verification> {
  const check = await lackedOnLeader(
    () => connect(rw, 'keel-demo-check', checkTimeoutMs),
    {
      inserts: { ids: acked.ids(insertKind), presentSql: presentRowsSql('deals') },
      expirations: { ids: acked.ids(expireKind), presentSql: expiredSql },
    },
    timeoutMs,
  );
  return { checked: acked.count, lostInserts: check.lacked.inserts, lostExpirations: check.lacked.expirations, error: check.error };
}

/**
 * "synchronous (ANY 1 of node2, node3)" or "asynchronous", from the standbys
 * the leader waits for now (pg_stat_replication's sync_state is for privileged
 * roles, not the application's).
 */
export async function replicationMode(rw: Endpoint): Promise<string> {
  let client: pg.Client | null = null;
  try {
    client = await connect(rw, 'keel-demo-check');
    const { rows } = await client.query<{ names: string }>("SELECT current_setting('synchronous_standby_names') AS names");
    const names = rows[0]!.names;
    const set = parseSynchronousStandbyNames(names);
    if (set === null) return `synchronous (${names})`;
    return set.members.length === 0 ? 'asynchronous' : `synchronous (ANY ${set.quorum} of ${set.members.join(', ')})`;
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
