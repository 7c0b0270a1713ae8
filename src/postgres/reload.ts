/**
 * Reloading PostgreSQL's configuration files, and knowing when a session has
 * read them: a backend reads them again before the first statement it runs
 * after the postmaster's signal reached it, which may come after the
 * statement that follows pg_reload_conf(). Its pg_conf_load_time() moves then.
 */
import { sleep } from '../util/clock.js';
import type { Logger } from '../util/log.js';

/** One statement on the session, its failure described as `what`. */
export type SessionQuery = <Row extends object>(text: string, values: unknown[], what: string) => Promise<Row[]>;

const rereadWaitMs = 3000;
const rereadPollMs = 5;

/** Whether each named setting, as this session sees it (SHOW's text), has the given value. */
export async function settingsAre(query: SessionQuery, expected: Record<string, string>): Promise<boolean> {
  const names = Object.keys(expected);
  const rows = await query<{ name: string; value: string }>('SELECT n AS name, current_setting(n) AS value FROM unnest($1::text[]) AS n', [names], 'reading settings');
  return names.every((name) => rows.some((row) => row.name === name && row.value === expected[name]));
}

/**
 * Sends SIGHUP and waits (3 s at most, without failing) until this session
 * has read the files again, then checks `expected` (PostgreSQL keeps the old
 * value of a setting it refuses). Waiting for the values alone, one that had
 * not changed matched at once: a follow that changed only the retry interval
 * returned before it was read, and the next loops saw the old interval and
 * reloaded again, five times in a switchover's pause. True when all is seen.
 */
export async function reloadConf(query: SessionQuery, logger: Logger, expected?: Record<string, string>): Promise<boolean> {
  const loadTime = async (text: string) => (await query<{ at: string }>(text, [], 'reloading the configuration'))[0]?.at;
  const before = await loadTime('SELECT pg_conf_load_time()::text AS at, pg_reload_conf()');
  const deadline = Date.now() + rereadWaitMs;
  let reread = false;
  while (!reread && Date.now() < deadline) {
    await sleep(rereadPollMs);
    reread = (await loadTime('SELECT pg_conf_load_time()::text AS at').catch(() => before)) !== before;
  }
  const seen = reread && (expected === undefined || (await settingsAre(query, expected)));
  if (!seen) logger.warn('configuration reloaded but the new values are not visible yet');
  return seen;
}
