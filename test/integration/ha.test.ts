/**
 * The HA core against real etcd and PostgreSQL + PostGIS: bootstrap, failover
 * after a node dies, rejoin with rewind, switchover, refusal of a lagging
 * target, and demotion when the leader loses etcd.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { memberLsn } from '../../src/model/lsn.js';
import { readPidFile } from '../../src/util/process.js';
import { sleep } from '../../src/util/clock.js';
import { TestCluster } from '../support/cluster.js';
import { freeze } from '../support/freeze.js';

const keel = (args: string[]) => {
  try {
    return { status: 0, stdout: execFileSync(process.execPath, ['bin/keel.js', ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }), stderr: '' };
  } catch (err) {
    const e = err as { status: number; stdout: string; stderr: string };
    return { status: e.status, stdout: e.stdout, stderr: e.stderr };
  }
};

describe('HA core', () => {
  let cluster: TestCluster;
  const names = ['node1', 'node2', 'node3'];

  beforeAll(async () => {
    cluster = await TestCluster.start({ portBase: 17000 });
  });
  afterAll(async () => {
    await cluster?.stop();
  });

  it('bootstraps three nodes with PostGIS everywhere and replicates a row to both replicas', async () => {
    const leader = await cluster.leader();
    await cluster.query(leader.pgPort, 'CREATE TABLE ha_rows (id int PRIMARY KEY, at text)');
    await cluster.query(leader.pgPort, "INSERT INTO ha_rows VALUES (1, 'bootstrap')");
    for (const name of names) {
      const port = cluster.pgPort(name);
      const [version] = await cluster.query<{ v: string }>(port, 'SELECT postgis_full_version() AS v');
      expect(version!.v).toMatch(/POSTGIS="3/);
      const [checksums] = await cluster.query<{ data_checksums: string }>(port, 'SHOW data_checksums');
      expect(checksums!.data_checksums).toBe('on');
    }
    for (const name of names.filter((n) => n !== leader.name)) {
      const deadline = Date.now() + 10_000;
      let rows: unknown[] = [];
      while (Date.now() < deadline && rows.length === 0) {
        rows = await cluster.query(cluster.pgPort(name), 'SELECT id FROM ha_rows WHERE id = 1');
        if (rows.length === 0) await sleep(100);
      }
      expect(rows).toHaveLength(1);
      const [recovery] = await cluster.query<{ r: boolean }>(cluster.pgPort(name), 'SELECT pg_is_in_recovery() AS r');
      expect(recovery!.r).toBe(true);
    }
    // each replica streams through its own physical slot on the leader
    const slots = await cluster.query<{ slot_name: string; active: boolean }>(leader.pgPort, 'SELECT slot_name, active FROM pg_replication_slots ORDER BY 1');
    expect(slots.map((s) => s.slot_name)).toEqual(names.filter((n) => n !== leader.name));
    const view = await cluster.view();
    expect(view.initialize?.value.systemId).toMatch(/^\d+$/);
    for (const member of view.members) expect(member.reason.length).toBeGreaterThan(0);
  });

  it('fails over after SIGKILL of the leader node, and the old leader rejoins on the new timeline', async () => {
    const old = await cluster.leader();
    const oldTimeline = old.timeline!;
    const fence = await cluster.local.provider.fence(old.name);
    expect(fence.confirmed).toBe(true);
    const view = await cluster.waitFor('a new leader', (v) => {
      const name = v.leader?.value.name;
      return name !== undefined && name !== old.name && v.members.some((m) => m.name === name && m.role === 'primary');
    }, 60_000);
    const next = view.members.find((m) => m.name === view.leader!.value.name)!;
    expect(next.timeline).toBe(oldTimeline + 1);
    await cluster.untilWritable(next.pgPort, "INSERT INTO ha_rows VALUES (2, 'after failover')", 30_000);

    await cluster.local.provider.start(old.name);
    await cluster.waitFor(`${old.name} to stream from ${next.name}`, (v) => {
      const m = v.members.find((x) => x.name === old.name);
      return m !== undefined && m.role === 'replica' && m.streaming && m.timeline === next.timeline;
    }, 90_000);
    const deadline = Date.now() + 10_000;
    let rows: { id: number }[] = [];
    while (Date.now() < deadline && rows.length < 2) {
      rows = await cluster.query<{ id: number }>(old.pgPort, 'SELECT id FROM ha_rows ORDER BY id');
      if (rows.length < 2) await sleep(100);
    }
    expect(rows.map((r) => r.id)).toEqual([1, 2]);
    const history = (await cluster.view()).history?.value.entries ?? [];
    expect(history.at(-1)).toMatchObject({ timeline: oldTimeline + 1, leader: next.name });
  });

  it('switches over to a named replica', async () => {
    const from = await cluster.leader();
    const to = names.find((n) => n !== from.name)!;
    await cluster.waitFor('all members streaming', (v) => v.members.filter((m) => m.role === 'replica' && m.streaming).length === 2, 60_000);
    const stanzaCreates = (name: string) => {
      const dir = join(cluster.layout.dataDir(name), '..', 'pgbackrest', 'log');
      if (!existsSync(dir)) return 0;
      return readdirSync(dir)
        .filter((file) => file.endsWith('-stanza-create.log'))
        .reduce((n, file) => n + readFileSync(join(dir, file), 'utf8').split('stanza-create command begin').length - 1, 0);
    };
    const readyLines = () => readFileSync(cluster.layout.agentLog(to), 'utf8').split('the stanza is ready in the repository').length - 1;
    const [createsBefore, readyBefore] = [stanzaCreates(to), readyLines()];
    const requestedAtMs = Date.now();
    const result = keel(['switchover', '--dir', cluster.layout.dir, '--to', to]);
    expect(result.stderr).toBe('');
    expect(result.status).toBe(0);
    expect(result.stdout).toContain(`${to} now leads`);
    await cluster.untilWritable(cluster.pgPort(to), "INSERT INTO ha_rows VALUES (3, 'after switchover')", 30_000);
    // the leader checkpointed while writes went on, and the router held new rw connections only after that
    const prepared = logLine(cluster.layout.agentLog(from.name), requestedAtMs, /^switchover prepared/);
    const held = logLine(cluster.layout.routerLog, requestedAtMs, /switchover from \S+ pending: holding new rw/);
    expect(prepared?.checkpointMs).toBeGreaterThan(0);
    expect(held).toBeDefined();
    expect(held!.time).toBeGreaterThanOrEqual(prepared!.time);
    await cluster.waitFor(`${from.name} to follow ${to}`, (v) => v.members.some((m) => m.name === from.name && m.role === 'replica' && m.streaming), 60_000);
    // the new leader found the stanza in the repository without stanza-create, whose lock stalls asynchronous pushes
    for (let i = 0; i < 60 && readyLines() === readyBefore; i++) await sleep(500);
    expect(readyLines()).toBe(readyBefore + 1);
    expect(stanzaCreates(to)).toBe(createsBefore);
    // and asked pgBackRest only at its second sample as primary (2 s apart), clear of the clients logging in to it:
    // the first one, after the promotion, left it alone (its query may have begun before, on a busy machine)
    const promoting = logLine(cluster.layout.agentLog(to), requestedAtMs, /^promoting$/);
    const skipped = logLine(cluster.layout.agentLog(to), requestedAtMs, /^promoted since the last reading: the stanza is looked at in the next one/);
    const ready = logLine(cluster.layout.agentLog(to), requestedAtMs, /^the stanza is ready in the repository/);
    expect(skipped!.time).toBeGreaterThan(promoting!.time);
    expect(ready!.time).toBeGreaterThan(skipped!.time);
  });

  it('refuses a failover to a replica too far behind, naming the lag', async () => {
    const leader = await cluster.leader();
    const target = names.find((n) => n !== leader.name)!;
    await cluster.waitFor(`${target} streaming`, (v) => v.members.some((m) => m.name === target && m.streaming), 60_000);
    // Freeze only the target's WAL receiver: its agent keeps reporting, its position stops.
    const [receiver] = await cluster.query<{ pid: number }>(cluster.pgPort(target), 'SELECT pid FROM pg_stat_wal_receiver');
    process.kill(receiver!.pid, 'SIGSTOP');
    try {
      await cluster.query(leader.pgPort, "CREATE TABLE lag_filler AS SELECT g, repeat('x', 500) AS pad FROM generate_series(1, 20000) g");
      await cluster.waitFor('the lag to show in etcd', (v) => {
        const l = v.members.find((m) => m.name === leader.name);
        const t = v.members.find((m) => m.name === target);
        return l !== undefined && t !== undefined && (l.walLsn ?? 0) - memberLsn(t) > 2 * 1024 * 1024;
      }, 30_000);
      const result = keel(['failover', '--dir', cluster.layout.dir, '--to', target]);
      expect(result.status).toBe(1);
      expect(result.stderr).toMatch(/KEEL_TARGET_INELIGIBLE: cannot promote node\d: .*\d+ bytes behind/);
      expect((await cluster.view()).switchover).toBeNull();
    } finally {
      process.kill(receiver!.pid, 'SIGCONT');
    }
    const unknown = keel(['failover', '--dir', cluster.layout.dir, '--to', 'node9']);
    expect(unknown.status).toBe(2);
    expect(unknown.stderr).toContain('KEEL_UNKNOWN_MEMBER');
  });

  it('demotes a leader that loses etcd before its lease can expire', async () => {
    const leader = await cluster.leader();
    const etcdPid = readPidFile(cluster.layout.etcdPidFile)!;
    const ttlSeconds = (await cluster.view()).config?.value.ttl ?? 10;
    await freeze(etcdPid);
    const stoppedAt = Date.now();
    let demotedAfterSeconds: number | null = null;
    try {
      while (Date.now() - stoppedAt < (ttlSeconds + 5) * 1000) {
        const writable = await cluster
          .query<{ r: boolean }>(leader.pgPort, 'SELECT pg_is_in_recovery() AS r')
          .then(([row]) => row!.r === false)
          .catch(() => false);
        if (!writable) {
          demotedAfterSeconds = (Date.now() - stoppedAt) / 1000;
          break;
        }
        await sleep(100);
      }
    } finally {
      process.kill(etcdPid, 'SIGCONT');
    }
    expect(demotedAfterSeconds).not.toBeNull();
    expect(demotedAfterSeconds!).toBeLessThan(ttlSeconds);
    // and the cluster heals: a leader again, everyone streaming
    await cluster.waitFor('a healed cluster', (v) => v.leader !== null && v.members.filter((m) => m.role === 'replica' && m.streaming).length === 2, 90_000);
  });
});

/** The first JSON log line of `path` at or after `sinceMs` whose message matches. */
function logLine(path: string, sinceMs: number, message: RegExp): { time: number; msg: string; checkpointMs?: number } | undefined {
  return readFileSync(path, 'utf8')
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as { time: number; msg: string; checkpointMs?: number })
    .find((line) => line.time >= sinceMs && message.test(line.msg));
}
