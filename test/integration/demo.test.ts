/**
 * `keel demo` end to end, as CI runs it: output to a pipe (plain lines, no
 * live screen), a cluster the demo starts itself with synchronous
 * replication, one leader kill during the run, and the summary's promise that
 * no acknowledged write was lost. Bad input starts nothing. The pure pieces
 * behind the live view are checked first, in milliseconds.
 */
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readdirSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomPoint, seededRandom, spreadKm, metros } from '../../src/demo/dataset.js';
import { diffCluster, initialTracking } from '../../src/demo/changes.js';
import { Histogram, OpStats } from '../../src/demo/stats.js';
import { LocalLayout } from '../../src/providers/local-layout.js';
import { commandLine, readPidFile } from '../../src/util/process.js';
import { cluster, leaderKey, member, primaryMember } from '../unit/fixtures.js';

const P = 17700;

/** PIDs whose command line names the directory: etcd, router, controller, agents, postmasters. */
function processesUsing(dir: string): string[] {
  const found: string[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    const line = commandLine(Number(entry))?.join(' ');
    if (line?.includes(dir)) found.push(`${entry}: ${line}`);
  }
  return found;
}
const keel = (args: string[]) => spawnSync(process.execPath, ['bin/keel.js', ...args], { encoding: 'utf8', timeout: 60_000 });

describe('demo building blocks', () => {
  it('spreads deals around real city centres, the same way for the same seed', () => {
    const a = seededRandom(7);
    const b = seededRandom(7);
    const points = Array.from({ length: 2000 }, () => randomPoint(a));
    expect(points.slice(0, 5)).toEqual(Array.from({ length: 5 }, () => randomPoint(b)));
    // every point lies within 6 sigma of some metro
    for (const p of points) {
      const km = Math.min(...metros.map((m) => Math.hypot((p.lat - m.lat) * 111.32, (p.lon - m.lon) * 111.32 * Math.cos((m.lat * Math.PI) / 180))));
      expect(km).toBeLessThan(6 * spreadKm * Math.SQRT2);
    }
  });

  it('reports percentiles within a bucket width and rates per complete second', () => {
    const h = new Histogram();
    for (let i = 1; i <= 1000; i++) h.add(i / 10);
    expect(h.percentile(0.5)).toBeGreaterThan(50 * 0.96);
    expect(h.percentile(0.5)).toBeLessThan(50 * 1.05);
    expect(h.percentile(0.99)).toBeGreaterThan(99 * 0.96);
    const ops = new OpStats();
    for (let i = 0; i < 30; i++) ops.recordOk(1, 10_000 + i * 30);
    ops.recordError(11_500);
    expect(ops.rate(12_000, 2)).toBe(15);
    expect(ops.recentErrors(12_000)).toBe(1);
  });

  it('tells a failover from a restart and announces a rejoin', () => {
    const now = 1_000_000;
    const three = (leader: string) =>
      cluster({ leader: leaderKey(leader), members: ['node1', 'node2', 'node3'].map((n) => (n === leader ? primaryMember(n) : member(n, { upstream: leader }))) });
    let t = diffCluster(initialTracking(), three('node1'), now, true).next;
    const noLeader = cluster({ members: [member('node2', { streaming: false }), member('node3', { streaming: false })] });
    const gone = diffCluster(t, noLeader, now + 1000);
    expect(gone.events.map((e) => e.text)).toEqual(expect.arrayContaining([expect.stringMatching(/no usable leader/), 'node1 left the cluster (its member key is gone)']));
    t = gone.next;
    const failover = diffCluster(t, three('node2'), now + 2000);
    expect(failover.failover).toMatchObject({ from: 'node1', to: 'node2' });
    expect(failover.events.map((e) => e.text)).toContain('node1 rejoined: streaming from node2');
    // the controller replaced node1 by node4: a new node joins, then is ready
    const withNode4 = (streaming: boolean) =>
      cluster({ leader: leaderKey('node2'), members: [primaryMember('node2'), member('node3', { upstream: 'node2' }), member('node4', { upstream: 'node2', streaming })] });
    const joined = diffCluster(failover.next, withNode4(false), now + 3000);
    expect(joined.events.map((e) => e.text)).toEqual(expect.arrayContaining(['node4 joined the cluster (replica)', 'node1 left the cluster (its member key is gone)']));
    expect(diffCluster(joined.next, withNode4(true), now + 4000).events.map((e) => e.text)).toEqual(['node4 is ready: streaming from node2']);
  });
});

describe('keel demo', () => {
  let root: string;
  beforeAll(() => {
    root = mkdtempSync('/tmp/keel-demo-');
    chmodSync(root, 0o755);
  });
  afterAll(async () => {
    // a failed run may leave its cluster: stop it by its recorded PIDs
    if (existsSync(join(root, 'cluster', 'keel.json'))) keel(['down', '--dir', join(root, 'cluster')]);
    await rm(root, { recursive: true, force: true });
  });

  it('refuses a dataset size out of range with exit 2 and starts nothing', () => {
    const dir = join(root, 'small');
    for (const deals of ['5', '6000000', 'lots']) {
      const result = keel(['demo', '--dir', dir, '--port-base', String(P), '--deals', deals]);
      expect(result.status).toBe(2);
      expect(result.stderr).toMatch(/^KEEL_USAGE: --deals must be a whole number from 1,000 to 5,000,000/);
    }
    expect(existsSync(dir)).toBe(false);
  });

  it('refuses ports taken by something else with exit 2 and starts nothing', async () => {
    const dir = join(root, 'taken');
    const server: Server = createServer();
    await new Promise<void>((resolve) => server.listen(P + 2, '127.0.0.1', resolve));
    try {
      const result = keel(['demo', '--dir', dir, '--port-base', String(P), '--deals', '1000', '--duration', '5']);
      expect(result.status).toBe(2);
      expect(result.stderr).toContain(`KEEL_PORT_IN_USE: ports already in use on 127.0.0.1: ${P + 2}`);
      expect(existsSync(join(dir, 'keel.json'))).toBe(false);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('keeps serving through a leader kill, loses no acknowledged write and stops what it started', async () => {
    const dir = join(root, 'cluster');
    const args = ['demo', '--dir', dir, '--port-base', String(P), '--sync', '--deals', '5000', '--writers', '2', '--readers', '2', '--duration', '40', '--chaos-interval', '6'];
    const child = spawn(process.execPath, ['bin/keel.js', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const code = await new Promise<number | null>((resolve) => {
      const timer = setTimeout(() => child.kill('SIGINT'), 240_000);
      child.once('exit', (c) => {
        clearTimeout(timer);
        resolve(c);
      });
    });
    const context = `stdout:\n${out}\nstderr:\n${err}`;
    expect(code, context).toBe(0);
    // plain lines on a pipe: no escape sequences
    expect(out).not.toContain('\x1b[');
    expect(out).toMatch(/loading .* 100%\s+5,000 \/ 5,000 deals/);
    expect(out).toMatch(/replication: synchronous/);
    // the standbys the leader waits for, read from synchronous_standby_names
    expect(out, context).toMatch(/synchronous \(ANY \d of node\d/);
    expect(out, context).toMatch(/event .*chaos\s+killed leader node\d/);
    expect(out, context).toMatch(/event .*FAILOVER: node\d leads now/);
    expect(Number(/operations: (\d+)/.exec(out)?.[1])).toBeGreaterThan(0);
    expect(Number(/\(reads (\d+), writes/.exec(out)?.[1])).toBeGreaterThan(0);
    expect(Number(/writes (\d+): /.exec(out)?.[1])).toBeGreaterThan(0);
    expect(out, context).toMatch(/leader kills: [1-9]/);
    expect(out, context).toMatch(/lost acknowledged writes: 0 \(checked [1-9]\d* on node\d through rw\)/);
    expect(out).toMatch(/stopping the cluster the demo started/);

    // the demo started the cluster, so it stopped it: nothing of it runs any more (nodes the controller added included)
    expect(readPidFile(new LocalLayout(dir).supervisorPidFile)).toBeNull();
    expect(processesUsing(dir)).toEqual([]);
  }, 300_000);
});
