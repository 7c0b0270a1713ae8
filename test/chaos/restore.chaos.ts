/**
 * Fault 11: every node's data directory is destroyed, then `keel restore
 * --latest` makes a new cluster from the backups and archived WAL. Writers
 * commit through the router all along; a WAL switch in the middle stands in
 * for archive_timeout firing. Every write acknowledged before the end of the
 * last archived WAL segment must be in the restored cluster; what was lost
 * after it is the recovery point, in WAL bytes and in seconds of acknowledged
 * writes. Results go to test/chaos/results/<time>-restore/.
 *
 * It runs on a local cluster (`keel up`'s layout, which `keel restore
 * --from` reads) in both profiles, about 90 s.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { Pgbackrest } from '../../src/backup/pgbackrest.js';
import { loadNodeConfig } from '../../src/config/load.js';
import { LocalLayout, portOffsets } from '../../src/providers/local-layout.js';
import { sleep } from '../../src/util/clock.js';
import { presentIds, presentRowsSql } from '../../src/workload/acks.js';
import { loginConfig, queryOnce } from '../../src/workload/connect.js';
import { ackRowSteps, ackTableSql, Writer } from '../../src/workload/writer.js';
import { appConnection, appLogin, TestCluster } from '../support/cluster.js';
import { keelCli } from '../support/keel-cli.js';
import { recoveryPoint } from './recovery-point.js';

const P = 20000;
const table = 'restore_writes';
const writers = 3;
const stamp = new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19);
const resultsDir = join(fileURLToPath(new URL('.', import.meta.url)), 'results', `${stamp}-restore`);

it('fault 11: every node\'s data destroyed, then keel restore --latest keeps every write the archive held', async () => {
  const tc = await TestCluster.start({ nodes: 3, portBase: P });
  const restored = join(tc.layout.dir, 'restored');
  const rw = { host: '127.0.0.1', port: P + portOffsets.routerRw };
  const started: Writer[] = [];
  try {
    await tc.query((await tc.leader()).pgPort, ackTableSql(table));
    const backup = keelCli(['backup', 'now', '--dir', tc.layout.dir]);
    expect(backup.status, backup.stderr).toBe(0);
    for (let w = 0; w < writers; w++) {
      const writer = new Writer({
        connection: { ...loginConfig(tc.login, rw.host, rw.port), connectionTimeoutMillis: 2000, query_timeout: 5000 },
        mode: 'persistent',
        writer: w,
        via: 'router',
        next: ackRowSteps(table, 1, w),
        keepRecords: true,
        thinkMs: 10,
        retryMs: 200,
      });
      writer.start();
      started.push(writer);
    }
    await sleep(8000);
    // archive_timeout firing: the segment written so far goes to the repository
    const [{ bytes: segmentBytes } = { bytes: '' }] = await tc.superuserQuery<{ bytes: string }>(
      (await tc.leader()).name,
      "SELECT pg_size_bytes(current_setting('wal_segment_size'))::text AS bytes, pg_switch_wal()",
    );
    await sleep(6000);

    const destroyedAtMs = Date.now();
    for (const name of tc.layout.nodeNames()) {
      const fenced = await tc.local.provider.fence(name);
      expect(fenced.confirmed, fenced.detail).toBe(true);
      await rm(tc.layout.dataDir(name), { recursive: true, force: true });
    }
    await Promise.all(started.map((w) => w.stop()));
    // a push already under way when the nodes died may still land: read the archive's end once it settled
    await sleep(2000);
    const info = await Pgbackrest.forNode(loadNodeConfig(tc.layout.nodeConfigFile('node1'))).info();
    const lastArchived = info.archiveMax!;
    expect(lastArchived).toMatch(/^[0-9A-F]{24}$/);

    const restoreStartMs = Date.now();
    const result = keelCli(['restore', '--from', tc.layout.dir, '--latest', '--dir', restored, '--port-base', String(P + 100), '--nodes', '3'], 300_000);
    expect(result.stderr).toBe('');
    expect(result.status).toBe(0);
    const restoreSeconds = (Date.now() - restoreStartMs) / 1000;
    const layout = new LocalLayout(restored);
    const writes = started.flatMap((w) => w.records);
    const node1 = appConnection('127.0.0.1', P + 100 + portOffsets.nodePg, appLogin(layout));
    const present = await presentIds((sql, params) => queryOnce<{ id: string }>(node1, sql, params), writes.filter((w) => w.ok).map((w) => w.id), presentRowsSql(table));
    expect(Number(segmentBytes)).toBeGreaterThan(0);
    const point = recoveryPoint(writes, present, lastArchived, Number(segmentBytes));
    const report = {
      fault: '11',
      title: "every node's data directory destroyed, then keel restore --latest",
      destroyedAt: new Date(destroyedAtMs).toISOString(),
      lastArchivedSegment: lastArchived,
      restoreSeconds,
      restoreOutput: result.stdout.trim().split('\n'),
      ...point,
      missingFromArchive: point.missingFromArchive.slice(0, 20),
    };
    mkdirSync(resultsDir, { recursive: true });
    writeFileSync(join(resultsDir, 'results.json'), `${JSON.stringify(report, null, 2)}\n`);
    writeFileSync(
      join(resultsDir, 'results.md'),
      [
        '# Fault 11: every data directory destroyed, then `keel restore --latest`',
        '',
        '| acknowledged | of them archived | archived but missing | lost (after the archive) | recovery point | restore |',
        '|---|---|---|---|---|---|',
        `| ${point.acked} | ${point.ackedInArchive} | ${point.missingFromArchive.length} | ${point.lost} | ${(point.lostBytes / 1024).toFixed(0)} KiB, ${point.lostSeconds.toFixed(1)} s of writes | ${restoreSeconds.toFixed(1)} s (3 nodes) |`,
        '',
        `Last archived segment ${lastArchived}; a WAL switch 6 s before the loss stood in for archive_timeout.`,
        '',
      ].join('\n'),
    );
    process.stdout.write(`fault 11: ${JSON.stringify({ ...point, missingFromArchive: point.missingFromArchive.length, restoreSeconds })}\n`);
    expect(point.ackedInArchive).toBeGreaterThan(0);
    expect(point.missingFromArchive).toEqual([]);
  } finally {
    await Promise.all(started.map((w) => w.stop()));
    keelCli(['down', '--dir', restored]);
    await tc.stop();
  }
}, 300_000);
