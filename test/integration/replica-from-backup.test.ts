/**
 * Replicas made from the cluster's newest backup (then the archive, then
 * streaming from the leader), and from the leader with pg_basebackup when the
 * spec says `replicaSource: leader`, on a real cluster.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sleep } from '../../src/util/clock.js';
import { TestCluster } from '../support/cluster.js';
import { keelCli } from '../support/keel-cli.js';

const P = 20100;

describe('replicas from backups', () => {
  let tc: TestCluster;

  async function streaming(name: string, timeoutMs: number): Promise<number> {
    const started = Date.now();
    await tc.waitFor(`${name} streaming from the leader`, (v) => v.members.some((m) => m.name === name && m.role === 'replica' && m.streaming), timeoutMs);
    return (Date.now() - started) / 1000;
  }

  async function rowsOn(name: string): Promise<number> {
    for (let attempt = 0; ; attempt++) {
      const [row] = await tc.query<{ n: string }>(tc.pgPort(name), 'SELECT count(*)::text AS n FROM since_backup').catch(() => [{ n: '-1' }]);
      if (Number(row!.n) === 400 || attempt > 50) return Number(row!.n);
      await sleep(200);
    }
  }

  beforeAll(async () => {
    tc = await TestCluster.start({ nodes: 2, portBase: P });
    const backup = keelCli(['backup', 'now', '--dir', tc.layout.dir]);
    expect(backup.status, backup.stderr).toBe(0);
    // written after the backup: a replica made from it gets these from the archive and the leader
    const leader = await tc.leader();
    await tc.query(leader.pgPort, 'CREATE TABLE since_backup (id int PRIMARY KEY, filler text)');
    await tc.query(leader.pgPort, 'INSERT INTO since_backup SELECT g, repeat(md5(g::text), 8) FROM generate_series(1, 200) g');
    await tc.superuserQuery(leader.name, 'SELECT pg_switch_wal()');
    await tc.query(leader.pgPort, 'INSERT INTO since_backup SELECT g, repeat(md5(g::text), 8) FROM generate_series(201, 400) g');
  });
  afterAll(async () => {
    await tc?.stop();
  });

  it('makes a new replica from the newest backup by default, then streams from the leader', async () => {
    await tc.local.provider.create('test', { name: 'node3', zone: 'local-c' });
    const seconds = await streaming('node3', 90_000);
    const events = await tc.dcs.listEvents(1000);
    const restored = events.find((e) => e.kind === 'replica-from-backup' && e.source === 'node3');
    expect(restored?.message).toMatch(new RegExp(`^node3 restored backup \\d{8}-\\d{6}F \\(.+\\) in [\\d.]+ s; it replays the archived WAL, then streams from ${(await tc.leader()).name}$`));
    expect(await rowsOn('node3')).toBe(400);
    process.stdout.write(`replica from the backup: streaming ${seconds} s after its creation\n`);
  });

  it('clones from the leader when the spec says replicaSource=leader', async () => {
    const set = keelCli(['spec', 'set', '--dir', tc.layout.dir, 'backup.replicaSource=leader']);
    expect(set.status, set.stderr).toBe(0);
    await tc.local.provider.create('test', { name: 'node4', zone: 'local-a' });
    const seconds = await streaming('node4', 90_000);
    expect((await tc.dcs.listEvents(1000)).some((e) => e.kind === 'replica-from-backup' && e.source === 'node4')).toBe(false);
    expect(await rowsOn('node4')).toBe(400);
    process.stdout.write(`replica from the leader (pg_basebackup): streaming ${seconds} s after its creation\n`);
  });
});
