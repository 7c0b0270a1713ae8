/**
 * `keel config set` against a real cluster: prototype keys and parameters
 * off the allow-list (or out of range) are KEEL_CONFIG_INVALID, exit 2, and
 * change nothing; a config written by hand with refused parameters is applied
 * without them, and the agent says so once in its log.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nodeApiToken, portOffsets } from '../../src/providers/local-layout.js';
import { sleep } from '../../src/util/clock.js';
import { apiRequest } from '../support/api-client.js';
import { TestCluster } from '../support/cluster.js';

const keel = (args: string[]) => spawnSync(process.execPath, ['bin/keel.js', ...args], { encoding: 'utf8', timeout: 60_000 });
const portBase = 19550;

let cluster: TestCluster;
let etcd: Etcd3;
const configKey = '/keel/test/config';

async function configRevision(): Promise<string | null> {
  const res = await etcd.get(configKey).exec();
  return res.kvs[0]?.mod_revision ?? null;
}

beforeAll(async () => {
  cluster = await TestCluster.start({ portBase, nodes: 1 });
  etcd = cluster.operatorEtcd();
});

afterAll(async () => {
  etcd?.close();
  await cluster?.stop();
});

describe('keel config set refuses, with exit 2, and writes nothing', () => {
  it.each([
    [['postgresql_parameters.archive_command=cp %p /archive/%f'], /archive_command cannot be set cluster-wide: it runs a shell command.*node\.yml/],
    [['postgresql_parameters.shared_preload_libraries=pg_stat_statements'], /shared_preload_libraries cannot be set cluster-wide: it loads code/],
    [['postgresql_parameters.port=5999'], /port is Keel's own/],
    [['postgresql_parameters.work_mem=1kB'], /work_mem = "1kB": out of range/],
    [['postgresql_parameters.wal_compression=gzip'], /wal_compression/],
    [['ttl=20', 'postgresql_parameters.no_such_parameter=1'], /no_such_parameter is not among the parameters/],
    [['__proto__.polluted=1'], /"__proto__" is not allowed/],
    [['constructor.prototype.polluted=1'], /"constructor" is not allowed/],
  ])('%j', async (words, why) => {
    const before = await configRevision();
    const result = keel(['config', 'set', '--dir', cluster.layout.dir, ...words]);
    expect(result.status, result.stderr).toBe(2);
    expect(result.stderr).toMatch(/KEEL_CONFIG_INVALID/);
    expect(result.stderr).toMatch(why);
    expect(await configRevision()).toBe(before);
  });

  it('and takes an allowed parameter with a valid value', async () => {
    const result = keel(['config', 'set', '--dir', cluster.layout.dir, 'postgresql_parameters.work_mem=64MB']);
    expect(result.status, result.stderr).toBe(0);
    const shown = keel(['config', 'show', '--dir', cluster.layout.dir, '--json']);
    expect(JSON.parse(shown.stdout).postgresql_parameters).toEqual({ work_mem: '64MB' });
  });
});

describe('a config written by hand with refused parameters', () => {
  it('is applied without them, and the agent says so once', async () => {
    const stored = JSON.parse((await etcd.get(configKey).string()) ?? '{"v":1}') as Record<string, unknown>;
    await etcd.put(configKey).value(JSON.stringify({
      ...stored,
      postgresql_parameters: { work_mem: '32MB', archive_command: 'touch /tmp/keel-pwned', shared_preload_libraries: 'pg_stat_statements' },
    }));
    const leader = await cluster.leader();
    // a restart makes the agent write postgresql.conf from the config it read
    const token = nodeApiToken(cluster.layout.readSecrets(), 'node1');
    const res = await apiRequest(`https://127.0.0.1:${portBase + portOffsets.nodeApi}/restart`, { method: 'POST', token, caFile: cluster.layout.caFiles.cert });
    expect(res.status).toBe(202);
    let workMem = '';
    for (let i = 0; i < 120 && workMem !== '32MB'; i++) {
      workMem = await cluster.query<{ work_mem: string }>(leader.pgPort, 'SHOW work_mem').then((rows) => rows[0]!.work_mem, () => '');
      if (workMem !== '32MB') await sleep(500);
    }
    expect(workMem).toBe('32MB');
    const conf = readFileSync(join(cluster.layout.dataDir(leader.name), 'postgresql.conf'), 'utf8');
    expect(conf).toContain("work_mem = '32MB'");
    // the node archives with Keel's own command (node.yml's backup block), never the one from etcd
    expect(conf).not.toContain('keel-pwned');
    const [archive] = await cluster.superuserQuery<{ command: string }>(leader.name, "SELECT current_setting('archive_command') AS command");
    expect(archive!.command).toMatch(/^\/usr\/bin\/pgbackrest .* archive-push "%p"$/);
    expect(conf).not.toContain('shared_preload_libraries');
    const [row] = await cluster.superuserQuery<{ preload: string }>(leader.name, "SELECT current_setting('shared_preload_libraries') AS preload");
    expect(row!.preload).toBe('');
    // the agent has read the key every loop since: one line says what it left out
    await sleep(3000);
    const lines = readFileSync(cluster.layout.agentLog(leader.name), 'utf8').split('\n').filter((line) => line.includes('ignoring part of a value in etcd'));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/archive_command cannot be set cluster-wide/);
    expect(lines[0]).toMatch(/shared_preload_libraries cannot be set cluster-wide/);
    expect(lines[0]).not.toMatch(/work_mem/);
  });
});
