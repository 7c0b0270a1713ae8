/**
 * What TLS costs, on one fresh 2-node cluster (TLS on, as always):
 *   1. pgbench -S -c 8 -j 2 -T BENCH_SECONDS through the rw endpoint and
 *      directly to the leader, with sslmode=verify-full and without TLS,
 *      alternating in BENCH_ROUNDS rounds;
 *   2. a base backup of the leader (the bulk of what replication moves) with
 *      the replication certificate over TLS and without TLS: MB/s.
 * Keel's pg_hba refuses every connection without TLS. To measure the
 * difference this bench alone puts two lines at the top of the leader's
 * pg_hba.conf for 127.0.0.1 (the application role by password, replication by
 * trust) and reloads; the cluster is thrown away afterwards.
 *
 * Environment: BENCH_SECONDS (default 10), BENCH_ROUNDS (default 2), BENCH_KEEP.
 * Ports 18500-18599.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectClient } from '../src/workload/connect.js';
import { leaderOf } from '../src/workload/shape.js';
import { superuserConnection, TestCluster } from '../test/support/cluster.js';
import { removeDir, stopCluster } from './cluster.js';
import { envInteger } from './options.js';
import { fixed, machine, mean, printTable } from './report.js';

const portBase = 18500;
const seconds = envInteger('BENCH_SECONDS', 10, 1, 600);
const rounds = envInteger('BENCH_ROUNDS', 2, 1, 20);
const pgbin = '/usr/lib/postgresql/15/bin';
const run = promisify(execFile);

describe('TLS', () => {
  let tc: TestCluster | undefined;
  let leader = { name: '', port: 0 };

  const tlsEnv = (on: boolean): Record<string, string> =>
    on ? { PGSSLMODE: 'verify-full', PGSSLROOTCERT: tc!.layout.caFiles.cert } : { PGSSLMODE: 'disable' };

  async function pgbench(port: number, tls: boolean): Promise<number> {
    const { stdout } = await run(`${pgbin}/pgbench`, ['-S', '-c', '8', '-j', '2', '-T', String(seconds), '-h', '127.0.0.1', '-p', String(port), '-U', 'app', 'app'], {
      env: { ...process.env, PGPASSFILE: tc!.layout.pgpassFile, ...tlsEnv(tls) },
      timeout: (seconds + 60) * 1000,
    });
    return Number(/tps = ([\d.]+)/.exec(stdout)![1]);
  }

  /** Seconds and bytes of one pg_basebackup of the leader. */
  async function baseBackup(tls: boolean): Promise<{ seconds: number; bytes: number }> {
    const dir = mkdtempSync('/tmp/keel-bench-tls-');
    const replication = tc!.layout.nodeReplicationTls(leader.name);
    const env = tls ? { ...tlsEnv(true), PGSSLCERT: replication.cert, PGSSLKEY: replication.key } : tlsEnv(false);
    const started = process.hrtime.bigint();
    try {
      await run(`${pgbin}/pg_basebackup`, ['-D', join(dir, 'data'), '-h', '127.0.0.1', '-p', String(leader.port), '-U', 'replicator', '-X', 'stream', '--checkpoint=fast', '--no-password'], {
        env: { ...process.env, ...env },
        timeout: 600_000,
      });
      const elapsed = Number(process.hrtime.bigint() - started) / 1e9;
      const { stdout } = await run('du', ['-sb', join(dir, 'data')]);
      return { seconds: elapsed, bytes: Number(stdout.split('\t')[0]) };
    } finally {
      await removeDir(dir);
    }
  }

  async function reloadLeader(): Promise<void> {
    const client = await connectClient(superuserConnection(tc!.layout, leader.name, leader.port));
    try {
      await client.query('SELECT pg_reload_conf()');
    } finally {
      await client.end();
    }
  }

  beforeAll(async () => {
    tc = await TestCluster.start({ portBase, nodes: 2 });
    const member = leaderOf(await tc.view())!;
    leader = { name: member.name, port: member.pgPort };
    await run(`${pgbin}/pgbench`, ['-i', '-s', '10', '-q', '-h', '127.0.0.1', '-p', String(leader.port), '-U', 'app', 'app'], {
      env: { ...process.env, PGPASSFILE: tc.layout.pgpassFile, ...tlsEnv(true) },
      timeout: 300_000,
    });
    // the measurement's own hole, on this throw-away cluster only (see the header)
    const hba = join(tc.layout.dataDir(leader.name), 'pg_hba.conf');
    const lines = readFileSync(hba, 'utf8').split('\n');
    lines.splice(1, 0, 'host replication replicator 127.0.0.1/32 trust', 'host app app 127.0.0.1/32 scram-sha-256');
    writeFileSync(hba, lines.join('\n'));
    await reloadLeader();
    console.log(`Keel TLS bench: 2 nodes, leader ${leader.name}, ${new Date().toISOString()}, ${machine()}`);
  }, 600_000);

  afterAll(async () => {
    await stopCluster(tc);
  });

  it('pgbench -S with and without TLS, through rw and directly', async () => {
    const rw = tc!.file.portBase + 2;
    const figures: Record<string, number[]> = { 'rw, TLS': [], 'rw, no TLS': [], 'leader, TLS': [], 'leader, no TLS': [] };
    for (let round = 0; round < rounds; round++) {
      figures['leader, TLS']!.push(await pgbench(leader.port, true));
      figures['leader, no TLS']!.push(await pgbench(leader.port, false));
      figures['rw, TLS']!.push(await pgbench(rw, true));
      figures['rw, no TLS']!.push(await pgbench(rw, false));
    }
    const plain = (where: string) => mean(figures[`${where}, no TLS`]!) ?? Number.NaN;
    const average = (tps: number[]) => mean(tps) ?? Number.NaN;
    printTable(
      `pgbench -S -c 8 -j 2, ${seconds} s x ${rounds} rounds (tps)`,
      ['target', 'tps (mean)', 'runs', 'share of the same target without TLS'],
      Object.entries(figures).map(([label, tps]) => [label, fixed(average(tps)), tps.map((t) => fixed(t)).join(' '), fixed(average(tps) / plain(label.split(',')[0]!), 2)]),
      ['TLS: sslmode=verify-full against the cluster CA; every connection is kept for the whole run (pgbench without -C).'],
    );
    for (const tps of Object.values(figures)) expect(average(tps)).toBeGreaterThan(0);
  }, 3_600_000);

  it('a base backup with and without TLS (replication throughput)', async () => {
    const withTls = await baseBackup(true);
    const without = await baseBackup(false);
    const rate = (b: { seconds: number; bytes: number }) => b.bytes / 1024 / 1024 / b.seconds;
    printTable(
      'pg_basebackup -X stream of the leader (MB/s)',
      ['transport', 'MB', 'seconds', 'MB/s'],
      [
        ['TLS, replication certificate', fixed(withTls.bytes / 1024 / 1024), fixed(withTls.seconds, 2), fixed(rate(withTls), 1)],
        ['no TLS', fixed(without.bytes / 1024 / 1024), fixed(without.seconds, 2), fixed(rate(without), 1)],
      ],
      [`TLS keeps ${fixed((rate(withTls) / rate(without)) * 100)} % of the clear-text rate.`],
    );
    expect(withTls.bytes).toBeGreaterThan(0);
  }, 1_200_000);
});
