/** reloadConf's waiting, against a scripted session: it returns once the session's load time moved, not before. */
import { describe, expect, it } from 'vitest';
import { reloadConf, type SessionQuery } from '../../src/postgres/reload.js';
import { silentLogger } from '../../src/util/log.js';

/**
 * A session whose pg_conf_load_time() moves after `readAfter` statements have
 * followed pg_reload_conf(), and whose settings change with it.
 */
function scriptedSession(readAfter: number | null, before: Record<string, string>, after: Record<string, string>) {
  const statements: string[] = [];
  let sinceReload: number | null = null;
  const read = () => readAfter !== null && sinceReload !== null && sinceReload > readAfter;
  const query = (async (text: string, values: unknown[]) => {
    statements.push(text);
    if (sinceReload !== null) sinceReload += 1;
    if (text.includes('pg_reload_conf()')) {
      sinceReload = 0;
      return [{ at: '2026-12-04 10:00:00.000001+00' }];
    }
    if (text.includes('pg_conf_load_time()')) return [{ at: read() ? '2026-12-04 10:00:00.250001+00' : '2026-12-04 10:00:00.000001+00' }];
    const settings = read() ? after : before;
    return (values[0] as string[]).map((name) => ({ name, value: settings[name] ?? '' }));
  }) as SessionQuery;
  return { query, statements };
}

describe('reloadConf', () => {
  it('returns once the session read the files, even when the value it checks did not change', async () => {
    const session = scriptedSession(3, { primary_conninfo: 'host=a' }, { primary_conninfo: 'host=a' });
    expect(await reloadConf(session.query, silentLogger(), { primary_conninfo: 'host=a' })).toBe(true);
    // one reload, then the load time read until it moved (the fourth look), then the values once
    expect(session.statements.filter((s) => s.includes('pg_reload_conf()'))).toHaveLength(1);
    expect(session.statements.filter((s) => /^SELECT pg_conf_load_time\(\)::text AS at$/.test(s))).toHaveLength(4);
    expect(session.statements.at(-1)).toMatch(/current_setting/);
  });

  it('says no when the session read the files but a value stayed (PostgreSQL refused it)', async () => {
    const session = scriptedSession(0, { work_mem: '4MB' }, { work_mem: '4MB' });
    expect(await reloadConf(session.query, silentLogger(), { work_mem: '8MB' })).toBe(false);
  });

  it('gives up after 3 s when the load time never moves, without failing', async () => {
    const session = scriptedSession(null, {}, {});
    const started = Date.now();
    expect(await reloadConf(session.query, silentLogger())).toBe(false);
    expect(Date.now() - started).toBeGreaterThanOrEqual(2900);
    expect(session.statements.filter((s) => s.includes('pg_reload_conf()'))).toHaveLength(1);
  });
});
