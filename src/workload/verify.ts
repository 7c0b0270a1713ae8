/**
 * The end of a run: every acknowledged change read back on the leader, once
 * one accepts writes (a failover may still be settling when a run stops).
 */
import type pg from 'pg';
import { describeError } from '../errors.js';
import { sleep } from '../util/clock.js';
import { lackedIds } from './acks.js';

export interface AckCheck {
  ids: readonly number[];
  /** selects the ids among $1::bigint[] that the leader has (presentRowsSql for plain rows) */
  presentSql: string;
}

export interface LeaderCheck<K extends string> {
  /** per check, the acknowledged ids the leader lacks */
  lacked: Record<K, number[]>;
  /** set when no check could be made: no leader accepted writes in time */
  error: string | null;
}

/**
 * Runs every check on a connection from `connect` that reaches a server out of
 * recovery (a replica still catching up would make writes look lost), retrying
 * until `timeoutMs`.
 */
export async function lackedOnLeader<K extends string>(connect: () => Promise<pg.Client>, checks: Record<K, AckCheck>, timeoutMs: number): Promise<LeaderCheck<K>> {
  const names = Object.keys(checks) as K[];
  const deadline = Date.now() + timeoutMs;
  let lastError = 'no attempt';
  while (Date.now() < deadline) {
    let client: pg.Client | null = null;
    try {
      client = await connect();
      const [row] = (await client.query<{ ro: boolean }>('SELECT pg_is_in_recovery() AS ro')).rows;
      if (row?.ro !== false) throw new Error('reached a server in recovery, not the leader');
      const query = async (sql: string, params: unknown[]) => (await client!.query<{ id: string }>(sql, params)).rows;
      const lacked = {} as Record<K, number[]>;
      for (const name of names) lacked[name] = await lackedIds(query, checks[name].ids, checks[name].presentSql);
      return { lacked, error: null };
    } catch (err) {
      lastError = describeError(err);
      await sleep(500);
    } finally {
      await client?.end().catch(() => undefined);
    }
  }
  const none = Object.fromEntries(names.map((name) => [name, []])) as unknown as Record<K, number[]>;
  return { lacked: none, error: `no writable leader answered within ${Math.round(timeoutMs / 1000)} s (${lastError})` };
}
