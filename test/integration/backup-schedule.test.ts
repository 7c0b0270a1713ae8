/**
 * Scheduled backups, taken by `keel controller` from the spec's schedule on a
 * real three-node cluster: the first full backup at once, incrementals on
 * their interval, from a replica, and a backup that a failover interrupts
 * taken again from the members there are afterwards.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sleep } from '../../src/util/clock.js';
import type { EventValue } from '../../src/model/values.js';
import { TestCluster } from '../support/cluster.js';
import { keelCli } from '../support/keel-cli.js';

const P = 20100;

describe('scheduled backups by the controller', () => {
  let tc: TestCluster;
  let dir: string;

  async function until<T>(what: string, probe: () => Promise<T | null | undefined | false>, timeoutMs: number): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const value = await probe().catch(() => null);
      if (value !== null && value !== undefined && value !== false) return value;
      if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms: ${what}; events: ${(await tc.dcs.listEvents(15)).map((e) => `${e.kind}: ${e.message}`).join(' | ')}`);
      await sleep(250);
    }
  }

  /** the controller's events of a kind since a moment, null while there is none */
  const controllerEvents = async (kind: string, sinceMs: number, startsWith = ''): Promise<EventValue[] | null> => {
    const found = (await tc.dcs.listEvents(1000)).filter((e) => e.kind === kind && e.source.startsWith('controller ') && e.atMs >= sinceMs && e.message.startsWith(startsWith));
    return found.length > 0 ? found : null;
  };

  function spec(...settings: string[]): void {
    const set = keelCli(['spec', 'set', '--dir', dir, ...settings]);
    expect(set.stderr).toBe('');
    expect(set.status).toBe(0);
  }

  beforeAll(async () => {
    tc = await TestCluster.start({ nodes: 3, portBase: P, controller: true });
    dir = tc.layout.dir;
    await until('the controller to write the first spec', () => tc.dcs.readSpec(), 30_000);
    // a node fenced by the test stays down: no replacement in the middle of the backups
    spec('replaceAfterSeconds=3600');
  });
  afterAll(async () => {
    await tc?.stop();
  });

  it('takes the first full backup as soon as a schedule is set, then incrementals on their interval, from a replica', async () => {
    const since = Date.now();
    spec('backup.full=7d', 'backup.incr=10s', 'backup.retentionFull=1');
    // Generous: pgBackRest waits up to its archive-timeout (60 s) for a standby to replay to a backup's start and for
    // the WAL to be archived at its end, and the scheduler takes a failed attempt again 30 s later: one run on a loaded
    // machine saw none within 60 s.
    const [full] = await until('a scheduled full backup', () => controllerEvents('backup', since, 'full backup'), 150_000);
    expect(full!.message).toMatch(/^full backup \S+F taken from node\d \(standby of node\d\)/);
    await until('a scheduled incremental backup', () => controllerEvents('backup', since, 'incr backup'), 45_000);
    const listed = JSON.parse(keelCli(['backup', 'list', '--dir', dir, '--json']).stdout) as { backups: { type: string; startMs: number; stopMs: number }[] };
    expect(listed.backups[0]!.type).toBe('full');
    expect(listed.backups.slice(1).every((b) => b.type === 'incr')).toBe(true);
    // not before its interval (pgBackRest keeps whole seconds), and never two at once
    expect(listed.backups[1]!.startMs - listed.backups[0]!.startMs).toBeGreaterThanOrEqual(9_000);
    for (let i = 1; i < listed.backups.length; i++) expect(listed.backups[i]!.startMs).toBeGreaterThanOrEqual(listed.backups[i - 1]!.stopMs);
  }, 240_000);

  it('takes a backup again, from the new topology, after a failover interrupts it', async () => {
    const leader = await tc.leader();
    // enough data that the copy lasts a few seconds
    await tc.query(leader.pgPort, "CREATE TABLE bulk AS SELECT g AS id, repeat(md5(g::text), 24) AS filler FROM generate_series(1, 150000) g");
    const since = Date.now();
    spec('backup.incr=off', 'backup.full=10s');
    // the leader goes while the backup holds the lock: before pgBackRest could stop the backup on it
    // (an incremental the controller began on the previous spec may come first: it is not the one)
    const lock = await until('a scheduled full backup under way', async () => {
      const held = await tc.dcs.readBackup();
      return held !== null && held.value.startedAtMs >= since && held.value.type === 'full' && held.value;
    }, 60_000);
    expect(lock).toMatchObject({ type: 'full', by: expect.stringMatching(/^controller /) });
    const fenced = await tc.local.provider.fence(leader.name);
    expect(fenced.confirmed).toBe(true);

    const [failed] = await until('the interrupted backup to fail', () => controllerEvents('backup-failed', since), 60_000);
    expect(failed!.message).toMatch(new RegExp(`^full backup from node\\d \\(standby of ${leader.name}\\) failed: `));
    const [retry] = await until('a retry to be planned', () => controllerEvents('backup-retry', since), 10_000);
    expect(retry!.message).toMatch(/taking it again in 30 s/);
    const newLeader = await until('a new leader', async () => {
      const view = await tc.view();
      return view.members.find((m) => m.role === 'primary' && m.name !== leader.name && view.leader?.value.name === m.name);
    }, 30_000);
    const [taken] = await until('the backup taken again', () => controllerEvents('backup', failed!.atMs, 'full backup'), 90_000);
    expect(taken!.atMs - retry!.atMs).toBeGreaterThanOrEqual(29_000);
    // from the replica left, a standby of the new leader
    expect(taken!.message).toMatch(new RegExp(`taken from node\\d \\(standby of ${newLeader.name}\\)`));
    spec('backup.full=off');
  });
});
