/**
 * Backups with pgBackRest on one 2-node cluster (TLS on, an encrypted posix
 * repository, as `keel up` makes them):
 *   1. a full backup from the replica and a `keel restore --latest` of it into
 *      a new one-node cluster: seconds per GB of data;
 *   2. a new replica made from the newest backup against one cloned with
 *      pg_basebackup, on the same data: seconds until it streams;
 *   3. WAL archive lag under the demo's workload (deals written through rw,
 *      nearest deals read through ro): what waits outside the repository,
 *      sampled every 500 ms from the leader's member key.
 *
 * Environment: BENCH_MB (data loaded before the backup, default 512),
 * BENCH_SECONDS (the workload of 3, default 60), BENCH_KEEP. Ports 20000-20199.
 */
import { chmodSync, mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Workload } from '../src/demo/workload.js';
import { prepareDataset } from '../src/demo/load.js';
import { connectionStrings } from '../src/providers/local-layout.js';
import { sleep } from '../src/util/clock.js';
import type { Endpoint } from '../src/workload/connect.js';
import { TestCluster } from '../test/support/cluster.js';
import { keelCli } from '../test/support/keel-cli.js';
import { removeDir, stopCluster } from './cluster.js';
import { envInteger } from './options.js';
import { fixed, machine, max, median, printTable } from './report.js';

const portBase = 20000;
const dataMb = envInteger('BENCH_MB', 512, 16, 100_000);
const workloadSeconds = envInteger('BENCH_SECONDS', 60, 5, 3600);
const gib = 1024 ** 3;

describe('backups', () => {
  let tc: TestCluster | undefined;
  let work = '';

  function cli(args: string[]): { stdout: string; seconds: number } {
    const started = Date.now();
    const result = keelCli(args, 3_600_000);
    if (result.status !== 0) throw new Error(`keel ${args.join(' ')} failed: ${result.stderr}`);
    return { stdout: result.stdout, seconds: (Date.now() - started) / 1000 };
  }

  async function untilStreaming(name: string): Promise<number> {
    const started = Date.now();
    await tc!.waitFor(`${name} streaming`, (v) => v.members.some((m) => m.name === name && m.role === 'replica' && m.streaming), 1_800_000);
    return (Date.now() - started) / 1000;
  }

  beforeAll(async () => {
    work = mkdtempSync('/tmp/keel-bench-backup-');
    // PostgreSQL's OS user enters the restored cluster's directory through it
    chmodSync(work, 0o755);
    tc = await TestCluster.start({ nodes: 2, portBase });
    const leader = await tc.leader();
    // about 830 bytes a row on disk, of hex digits that compress about as well as real rows do (not a repeated string)
    const rows = Math.round((dataMb * 1024 * 1024) / 830);
    const filler = Array.from({ length: 24 }, (_, i) => `md5((g * ${i + 7})::text)`).join(' || ');
    await tc.query(leader.pgPort, `CREATE TABLE bulk AS SELECT g AS id, ${filler} AS filler FROM generate_series(1, ${rows}) g`);
  });
  afterAll(async () => {
    keelCli(['down', '--dir', join(work, 'restored')]);
    await stopCluster(tc);
    await removeDir(work);
  });

  it('takes a full backup and restores it: seconds per GB', async () => {
    const full = cli(['backup', 'now', '--dir', tc!.layout.dir, '--type', 'full']);
    const listed = JSON.parse(cli(['backup', 'list', '--dir', tc!.layout.dir, '--json']).stdout) as { backups: { sizeBytes: number; repoBytes: number }[] };
    const backup = listed.backups[listed.backups.length - 1]!;
    await tc!.query((await tc!.leader()).pgPort, 'UPDATE bulk SET filler = filler WHERE id % 100 = 0');
    const incr = cli(['backup', 'now', '--dir', tc!.layout.dir, '--type', 'incr']);
    const restore = cli(['restore', '--from', tc!.layout.dir, '--latest', '--dir', join(work, 'restored'), '--port-base', String(portBase + 100), '--nodes', '1']);
    const recovered = Number(/recovered in ([\d.]+) s/.exec(restore.stdout)?.[1]);
    keelCli(['down', '--dir', join(work, 'restored')]);
    const gb = backup.sizeBytes / gib;
    printTable(
      `Backup and restore of ${fixed(backup.sizeBytes / 1024 ** 2)} MiB (${fixed(backup.repoBytes / 1024 ** 2)} MiB in the repository: lz4, aes-256-cbc) on ${machine()}`,
      ['step', 'seconds', 'seconds per GiB'],
      [
        ['full backup from the replica (keel backup now)', fixed(full.seconds, 1), fixed(full.seconds / gb, 1)],
        ['incremental after 1 % of rows changed', fixed(incr.seconds, 1), '-'],
        ['restore: pgbackrest restore + replay to the end of the archive', fixed(recovered, 1), fixed(recovered / gb, 1)],
        ['keel restore --latest, up to a running cluster', fixed(restore.seconds, 1), fixed(restore.seconds / gb, 1)],
      ],
      [
        'a full backup includes a checkpoint and the wait for its last WAL segment in the archive; process-max 2',
        "pgBackRest 2.45's incrementals copy whole changed files (1 GiB segments): a few changed rows in a big table copy all of it",
      ],
    );
    expect(Number.isFinite(recovered)).toBe(true);
  });

  it('makes a replica from the backup and one with pg_basebackup: seconds until it streams', async () => {
    const provider = tc!.local.provider;
    await provider.create('test', { name: 'node3', zone: 'local-c' });
    const fromBackup = await untilStreaming('node3');
    const viaBackup = (await tc!.dcs.listEvents(1000)).some((e) => e.kind === 'replica-from-backup' && e.source === 'node3');
    await provider.destroy('node3');
    cli(['spec', 'set', '--dir', tc!.layout.dir, 'backup.replicaSource=leader']);
    await provider.create('test', { name: 'node4', zone: 'local-c' });
    const fromLeader = await untilStreaming('node4');
    printTable(
      `A new replica of ${dataMb} MiB of rows, on ${machine()}`,
      ['source', 'seconds until streaming'],
      [
        [`the newest backup, then the archive (replicaSource=backup)${viaBackup ? '' : ' [fell back to the leader]'}`, fixed(fromBackup, 1)],
        ['pg_basebackup from the leader over TLS (replicaSource=leader)', fixed(fromLeader, 1)],
      ],
      ['from a backup the leader only serves what the archive lacks; both copies run on this one machine, so neither crosses a network'],
    );
    expect(viaBackup).toBe(true);
  });

  it('keeps the WAL archive close under the demo workload', async () => {
    const urls = connectionStrings(tc!.layout, tc!.file);
    const endpoint = (url: string): Endpoint => ({ connectionString: url, password: tc!.login.password });
    await prepareDataset(endpoint(urls.rw), 20_000, 7, () => undefined, () => false);
    const workload = new Workload({ rw: endpoint(urls.rw), ro: endpoint(urls.ro), writers: 4, readers: 2, seed: 7 });
    const lagBytes: number[] = [];
    const lagSeconds: number[] = [];
    let failing = 0;
    let first: { archived: number; atMs: number } | null = null;
    let last: { archived: number; atMs: number } | null = null;
    workload.start();
    const until = Date.now() + workloadSeconds * 1000;
    while (Date.now() < until) {
      const view = await tc!.view();
      const archive = view.members.find((m) => m.name === view.leader?.value.name)?.archive;
      if (archive !== undefined) {
        lagBytes.push(archive.lagBytes);
        if (archive.lagSeconds !== null) lagSeconds.push(archive.lagSeconds);
        if (archive.state === 'failing') failing += 1;
        first ??= { archived: archive.archivedCount, atMs: archive.atMs };
        last = { archived: archive.archivedCount, atMs: archive.atMs };
      }
      await sleep(500);
    }
    await workload.stop();
    const p95 = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length * 0.95)] ?? null;
    const archived = first !== null && last !== null ? last.archived - first.archived : null;
    printTable(
      `WAL archive lag under the demo workload (4 writers, 2 readers, ${workloadSeconds} s, ${workload.inserts + workload.expirations} writes) on ${machine()}`,
      ['figure', 'median', 'p95', 'max'],
      [
        ['KiB written but not yet in the repository', fixed((median(lagBytes) ?? 0) / 1024), fixed((p95(lagBytes) ?? 0) / 1024), fixed((max(lagBytes) ?? 0) / 1024)],
        ['seconds since the last segment reached it, while WAL waits', fixed(median(lagSeconds), 1), fixed(p95(lagSeconds), 1), fixed(max(lagSeconds), 1)],
      ],
      [`${fixed(archived)} segment(s) archived during the run; ${failing} of ${lagBytes.length} samples saw archiving failing`, 'the segment being written counts until it is full or archive_timeout (60 s) switches it'],
    );
    expect(failing).toBe(0);
  });
});
