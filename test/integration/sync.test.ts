/**
 * Synchronous replication against real etcd and PostgreSQL: the leader names
 * its synchronous standbys and records them before relying on them; only one
 * of them is promoted; strict mode blocks writes rather than run without one;
 * `keel config` changes the mode with a compare-and-swap.
 */
import { spawnSync } from 'node:child_process';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseSynchronousStandbyNames } from '../../src/postgres/standby-names.js';
import { sleep } from '../../src/util/clock.js';
import { appConnection, TestCluster } from '../support/cluster.js';

const keel = (args: string[]) => spawnSync(process.execPath, ['bin/keel.js', ...args], { encoding: 'utf8', timeout: 60_000 });

describe('synchronous replication', () => {
  let cluster: TestCluster;
  beforeAll(async () => {
    cluster = await TestCluster.start({ portBase: 18100, synchronousMode: 'on' });
  });
  afterAll(async () => {
    await cluster?.stop();
  });

  const ssnOf = async (port: number) =>
    parseSynchronousStandbyNames((await cluster.query<{ s: string }>(port, "SELECT current_setting('synchronous_standby_names') AS s"))[0]!.s);

  it('names the streaming replicas as a quorum and records them in the sync key', async () => {
    const leader = await cluster.leader();
    const view = await cluster.waitFor('the sync key', (v) => (v.sync?.value.members.length ?? 0) === 2, 60_000);
    expect(view.sync!.value).toMatchObject({ leader: leader.name, quorum: 1 });
    // the key is widened before PostgreSQL is told: the setting follows within a moment
    const deadline = Date.now() + 10_000;
    while ((await ssnOf(leader.pgPort))?.members.length !== 2 && Date.now() < deadline) await sleep(100);
    expect(await ssnOf(leader.pgPort)).toEqual({ members: view.sync!.value.members, quorum: 1 });
    // pg_stat_replication's sync_state is for privileged roles: the superuser over the local socket
    const [row] = await cluster.superuserQuery<{ n: string }>(leader.name, "SELECT count(*) AS n FROM pg_stat_replication WHERE sync_state = 'quorum'");
    expect(Number(row!.n)).toBe(2);
    const status = keel(['status', '--dir', cluster.layout.dir]);
    expect(status.stdout.match(/ yes /g)?.length).toBe(2);
    expect(keel(['config', 'show', '--dir', cluster.layout.dir]).stdout).toContain('synchronous_mode: on');
  });

  it('rejects unknown keys and bad values with exit 2, and changes the quorum with config set', async () => {
    const bad = keel(['config', 'set', '--dir', cluster.layout.dir, 'bogus=1']);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/KEEL_CONFIG_INVALID: .*bogus/);
    const badValue = keel(['config', 'set', '--dir', cluster.layout.dir, 'synchronous_mode=sometimes']);
    expect(badValue.status).toBe(2);
    expect(badValue.stderr).toMatch(/KEEL_CONFIG_INVALID: .*synchronous_mode/);
    const ok = keel(['config', 'set', '--dir', cluster.layout.dir, 'synchronous_node_count=2']);
    expect(ok.status).toBe(0);
    const leader = await cluster.leader();
    await cluster.waitFor('ANY 2 in the key', (v) => v.sync?.value.quorum === 2, 30_000);
    expect((await ssnOf(leader.pgPort))?.quorum).toBe(2);
    expect(keel(['config', 'set', '--dir', cluster.layout.dir, 'synchronous_node_count=1']).status).toBe(0);
    await cluster.waitFor('ANY 1 again', (v) => v.sync?.value.quorum === 1, 30_000);
  });

  it('promotes only a synchronous standby and loses no acknowledged write', async () => {
    const leader = await cluster.leader();
    await cluster.query(leader.pgPort, 'CREATE TABLE acked (id int PRIMARY KEY)');
    const acked: number[] = [];
    for (let id = 1; id <= 200; id++) {
      await cluster.query(leader.pgPort, 'INSERT INTO acked VALUES ($1)', [id]);
      acked.push(id);
    }
    const syncSet = (await cluster.view()).sync!.value.members;
    await cluster.local.provider.fence(leader.name);
    const view = await cluster.waitFor('a new leader', (v) => {
      const name = v.leader?.value.name;
      return name !== undefined && name !== leader.name && v.members.some((m) => m.name === name && m.role === 'primary');
    }, 60_000);
    const next = view.leader!.value.name;
    expect(syncSet).toContain(next);
    const rows = await cluster.query<{ id: number }>(cluster.pgPort(next), 'SELECT id FROM acked ORDER BY id');
    expect(rows.map((r) => r.id)).toEqual(acked);
    await cluster.local.provider.start(leader.name);
    await cluster.waitFor('all streaming again', (v) => v.members.filter((m) => m.role === 'replica' && m.streaming).length === 2, 90_000);
  });

  it('in strict mode blocks writes while no synchronous standby runs', async () => {
    expect(keel(['config', 'set', '--dir', cluster.layout.dir, 'synchronous_mode=strict']).status).toBe(0);
    const leader = await cluster.leader();
    await cluster.waitFor('the sync key under strict', (v) => (v.sync?.value.members.length ?? 0) >= 1, 30_000);
    const replicas = (await cluster.view()).members.filter((m) => m.name !== leader.name).map((m) => m.name);
    for (const name of replicas) await cluster.local.provider.fence(name);
    // The commit waits for a standby that is not there: no answer within 4 s.
    const client = new pg.Client(appConnection('127.0.0.1', leader.pgPort, cluster.login));
    await client.connect();
    client.on('error', () => undefined);
    const outcome = await Promise.race([
      client.query('CREATE TABLE strict_blocked (id int)').then(() => 'committed', () => 'failed'),
      new Promise((resolve) => setTimeout(() => resolve('waiting'), 4000)),
    ]);
    expect(outcome).toBe('waiting');
    (client as unknown as { connection: { stream: { destroy(): void } } }).connection.stream.destroy();
    for (const name of replicas) await cluster.local.provider.start(name);
    await cluster.untilWritable(leader.pgPort, 'CREATE TABLE IF NOT EXISTS strict_ok (id int)', 90_000);
    expect(keel(['config', 'set', '--dir', cluster.layout.dir, 'synchronous_mode=on']).status).toBe(0);
  });
});
