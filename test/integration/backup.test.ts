/**
 * WAL archiving and backups with pgBackRest on a real two-node cluster: the
 * encrypted repository per cluster, continuous archiving from the leader
 * (and from the new one after a failover, with its timeline history),
 * `keel backup now|list|check` from a standby, one backup at a time, and an
 * archiving failure as an event, a metric and a `keel status` column.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pgbackrestPaths } from '../../src/postgres/archiving.js';
import { portOffsets } from '../../src/providers/local-layout.js';
import { resolveRunAs } from '../../src/postgres/programs.js';
import { sleep } from '../../src/util/clock.js';
import { apiRequest } from '../support/api-client.js';
import { TestCluster } from '../support/cluster.js';
import { keelCli } from '../support/keel-cli.js';

const P = 20000;

describe('WAL archiving and backups with pgBackRest', () => {
  let tc: TestCluster;
  let dir: string;
  const stanza = 'test';

  /** a few rows and a WAL switch on `node`, the leader: a complete segment for the archiver */
  async function writeAndSwitch(node: string): Promise<void> {
    await tc.superuserQuery(node, 'CREATE TABLE IF NOT EXISTS archived (id serial PRIMARY KEY, at timestamptz DEFAULT now())');
    await tc.superuserQuery(node, 'INSERT INTO archived DEFAULT VALUES');
    await tc.superuserQuery(node, 'SELECT pg_switch_wal()');
  }

  async function eventKinds(): Promise<{ kind: string; source: string; message: string; atMs: number }[]> {
    return tc.dcs.listEvents(1000);
  }

  async function until<T>(what: string, probe: () => Promise<T | null | undefined | false>, timeoutMs: number): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const value = await probe().catch(() => null);
      if (value !== null && value !== undefined && value !== false) return value;
      if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms: ${what}; events: ${(await eventKinds()).slice(-12).map((e) => `${e.source} ${e.kind}: ${e.message}`).join(' | ')}`);
      await sleep(300);
    }
  }

  beforeAll(async () => {
    tc = await TestCluster.start({ nodes: 2, portBase: P });
    dir = tc.layout.dir;
  });
  afterAll(async () => {
    await tc?.stop();
  });

  it("keeps one encrypted repository per cluster, its key only in files PostgreSQL's OS user alone reads", async () => {
    const postgres = resolveRunAs(tc.layout.nodeConfig(tc.file, tc.layout.readSecrets(), 0));
    const repo = statSync(tc.layout.backupDir);
    expect(repo.mode & 0o777).toBe(0o700);
    expect(repo.uid).toBe(postgres?.uid ?? process.getuid!());
    const key = tc.layout.readSecrets().backupCipher!;
    for (const name of ['node1', 'node2']) {
      const conf = pgbackrestPaths({ nodeDir: tc.layout.postgresDir(name) }).conf;
      const info = statSync(conf);
      expect(info.mode & 0o777).toBe(0o600);
      expect(info.uid).toBe(postgres?.uid ?? process.getuid!());
      expect(readFileSync(conf, 'utf8')).toContain(`repo1-cipher-pass=${key}`);
    }
    const leader = await tc.leader();
    await writeAndSwitch(leader.name);
    const archived = await until('the leader archives a segment', async () => {
      const member = (await tc.view()).members.find((m) => m.name === leader.name);
      return member?.archive !== undefined && member.archive.archivedCount > 0 && member.archive;
    }, 30_000);
    expect(archived.state).toBe('ok');
    // pgBackRest's encrypted files are openssl's format; nothing in them reads as text
    expect(readFileSync(join(tc.layout.backupDir, 'backup', stanza, 'backup.info')).subarray(0, 8).toString('latin1')).toBe('Salted__');
    const status = keelCli(['status', '--dir', dir, '--json']);
    expect(status.stdout).toContain('"archivedCount"');
    for (const text of [status.stdout, JSON.stringify(await eventKinds()), readFileSync(tc.layout.agentLog(leader.name), 'utf8')]) expect(text).not.toContain(key);
    expect((await eventKinds()).some((e) => e.kind === 'stanza' && e.source === leader.name)).toBe(true);
  });

  it('takes a full backup from the replica showing its progress, then an incremental one; lists and checks them', async () => {
    const leader = await tc.leader();
    const replica = (await tc.view()).members.find((m) => m.name !== leader.name)!.name;
    const full = keelCli(['backup', 'now', '--dir', dir, '--type', 'full']);
    expect(full.stderr).toBe('');
    expect(full.status).toBe(0);
    expect(full.stdout).toContain(`taking a full backup of cluster test from ${replica}, a standby of ${leader.name}`);
    expect(full.stdout).toMatch(/100 % of the files copied/);
    expect(full.stdout).toMatch(/full backup \d{8}-\d{6}F: /);
    await writeAndSwitch(leader.name);
    const incr = keelCli(['backup', 'now', '--dir', dir, '--type', 'incr']);
    expect(incr.status).toBe(0);
    expect(incr.stdout).toMatch(/incr backup \d{8}-\d{6}F_\d{8}-\d{6}I: /);

    const list = keelCli(['backup', 'list', '--dir', dir, '--json']);
    expect(list.status).toBe(0);
    const listed = JSON.parse(list.stdout) as { stanza: string; systemId: string; backups: { label: string; type: string; startMs: number; stopMs: number; walStart: string; walStop: string; references: string[]; sizeBytes: number }[] };
    expect(listed.stanza).toBe(stanza);
    expect(listed.systemId).toBe((await tc.view()).initialize?.value.systemId);
    expect(listed.backups.map((b) => b.type)).toEqual(['full', 'incr']);
    const [first, second] = listed.backups;
    expect(second!.references).toEqual([first!.label]);
    expect(second!.startMs).toBeGreaterThanOrEqual(first!.stopMs);
    for (const b of listed.backups) {
      expect(b.walStart).toMatch(/^[0-9A-F]{24}$/);
      expect(b.walStop >= b.walStart).toBe(true);
      expect(b.sizeBytes).toBeGreaterThan(10 * 1024 * 1024);
    }
    const text = keelCli(['backup', 'list', '--dir', dir]);
    expect(text.stdout).toContain(first!.label);
    expect(text.stdout).toMatch(/label\s+type\s+started\s+stopped\s+size\s+in repo\s+WAL start\s+WAL stop/);

    const check = keelCli(['backup', 'check', '--dir', dir]);
    expect(check.stderr).toBe('');
    expect(check.stdout).toMatch(/^ok: /);
    const taken = (await eventKinds()).filter((e) => e.kind === 'backup');
    expect(taken.map((e) => e.message)).toEqual([expect.stringContaining(`full backup ${first!.label} taken from ${replica}`), expect.stringContaining(`incr backup ${second!.label} taken from ${replica}`)]);
  });

  it('refuses a second backup while one holds the lock', async () => {
    const leaseId = await tc.dcs.grantLease(30);
    expect(await tc.dcs.claimBackup({ v: 1, by: 'another runner', type: 'full', source: 'node2', startedAtMs: Date.now() }, leaseId)).toBe(true);
    try {
      const busy = keelCli(['backup', 'now', '--dir', dir]);
      expect(busy.status).toBe(1);
      expect(busy.stderr).toContain('KEEL_BACKUP_BUSY');
      expect(busy.stderr).toContain('another runner (a full backup from node2)');
    } finally {
      await tc.dcs.revokeLease(leaseId);
    }
    expect(await tc.dcs.readBackup()).toBeNull();
  });

  it('reports an archiving failure as an event, a metric and a status column, and its end', async () => {
    const leader = await tc.leader();
    const metrics = async () => (await apiRequest(`https://127.0.0.1:${P + portOffsets.nodeApi + Number(leader.name.slice(4)) - 1}/metrics`, { caFile: tc.layout.caFiles.cert })).text;
    const { chmodSync } = await import('node:fs');
    // events of this test only: a segment pushed before the stanza was ready failed too, with another message
    const since = Date.now();
    const event = async (kind: string) => (await eventKinds()).find((e) => e.kind === kind && e.atMs >= since);
    chmodSync(tc.layout.backupDir, 0o000);
    try {
      await writeAndSwitch(leader.name);
      const failed = await until('an archive-failed event', () => event('archive-failed'), 30_000);
      expect(failed.source).toBe(leader.name);
      expect(failed.message).toMatch(/cannot archive WAL [0-9A-F]{24}/);
      expect(failed.message).toContain('Permission denied');
      const text = await until('the metrics to count the failure', async () => {
        const m = await metrics();
        return /keel_archive_failing\{[^}]*\} 1/.test(m) && m;
      }, 15_000);
      expect(Number(/keel_archive_failed_total\{[^}]*\} (\d+)/.exec(text)?.[1])).toBeGreaterThan(0);
      const status = await until('keel status to show the failure', async () => {
        const out = keelCli(['status', '--dir', dir]).stdout;
        return /FAILING x\d+/.test(out) && out;
      }, 15_000);
      expect(status).toMatch(/member\s+address\s+role\s+state\s+tl\s+lag bytes\s+sync\s+archive\s+reason/);
    } finally {
      chmodSync(tc.layout.backupDir, 0o700);
    }
    await writeAndSwitch(leader.name);
    const recovered = await until('an archive-recovered event', () => event('archive-recovered'), 60_000);
    expect(recovered.source).toBe(leader.name);
    expect(await metrics()).toMatch(/keel_archive_failing\{[^}]*\} 0/);
  });

  it('goes on archiving from the new leader after a failover, its timeline history first, with what the old one had not archived', async () => {
    const old = await tc.leader();
    // the old leader cannot archive its last segments; its replica streams them
    const unarchived: string[] = [];
    const { chmodSync } = await import('node:fs');
    chmodSync(tc.layout.backupDir, 0o000);
    try {
      for (let i = 0; i < 3; i++) {
        const [row] = await tc.superuserQuery<{ wal: string }>(old.name, 'SELECT pg_walfile_name(pg_current_wal_lsn()) AS wal');
        unarchived.push(row!.wal);
        await writeAndSwitch(old.name);
      }
      const fenced = await tc.local.provider.fence(old.name);
      expect(fenced.confirmed).toBe(true);
    } finally {
      chmodSync(tc.layout.backupDir, 0o700);
    }
    const next = await until('a new leader on a new timeline', async () => {
      const leader = (await tc.view()).members.find((m) => m.role === 'primary' && m.name !== old.name);
      return leader !== undefined && (leader.timeline ?? 0) > old.timeline! && leader;
    }, 60_000);
    const timelineHex = next.timeline!.toString(16).toUpperCase().padStart(8, '0');
    await writeAndSwitch(next.name);
    const archived = await until('the new leader archives on its timeline', async () => {
      const member = (await tc.view()).members.find((m) => m.name === next.name);
      return member?.archive?.lastArchivedWal?.startsWith(timelineHex) === true && member.archive;
    }, 60_000);
    expect(archived.state).toBe('ok');
    const archiveDir = join(tc.layout.backupDir, 'archive', stanza);
    const [db] = readdirSync(archiveDir).filter((name) => /^15-\d+$/.test(name));
    expect(existsSync(join(archiveDir, db!, `${timelineHex}.history`))).toBe(true);
    await until('the new leader to confirm the stanza', async () => (await eventKinds()).some((e) => e.kind === 'stanza' && e.source === next.name), 30_000);
    const gap = await until('the new leader to archive what the old one had not', async () => (await eventKinds()).find((e) => e.kind === 'archive-gap' && e.source === next.name), 30_000);
    expect(gap.message).toContain(`of timeline ${old.timeline}`);
    const oldTimelineDir = join(archiveDir, db!, unarchived[0]!.slice(0, 16));
    const archivedNames = readdirSync(oldTimelineDir).map((name) => name.slice(0, 24));
    for (const segment of unarchived) expect(archivedNames, `${segment} in the archive`).toContain(segment);
    // a backup goes on from the new leader, the only node left running
    const backup = keelCli(['backup', 'now', '--dir', dir, '--type', 'diff']);
    expect(backup.stderr).toBe('');
    expect(backup.status).toBe(0);
    expect(backup.stdout).toContain(`from the leader ${next.name} (no replica streams)`);
  });
});
