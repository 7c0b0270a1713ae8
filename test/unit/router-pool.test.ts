/**
 * The pooled rw endpoint without PgBouncer: its files as text, the logins it
 * takes from a password file, and the order of PAUSE, move and RESUME it sends
 * as the rw route changes (a fake PgBouncer records the commands).
 */
import { describe, expect, it } from 'vitest';
import { poolSettings } from '../../src/cli/router-pool.js';
import { isKeelError } from '../../src/errors.js';
import { loginsFromPassfile, pgbouncerIni, poolAdminUser, userlist, type PoolConfigInput } from '../../src/router/pool/config.js';
import { PooledEndpoint, type PoolProcess } from '../../src/router/pool/pool.js';
import type { Backend, Routes } from '../../src/router/route.js';
import { silentLogger } from '../../src/util/log.js';

const node1: Backend = { name: 'node1', host: '127.0.0.1', port: 20510 };
const node2: Backend = { name: 'node2', host: '127.0.0.1', port: 20511 };
const routes = (rw: Backend | null, holdRw: boolean, rwNext: Backend | null = null): Routes => ({ rw, ro: [], roDraining: [], holdRw, holdingFor: null, rwNext, reason: 'test' });

const input: PoolConfigInput = {
  listen: { host: '127.0.0.1', port: 20507 },
  runDir: '/tmp/keel-pgbouncer-x',
  authFile: '/tmp/keel-pgbouncer-x/userlist.txt',
  pidFile: '/tmp/keel-pgbouncer-x/pgbouncer.pid',
  databases: ['app'],
  target: node1,
  tls: { cert: '/t/server.crt', key: '/t/server.key', ca: '/t/ca.crt' },
  maxClientConnections: 1000,
  poolSize: 20,
  connectTimeoutMs: 3000,
  queryWaitTimeoutMs: 30_000,
};

describe("PgBouncer's files", () => {
  it('transaction pooling, SCRAM, TLS both ways, the database on the rw target', () => {
    const ini = pgbouncerIni(input);
    for (const line of ['pool_mode = transaction', 'auth_type = scram-sha-256', 'client_tls_sslmode = require', 'server_tls_sslmode = verify-full', `admin_users = ${poolAdminUser}`, 'app = host=127.0.0.1 port=20510 dbname=app', 'query_wait_timeout = 30']) {
      expect(ini.split('\n')).toContain(line);
    }
    expect(pgbouncerIni({ ...input, target: null })).not.toMatch(/^app =/m);
  });

  it('refuses values that would break out of a line', () => {
    expect(() => pgbouncerIni({ ...input, databases: ['app\nadmin_users = x'] })).toThrow(/cannot go into/);
    expect(() => pgbouncerIni({ ...input, runDir: '/tmp/a b' })).toThrow(/cannot go into/);
  });

  it('quotes the userlist and reads a libpq password file', () => {
    const logins = loginsFromPassfile('# c\n127.0.0.1:*:*:app:s3cr"t\\:x\nlocalhost:*:*:app:other\n*:*:*:reports:r\n', 'pgpass');
    expect(logins).toEqual([{ user: 'app', password: 's3cr"t:x' }, { user: 'reports', password: 'r' }]);
    expect(userlist(logins, 'adm')).toBe(`"app" "s3cr""t:x"\n"reports" "r"\n"${poolAdminUser}" "adm"\n`);
  });

  it('refuses a password file without users, with a wildcard user or naming the admin user, and never shows a password', () => {
    for (const text of ['', 'a:b:c\n', '*:*:*:*:hunter2\n', `*:*:*:${poolAdminUser}:hunter2\n`]) {
      let caught: unknown;
      try {
        loginsFromPassfile(text, 'pgpass');
      } catch (err) {
        caught = err;
      }
      expect(isKeelError(caught) && caught.code).toBe('KEEL_CONFIG_INVALID');
      expect(String((caught as Error).message)).not.toContain('hunter2');
    }
  });
});

describe('keel router --pool flags', () => {
  const base = { poolDatabases: 'app', poolSize: '20', pgbouncer: '/usr/sbin/pgbouncer' };
  const full = { ...base, pool: '127.0.0.1:20507', poolCert: 'c', poolKey: 'k', poolCacert: 'ca', poolPassfile: 'p' };
  const code = (flags: Parameters<typeof poolSettings>[0]): string | null => {
    try {
      poolSettings(flags);
      return null;
    } catch (err) {
      return isKeelError(err) ? err.code : 'other';
    }
  };
  it('no pool without --pool; its files without it, or --pool without them, are usage errors', () => {
    expect(poolSettings(base)).toBeNull();
    expect(code({ ...base, poolCert: 'c' })).toBe('KEEL_USAGE');
    expect(code({ ...full, poolPassfile: undefined })).toBe('KEEL_USAGE');
    expect(code({ ...full, pool: 'nowhere' })).toBe('KEEL_USAGE');
    expect(code({ ...full, poolSize: '0' })).toBe('KEEL_USAGE');
    expect(code({ ...full, poolDatabases: 'app;drop' })).toBe('KEEL_USAGE');
    expect(poolSettings(full)?.listen).toEqual({ host: '127.0.0.1', port: 20507 });
  });
});

/** Records the admin commands and the targets written; PAUSE can be made to hang past its timeout. */
class FakeBouncer implements PoolProcess {
  log: string[] = [];
  pauseOutcome: 'done' | 'timeout' = 'done';
  async writeIni(target: Backend | null): Promise<void> {
    this.log.push(`ini ${target?.name ?? 'none'}`);
  }
  async admin(commands: string[]): Promise<'done' | 'timeout'> {
    this.log.push(commands.join('+'));
    return commands.includes('PAUSE') ? this.pauseOutcome : 'done';
  }
}

describe('the pool follows the rw route', () => {
  const setup = () => {
    const bouncer = new FakeBouncer();
    return { bouncer, pool: new PooledEndpoint(bouncer, silentLogger(), { pauseTimeoutMs: 100, commandTimeoutMs: 100, retryMs: 10 }) };
  };

  it('a switchover: PAUSE while held, then the new leader and RESUME on one admin connection', async () => {
    const { bouncer, pool } = setup();
    await pool.follow(routes(null, true));
    expect(bouncer.log).toEqual([]);
    await pool.follow(routes(node1, false));
    await pool.follow(routes(node1, true));
    await pool.follow(routes(null, true));
    await pool.follow(routes(node2, false));
    expect(bouncer.log).toEqual(['ini node1', 'RELOAD', 'PAUSE', 'ini node2', 'RELOAD+RECONNECT+RESUME']);
    expect(pool.status()).toMatchObject({ paused: false, moves: 2, pauses: 1, target: 'node2 127.0.0.1:20511' });
  });

  it('a switchover that names its target: the paused pool points at it at once, and only RESUMEs once it is promoted', async () => {
    const { bouncer, pool } = setup();
    await pool.follow(routes(node1, false));
    await pool.follow(routes(node1, true, node2));
    await pool.caughtUp();
    expect(bouncer.log).toEqual(['ini node1', 'RELOAD', 'PAUSE', 'ini node2', 'RELOAD+RECONNECT']);
    expect(pool.status()).toMatchObject({ paused: true, target: 'node2 127.0.0.1:20511' });
    await pool.follow(routes(null, true));
    await pool.follow(routes(node2, false));
    expect(bouncer.log.slice(5)).toEqual(['RESUME']);
    expect(pool.status()).toMatchObject({ paused: false, moves: 2, pauses: 1 });
  });

  it('a hold counts once PgBouncer is paused: the move to the target does not delay it', async () => {
    const { bouncer, pool } = setup();
    await pool.follow(routes(node1, false));
    let release: () => void = () => undefined;
    const admin = bouncer.admin.bind(bouncer);
    bouncer.admin = async (commands: string[]) => {
      if (commands.includes('RELOAD')) await new Promise<void>((resolve) => (release = resolve));
      return admin(commands);
    };
    await pool.follow(routes(node1, true, node2)); // resolves although the RELOAD hangs
    expect(pool.status()).toMatchObject({ paused: true, target: 'node1 127.0.0.1:20510' });
    release();
    const resumed = pool.follow(routes(node2, false));
    for (let i = 0; i < 50 && pool.status().target !== 'node2 127.0.0.1:20511'; i++) await new Promise((resolve) => setTimeout(resolve, 2));
    release();
    await resumed;
    expect(bouncer.log).toEqual(['ini node1', 'RELOAD', 'PAUSE', 'ini node2', 'RELOAD+RECONNECT', 'RESUME']);
    expect(pool.status()).toMatchObject({ paused: false, target: 'node2 127.0.0.1:20511' });
  });

  it('a switchover that does not happen: the pool goes back to the leader it had and resumes there', async () => {
    const { bouncer, pool } = setup();
    await pool.follow(routes(node1, false));
    await pool.follow(routes(node1, true, node2));
    await pool.caughtUp();
    await pool.follow(routes(node1, false));
    expect(bouncer.log).toEqual(['ini node1', 'RELOAD', 'PAUSE', 'ini node2', 'RELOAD+RECONNECT', 'ini node1', 'RELOAD+RECONNECT+RESUME']);
    expect(pool.status()).toMatchObject({ paused: false, target: 'node1 127.0.0.1:20510' });
  });

  it('a leader that changes without a hold: moved at once, its old server connections closed as released', async () => {
    const { bouncer, pool } = setup();
    await pool.follow(routes(node1, false));
    await pool.follow(routes(node2, false));
    expect(bouncer.log).toEqual(['ini node1', 'RELOAD', 'ini node2', 'RELOAD+RECONNECT']);
  });

  it('a held route from the start pauses once the first leader is configured', async () => {
    const { bouncer, pool } = setup();
    await pool.follow(routes(node1, true));
    expect(bouncer.log).toEqual(['PAUSE', 'ini node1', 'RELOAD']);
    await pool.follow(routes(node1, false));
    expect(bouncer.log.at(-1)).toBe('RESUME');
  });

  it('a RESUME PgBouncer says it is not paused for (a step cut short before) still ends the pause after a move', async () => {
    const { bouncer, pool } = setup();
    const admin = bouncer.admin.bind(bouncer);
    await pool.follow(routes(node1, false));
    await pool.follow(routes(node1, true));
    bouncer.admin = async (commands: string[]) => {
      await admin(commands);
      if (commands.includes('RESUME')) throw new Error('PgBouncer refused RELOAD; RECONNECT; RESUME: pooler is not paused/suspended');
      return 'done';
    };
    await pool.follow(routes(node2, false));
    expect(bouncer.log).toEqual(['ini node1', 'RELOAD', 'PAUSE', 'ini node2', 'RELOAD+RECONNECT+RESUME']);
    expect(pool.status()).toMatchObject({ paused: false, moves: 2, target: 'node2 127.0.0.1:20511' });
  });

  it('a PAUSE cut short still moves and resumes; a hold ended with the same leader resumes there', async () => {
    const { bouncer, pool } = setup();
    bouncer.pauseOutcome = 'timeout';
    await pool.follow(routes(node1, false));
    await pool.follow(routes(node1, true));
    await pool.follow(routes(node1, false));
    expect(bouncer.log).toEqual(['ini node1', 'RELOAD', 'PAUSE', 'RESUME']);
    expect(pool.status()).toMatchObject({ pauseTimeouts: 1, paused: false });
  });
});

describe('the pool retries a step PgBouncer refused', () => {
  it('tries again by itself until PgBouncer answers, then carries on from where it was', async () => {
    const bouncer = new FakeBouncer();
    let refusals = 2;
    const admin = bouncer.admin.bind(bouncer);
    bouncer.admin = async (commands: string[]) => {
      if (commands.includes('RELOAD') && refusals-- > 0) throw new Error('refused');
      return admin(commands);
    };
    const pool = new PooledEndpoint(bouncer, silentLogger(), { pauseTimeoutMs: 100, commandTimeoutMs: 100, retryMs: 5 });
    await pool.follow(routes(node1, false));
    for (let i = 0; i < 100 && pool.status().moves === 0; i++) await new Promise((resolve) => setTimeout(resolve, 5));
    expect(pool.status()).toMatchObject({ moves: 1, target: 'node1 127.0.0.1:20510' });
    await pool.stop();
  });
});
