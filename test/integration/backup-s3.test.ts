/**
 * An S3 repository: a real two-node cluster whose nodes archive and back up
 * into an S3-compatible server (s3rver) over TLS verified against a test CA,
 * encrypted as a posix repository is; `keel restore` from it into a new
 * cluster.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BackupRepo } from '../../src/config/backup.js';
import type { NodeConfig } from '../../src/config/schema.js';
import { LocalLayout, portOffsets, type ClusterFile, type Secrets } from '../../src/providers/local-layout.js';
import { LocalCluster } from '../../src/supervisor/local-cluster.js';
import { silentLogger } from '../../src/util/log.js';
import { queryOnce } from '../../src/workload/connect.js';
import { appConnection, appLogin, makeClusterDir, untilReady } from '../support/cluster.js';
import { keelCli } from '../support/keel-cli.js';
import { startTestS3, type TestS3 } from '../support/s3-server.js';

const P = 20000;

/** A local cluster whose nodes keep their repository in S3. */
class S3Layout extends LocalLayout {
  repo: BackupRepo | null = null;
  override nodeConfig(cluster: ClusterFile, secrets: Secrets, index: number): NodeConfig {
    const config = super.nodeConfig(cluster, secrets, index);
    return this.repo === null ? config : { ...config, backup: { ...config.backup!, repo: this.repo } };
  }
}

function files(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? files(join(dir, e.name)) : [join(dir, e.name)]));
}

describe('an S3 repository over TLS', () => {
  let layout: S3Layout;
  let local: LocalCluster;
  let s3: TestS3;
  let restored: string;

  beforeAll(async () => {
    const base = makeClusterDir('/tmp/keel-s3-');
    layout = new S3Layout(base.dir);
    s3 = await startTestS3(join(layout.dir, 's3'), P + 90);
    layout.repo = { type: 's3', bucket: s3.bucket, endpoint: s3.endpoint, region: s3.region, path: '/keel', uriStyle: 'path', caFile: s3.caFile, key: s3.key, keySecret: s3.keySecret };
    const { cluster, secrets } = await layout.create({ v: 1, cluster: 's3test', portBase: P, nodes: 2, synchronousMode: 'on' });
    local = new LocalCluster(layout, cluster, secrets, silentLogger(), { restartAgents: false });
    const dcs = local.dcs();
    try {
      await local.start();
      await untilReady(() => dcs.readCluster(), 2, { host: '127.0.0.1', port: P + portOffsets.routerRw }, 120_000);
    } finally {
      await dcs.close();
    }
    restored = join(layout.dir, 'restored');
  });
  afterAll(async () => {
    if (existsSync(join(restored, 'keel.json'))) keelCli(['down', '--dir', restored]);
    await local?.stop();
    await s3?.stop();
    if (layout) await rm(layout.dir, { recursive: true, force: true });
  });

  /** the leader's PostgreSQL, whichever node won the bootstrap */
  async function leaderPort(): Promise<number> {
    const dcs = local.dcs();
    try {
      const view = await dcs.readCluster();
      return view.members.find((m) => m.name === view.leader?.value.name)!.pgPort;
    } finally {
      await dcs.close();
    }
  }

  it('archives WAL and takes a backup into the bucket, encrypted', async () => {
    const login = appLogin(layout);
    await queryOnce(appConnection('127.0.0.1', await leaderPort(), login), "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('before the backup')");
    const backup = keelCli(['backup', 'now', '--dir', layout.dir]);
    expect(backup.stderr).toBe('');
    expect(backup.status).toBe(0);
    expect(backup.stdout).toMatch(/full backup \S+F: /);
    const list = JSON.parse(keelCli(['backup', 'list', '--dir', layout.dir, '--json']).stdout) as { stanza: string; backups: { type: string }[] };
    expect(list).toMatchObject({ stanza: 's3test', backups: [{ type: 'full' }] });
    const text = keelCli(['backup', 'list', '--dir', layout.dir]).stdout;
    expect(text).toContain('stanza s3test in s3://keel-backups/keel (encrypted)');
    // the objects sit in the bucket, and none of them reads as text
    const stored = files(s3.dataDir);
    // s3rver keeps each object's bytes in a file of its own beside its metadata
    const info = stored.find((f) => f.endsWith(join('keel', 'backup', 's3test', 'backup.info._S3rver_object')));
    expect(info, stored.slice(0, 10).join('\n')).toBeDefined();
    expect(readFileSync(info!).subarray(0, 8).toString('latin1')).toBe('Salted__');
    expect(stored.some((f) => /archive\/s3test\/15-1\/0000000100000000\/[0-9A-F]{24}-[0-9a-f]{40}\.lz4\._S3rver_object$/.test(f))).toBe(true);
    await queryOnce(appConnection('127.0.0.1', await leaderPort(), login), "INSERT INTO kept VALUES ('after the backup')");
    const check = keelCli(['backup', 'check', '--dir', layout.dir]);
    expect(check.status, check.stderr).toBe(0);
  });

  it('restores a new cluster from it', async () => {
    const result = keelCli(['restore', '--from', layout.dir, '--latest', '--dir', restored, '--nodes', '1']);
    expect(result.stderr).toBe('');
    expect(result.status).toBe(0);
    expect(result.stdout).toContain('from s3://keel-backups/keel');
    const restoredLayout = new LocalLayout(restored);
    const rows = await queryOnce<{ v: string }>(appConnection('127.0.0.1', restoredLayout.readCluster().portBase + portOffsets.nodePg, appLogin(restoredLayout)), 'SELECT v FROM kept ORDER BY v');
    expect(rows.map((r) => r.v)).toEqual(['after the backup', 'before the backup']);
  });
});
