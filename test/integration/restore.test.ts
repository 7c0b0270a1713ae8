/**
 * `keel restore` on real clusters: point-in-time recovery into a new cluster
 * to a time, to a WAL position and to the end of the archive, the source
 * cluster untouched, the restored system identifier under the new cluster's
 * own etcd prefix; and bad input refused with its KEEL_* error before
 * anything is made.
 */
import { existsSync, mkdtempSync, writeFileSync, chmodSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EtcdDcs } from '../../src/dcs/etcd.js';
import { LocalLayout, portOffsets } from '../../src/providers/local-layout.js';
import { silentLogger } from '../../src/util/log.js';
import { sleep } from '../../src/util/clock.js';
import { queryOnce } from '../../src/workload/connect.js';
import { appConnection, appLogin, TestCluster } from '../support/cluster.js';
import { keelCli } from '../support/keel-cli.js';

const P = 20000;
const Q = 20100;

describe('keel restore', () => {
  let tc: TestCluster;
  let work: string;
  let firstBackupAtMs: number;
  const marks: { time: string; lsn: string } = { time: '', lsn: '' };

  async function leaderQuery<T extends object>(sql: string): Promise<T[]> {
    const leader = await tc.leader();
    return tc.query(leader.pgPort, sql) as Promise<T[]>;
  }

  /** The rows of the restored cluster in `dir`, read through its node1 with its own application password. */
  async function restoredRows(dir: string): Promise<string[]> {
    const layout = new LocalLayout(dir);
    const cluster = layout.readCluster();
    const rows = await queryOnce<{ batch: string }>(appConnection('127.0.0.1', cluster.portBase + portOffsets.nodePg, appLogin(layout)), 'SELECT batch FROM marks ORDER BY id');
    return [...new Set(rows.map((r) => r.batch))];
  }

  async function restoredView(dir: string) {
    const layout = new LocalLayout(dir);
    const cluster = layout.readCluster();
    const dcs = new EtcdDcs({ endpoints: [layout.etcdEndpoint(cluster)], cluster: cluster.cluster, requestTimeoutMs: 3000, logger: silentLogger(), credentials: { tls: layout.clientTls('operator') } });
    try {
      return { cluster: cluster.cluster, view: await dcs.readCluster() };
    } finally {
      await dcs.close();
    }
  }

  function refused(args: string[], code: string, says: RegExp): void {
    const target = join(work, 'refused');
    const result = keelCli(['restore', ...args, '--dir', target, '--port-base', String(Q)]);
    expect(result.stderr).toContain(code);
    expect(result.stderr).toMatch(says);
    expect(result.status).toBe(2);
    expect(existsSync(target), `${target} was made`).toBe(false);
  }

  beforeAll(async () => {
    work = mkdtempSync('/tmp/keel-restore-test-');
    chmodSync(work, 0o755);
    tc = await TestCluster.start({ nodes: 2, portBase: P });
    await leaderQuery("CREATE TABLE marks (id serial PRIMARY KEY, batch text NOT NULL); INSERT INTO marks (batch) SELECT 'base' FROM generate_series(1, 100)");
    firstBackupAtMs = Date.now();
    const backup = keelCli(['backup', 'now', '--dir', tc.layout.dir]);
    expect(backup.status, backup.stderr).toBe(0);
    await leaderQuery("INSERT INTO marks (batch) SELECT 'first' FROM generate_series(1, 100)");
    const [time] = await leaderQuery<{ t: string }>("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS t");
    marks.time = time!.t;
    await new Promise((r) => setTimeout(r, 1500));
    await leaderQuery("INSERT INTO marks (batch) SELECT 'second' FROM generate_series(1, 100)");
    const [lsn] = await tc.superuserQuery<{ l: string }>((await tc.leader()).name, 'SELECT pg_current_wal_lsn()::text AS l');
    marks.lsn = lsn!.l;
    await leaderQuery("INSERT INTO marks (batch) SELECT 'third' FROM generate_series(1, 100)");
    // pgbackrest check switches WAL and waits until it is in the repository: all of it is archived
    const check = keelCli(['backup', 'check', '--dir', tc.layout.dir]);
    expect(check.status, check.stderr).toBe(0);
  });
  afterAll(async () => {
    for (const name of ['at-time', 'at-lsn', 'latest']) {
      const dir = join(work, name);
      if (existsSync(join(dir, 'keel.json'))) keelCli(['down', '--dir', dir]);
    }
    await tc?.stop();
    await rm(work, { recursive: true, force: true });
  });

  it('recovers to a time into a new cluster with its own name, leaving the old one untouched', async () => {
    const before = await tc.view();
    const dir = join(work, 'at-time');
    const result = keelCli(['restore', '--from', tc.layout.dir, '--to-time', marks.time, '--dir', dir, '--port-base', String(Q), '--nodes', '1']);
    expect(result.stderr).toBe('');
    expect(result.status).toBe(0);
    expect(result.stdout).toMatch(/restoring cluster test \(.*\) from .*\/backup/);
    expect(result.stdout).toContain(`then WAL to ${new Date(marks.time).toISOString()}`);
    expect(result.stdout).toMatch(/cluster test_restored is up in .* with 1 node\(s\)/);
    expect(await restoredRows(dir)).toEqual(['base', 'first']);
    // the same data lineage, kept under the new cluster's own prefix in its own etcd
    const restored = await restoredView(dir);
    expect(restored.cluster).toBe('test_restored');
    expect(restored.view.initialize?.value.systemId).toBe(before.initialize?.value.systemId);
    // the old cluster: same leader, same keys, all its rows, and nothing of the new one in its repository
    const after = await tc.view();
    expect(after.leader?.value.name).toBe(before.leader?.value.name);
    expect(after.initialize).toEqual(before.initialize);
    expect((await leaderQuery<{ n: string }>('SELECT count(*)::text AS n FROM marks'))[0]!.n).toBe('400');
    const stanzas = (JSON.parse(keelCli(['backup', 'list', '--dir', tc.layout.dir, '--json']).stdout) as { stanza: string }).stanza;
    expect(stanzas).toBe('test');
    expect(keelCli(['down', '--dir', dir]).status).toBe(0);
  });

  it('recovers to a WAL position and grows to the nodes asked for', async () => {
    const dir = join(work, 'at-lsn');
    const result = keelCli(['restore', '--from', tc.layout.dir, '--to-lsn', marks.lsn, '--dir', dir, '--port-base', String(Q), '--nodes', '2']);
    expect(result.stderr).toBe('');
    expect(result.status).toBe(0);
    expect(await restoredRows(dir)).toEqual(['base', 'first', 'second']);
    const { view } = await restoredView(dir);
    expect(view.members.map((m) => [m.name, m.role, m.streaming])).toEqual([['node1', 'primary', false], ['node2', 'replica', true]]);
  });

  it('refuses bad input before making anything', async () => {
    // whatever fails here, the cluster restored above stops, so the next restore has its ports
    let down: ReturnType<typeof keelCli> | null = null;
    try {
      // a target before the end of the oldest backup
      refused(['--from', tc.layout.dir, '--to-time', new Date(firstBackupAtMs - 60_000).toISOString()], 'KEEL_RESTORE_TARGET_INVALID', /before the end of the oldest backup/);
      refused(['--from', tc.layout.dir, '--to-lsn', '0/100'], 'KEEL_RESTORE_TARGET_INVALID', /before the end of the oldest backup/);
      refused(['--from', tc.layout.dir, '--to-time', '2999-01-01T00:00:00Z'], 'KEEL_RESTORE_TARGET_INVALID', /in the future/);
      // the repository of another cluster: the one restored above has its own stanza and key, which its
      // leader makes once it runs (bounded wait)
      const other = join(work, 'at-lsn', 'backup');
      const deadline = Date.now() + 60_000;
      while (!existsSync(join(other, 'backup', 'test_restored', 'backup.info')) && Date.now() < deadline) await sleep(250);
      refused(['--from', tc.layout.dir, '--repo', other, '--latest'], 'KEEL_BACKUP_FOREIGN_REPO', /holds stanza test_restored, not test/);
      refused(['--from', tc.layout.dir, '--repo', other, '--stanza', 'test_restored', '--latest'], 'KEEL_BACKUP_FOREIGN_REPO', /does not open/);
      const wrongKey = join(work, 'wrong.key');
      writeFileSync(wrongKey, 'k'.repeat(48), { mode: 0o600 });
      refused(['--repo', tc.layout.backupDir, '--key-file', wrongKey, '--latest'], 'KEEL_BACKUP_FOREIGN_REPO', /does not open/);
      // a missing key
      refused(['--repo', tc.layout.backupDir, '--latest'], 'KEEL_BACKUP_KEY_MISSING', /is encrypted and no key was given/);
      refused(['--repo', tc.layout.backupDir, '--key-file', join(work, 'no-such.key'), '--latest'], 'KEEL_BACKUP_KEY_MISSING', /cannot read the key file/);
      // a directory that holds a cluster, and the source itself
      const taken = keelCli(['restore', '--from', tc.layout.dir, '--latest', '--dir', join(work, 'at-lsn'), '--port-base', String(Q)]);
      expect(taken.status).toBe(2);
      expect(taken.stderr).toContain('KEEL_RESTORE_DIR_TAKEN');
      expect(keelCli(['restore', '--from', tc.layout.dir, '--latest', '--dir', tc.layout.dir]).stderr).toContain('KEEL_RESTORE_DIR_TAKEN');
    } finally {
      down = keelCli(['down', '--dir', join(work, 'at-lsn')]);
    }
    expect(down?.status).toBe(0);
  });

  it('recovers everything the archive holds with --latest', async () => {
    const dir = join(work, 'latest');
    const result = keelCli(['restore', '--from', tc.layout.dir, '--latest', '--dir', dir, '--port-base', String(Q), '--nodes', '1']);
    expect(result.stderr).toBe('');
    expect(result.status).toBe(0);
    expect(await restoredRows(dir)).toEqual(['base', 'first', 'second', 'third']);
    expect(keelCli(['down', '--dir', dir]).status).toBe(0);
  });
});
