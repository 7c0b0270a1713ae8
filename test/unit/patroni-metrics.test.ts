/**
 * The agent's /metrics under Patroni's names: each value from a fake agent
 * handle (a leader, then a synchronous replica), and the whole text as
 * Prometheus' own `promtool check metrics` judges it.
 */
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { buildApi, type AgentHandle } from '../../src/api/server.js';
import { MemoryDcs } from '../../src/dcs/memory.js';
import { silentLogger } from '../../src/util/log.js';
import { versionNumber, keelVersion } from '../../src/util/version.js';
import { cluster, leaderKey, member, NOW, primaryMember, primaryRuntime, replicaRuntime, snapshot } from './fixtures.js';

const view = cluster({
  leader: leaderKey('node1', 'L1'),
  members: [primaryMember('node1', { walLsn: 9000 }), member('node2'), member('node3')],
  sync: { value: { v: 1, leader: 'node1', members: ['node2'], quorum: 1 }, modRevision: '7' },
});

function handleOf(me: string, leaseId: string, runtime: ReturnType<typeof replicaRuntime>): AgentHandle {
  const base = snapshot({ me: { name: me, nofailover: false }, cluster: view, nowMs: NOW - 200 });
  return {
    state: runtime.inRecovery ? 'replica' : 'primary',
    lastReason: 'fine',
    lastSnapshot: { ...base, pg: { ...base.pg, runtime } },
    lease: { id: leaseId, lastRenewalMs: NOW - 3000, renewals: 3, renewalFailures: 0, deadlineMs: () => NOW + 5000 },
    decisionCounts: new Map(),
    promotions: 0,
    runManual: async () => undefined,
  };
}

async function scrape(me: string, handle: AgentHandle): Promise<string> {
  const clock = { now: () => NOW };
  const app = buildApi(handle, { node: { name: me, cluster: 'main', tags: {} }, token: undefined, dcs: new MemoryDcs({ cluster: 'main', clock }), clock, logger: silentLogger() });
  const res = await app.inject({ method: 'GET', url: '/metrics' });
  await app.close();
  expect(res.statusCode).toBe(200);
  return res.body;
}

/** The value of `name` in the text, with Patroni's labels for member `me`. */
function value(text: string, name: string, me: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name}{scope="main",name="${me}"} `));
  if (line === undefined) throw new Error(`${name} for ${me} is not in the output`);
  return Number(line.split(' ').at(-1));
}

const server = { serverVersionNum: 150012, postmasterStartSeconds: 1_700_000_000.5 };

describe("Patroni's metrics", () => {
  it('on the leader: primary, its WAL position, its timeline, its server', async () => {
    const text = await scrape('node1', handleOf('node1', 'L1', primaryRuntime({ walLsn: 9000, timeline: 3, ...server })));
    const of = (name: string) => value(text, name, 'node1');
    expect(of('patroni_primary')).toBe(1);
    expect(of('patroni_replica')).toBe(0);
    expect(of('patroni_xlog_location')).toBe(9000);
    expect(of('patroni_xlog_replayed_location')).toBe(0);
    expect(of('patroni_postgres_running')).toBe(1);
    expect(of('patroni_postgres_timeline')).toBe(3);
    expect(of('patroni_timeline')).toBe(3);
    expect(of('patroni_cluster_unlocked')).toBe(0);
    expect(of('patroni_postgres_server_version')).toBe(150012);
    expect(of('patroni_postmaster_start_time')).toBe(1_700_000_000.5);
    // the snapshot (NOW - 200 ms) is newer than the last renewal (NOW - 3 s)
    expect(of('patroni_dcs_last_seen')).toBe(Math.floor((NOW - 200) / 1000));
    expect(of('patroni_version')).toBe(versionNumber(keelVersion()));
    expect(of('patroni_standby_leader')).toBe(0);
    // Keel's own metrics are still there, with Keel's labels
    expect(text).toMatch(/^keel_role\{role="leader",cluster="main",member="node1"\} 1$/m);
  });

  it('on a synchronous replica: its received and replayed positions, paused replay, no leader role', async () => {
    const runtime = replicaRuntime({ receivedLsn: 8800, replayedLsn: 8700, replayPaused: true, replayedXactSeconds: 1_700_000_100, ...server });
    const text = await scrape('node2', handleOf('node2', 'L2', runtime));
    const of = (name: string) => value(text, name, 'node2');
    expect(of('patroni_primary')).toBe(0);
    expect(of('patroni_replica')).toBe(1);
    expect(of('patroni_sync_standby')).toBe(1);
    expect(of('patroni_xlog_location')).toBe(0);
    expect(of('patroni_xlog_received_location')).toBe(8800);
    expect(of('patroni_xlog_replayed_location')).toBe(8700);
    expect(of('patroni_xlog_replayed_timestamp')).toBe(1_700_000_100);
    expect(of('patroni_xlog_paused')).toBe(1);
    expect(of('patroni_postgres_streaming')).toBe(1);
  });

  it('a stopped PostgreSQL reads 0 where Patroni reads 0, and an unlocked cluster 1', async () => {
    const handle = handleOf('node3', 'L3', replicaRuntime());
    const snap = handle.lastSnapshot!;
    const stopped: AgentHandle = { ...handle, lastSnapshot: { ...snap, cluster: { ...view, leader: null }, pg: { ...snap.pg, runtime: null } } };
    const text = await scrape('node3', stopped);
    const of = (name: string) => value(text, name, 'node3');
    expect(of('patroni_postgres_running')).toBe(0);
    expect(of('patroni_postmaster_start_time')).toBe(0);
    expect(of('patroni_postgres_server_version')).toBe(0);
    expect(of('patroni_postgres_timeline')).toBe(0);
    expect(of('patroni_cluster_unlocked')).toBe(1);
  });

  it('the whole /metrics text passes promtool check metrics', async () => {
    const text = await scrape('node1', handleOf('node1', 'L1', primaryRuntime({ walLsn: 9000, ...server })));
    const check = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    if (check.error) throw new Error(`promtool (Debian's prometheus package, installed by scripts/setup.sh) cannot run: ${check.error.message}`);
    expect(`${check.stdout}${check.stderr}`).toBe('');
    expect(check.status).toBe(0);
  });
});
