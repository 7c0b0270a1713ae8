/**
 * A real PostgreSQL whose archive_command hangs: past its shutdown checkpoint
 * the postmaster waits for its archiver, and a restart in another role, or
 * any fast stop, ends that wait after a grace instead of the whole stop
 * timeout.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nodeConfigSchema, type NodeConfig } from '../../src/config/schema.js';
import { nodeLayout } from '../../src/postgres/conf.js';
import { isZombie, postmasterStopping, signalShutdown } from '../../src/postgres/datadir.js';
import { LocalPostgres } from '../../src/postgres/local.js';
import { childrenOf, descendantsOf, processTitle } from '../../src/postgres/postmaster.js';
import { silentLogger } from '../../src/util/log.js';
import { stopLocalPostgres } from '../support/local-postgres.js';
import { ensureCertificateAuthority, issueCertificate } from '../../src/tls/pki.js';

const port = 25436;
const superPassword = 'super-secret-pw-9';

async function until<T>(probe: () => T | Promise<T>, what: string, timeoutMs = 20_000): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== null && value !== undefined && value !== false) return value as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** A process that ended but was not reaped yet (this machine's init may be slow to) counts as gone. */
function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  return !isZombie(pid);
}

describe('a postmaster that waits only for its archiver after its shutdown checkpoint', () => {
  let dir = '';
  let node: LocalPostgres;
  let config: NodeConfig;
  let sql: (text: string) => Promise<Record<string, unknown>[]>;
  /** the segment switched to in the first test, which the archiver never manages to push */
  let segment = '';

  beforeAll(async () => {
    dir = mkdtempSync('/tmp/keel-test-archiver-');
    chmodSync(dir, 0o755);
    const owner = process.getuid?.() === 0 ? { uid: Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' })), gid: Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' })) } : null;
    const ca = await ensureCertificateAuthority({ cert: join(dir, 'ca.crt'), key: join(dir, 'ca.key') }, 'keel archiver test CA');
    await issueCertificate(ca, { cert: join(dir, 'tls', 'node.crt'), key: join(dir, 'tls', 'node.key') }, { commonName: 'node1', names: ['127.0.0.1'], usage: 'both', keyOwner: owner });
    await issueCertificate(ca, { cert: join(dir, 'tls', 'replication.crt'), key: join(dir, 'tls', 'replication.key') }, { commonName: 'replicator', usage: 'client', keyOwner: owner });
    config = nodeConfigSchema.parse({
      name: 'node1',
      cluster: 'archiver',
      etcd: { endpoints: ['http://127.0.0.1:2379'] },
      api: { listen: '127.0.0.1:8008' },
      tls: { ca: join(dir, 'ca.crt'), cert: join(dir, 'tls', 'node.crt'), key: join(dir, 'tls', 'node.key') },
      postgres: {
        dataDir: join(dir, 'postgres', 'data'),
        port,
        superuser: { password: superPassword },
        replication: { cert: join(dir, 'tls', 'replication.crt'), key: join(dir, 'tls', 'replication.key') },
        rewind: { password: 'rewind-secret-pw-9' },
        app: { password: 'app-secret-pw-0009' },
        // an archive_command that never returns in the test's time, like a push that waits out its timeout
        parameters: { archive_mode: 'on', archive_command: 'sleep 600' },
      },
    });
    node = new LocalPostgres(config, silentLogger());
    sql = async (text) => {
      const client = new pg.Client({ host: join(dir, 'postgres'), port, user: 'postgres', password: superPassword, database: 'app' });
      await client.connect();
      try {
        return (await client.query(text)).rows as Record<string, unknown>[];
      } finally {
        await client.end();
      }
    };
  });

  afterAll(async () => {
    await stopLocalPostgres(node, 'immediate');
    if (dir && !process.env.KEEL_KEEP_TEST_DIR) rmSync(dir, { recursive: true, force: true });
  });

  it('is ended past the grace by a restart, and starts again with nothing lost and the segment left to archive', async () => {
    await node.initdb();
    await node.start({ replica: false, upstream: null, slotName: 'node1', parameters: {} });
    await node.createClusterObjects();
    await sql('CREATE TABLE kept (id int); INSERT INTO kept VALUES (1), (2), (3)');
    const [switched] = await sql('SELECT pg_walfile_name(pg_switch_wal()) AS wal');
    segment = String(switched!.wal);
    const pid = (await node.postmasterPid())!;

    // the archiver runs the command for the switched segment
    const archiver = await until(() => childrenOf(pid).find((child) => /: archiver /.test(processTitle(child) ?? '')), 'an archiver');
    const command = await until(() => descendantsOf(archiver).find((child) => processTitle(child) === 'sleep 600'), 'the archive command running');

    // a fast shutdown, as a leader handing over signals it: past the checkpoint the postmaster stays for the archiver
    signalShutdown(pid, 'fast');
    await until(async () => (await node.controlData())?.clusterState === 'shut down', 'the shutdown checkpoint');
    await new Promise((resolve) => setTimeout(resolve, 1000));
    expect(isAlive(pid)).toBe(true);
    expect(isAlive(command)).toBe(true);
    // a reading meanwhile does not knock: postmaster.pid says "stopping", and no backend is forked only to refuse it
    expect(await postmasterStopping(node.dataDir)).toBe(true);
    expect(await node.runtimeState()).toBeNull();
    expect(readFileSync(nodeLayout(config).logPath, 'utf8')).not.toMatch(/the database system is shutting down/);

    // the agent starting it in the role it wants meets it still shutting down: the restart ends the wait
    const started = Date.now();
    await node.start({ replica: false, upstream: null, slotName: 'node1', parameters: {} });
    const tookMs = Date.now() - started;
    expect(tookMs).toBeLessThan(30_000);
    expect(isAlive(pid)).toBe(false);
    await until(() => !isAlive(command), 'the old archive command gone', 5000);
    expect(await node.postmasterPid()).not.toBe(pid);

    // no recovery was needed, nothing committed is lost, and the segment still waits to be archived
    expect(await sql('SELECT count(*)::int AS n FROM kept')).toEqual([{ n: 3 }]);
    expect(existsSync(join(node.dataDir, 'pg_wal', 'archive_status', `${segment}.ready`))).toBe(true);
    const starts = readFileSync(nodeLayout(config).logPath, 'utf8').match(/database system was .*/g) ?? [];
    expect(starts.at(-1)).toMatch(/^database system was shut down at /);
  });

  it('is ended past the grace by a plain fast stop too (a restart asked through the API, an agent stopping)', async () => {
    const pid = (await node.postmasterPid())!;
    // started again, the archiver tries the same segment again
    const archiver = await until(() => childrenOf(pid).find((child) => /: archiver /.test(processTitle(child) ?? '')), 'an archiver');
    const command = await until(() => descendantsOf(archiver).find((child) => processTitle(child) === 'sleep 600'), 'the archive command running again');
    const started = Date.now();
    await node.stop('fast');
    expect(Date.now() - started).toBeLessThan(30_000);
    expect(isAlive(pid)).toBe(false);
    await until(() => !isAlive(command), 'the archive command gone', 5000);
    expect((await node.controlData())?.clusterState).toBe('shut down');
    expect(existsSync(join(node.dataDir, 'pg_wal', 'archive_status', `${segment}.ready`))).toBe(true);
  });
});
