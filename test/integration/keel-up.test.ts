/**
 * `keel up` as a new user runs it: detached and in the foreground, status,
 * down, and up again on the same directory with the same data. Every port
 * lies in [P, P+99] and nothing is left running after down or Ctrl-C.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalLayout } from '../../src/providers/local-layout.js';
import { loginConfig, type Login } from '../../src/workload/connect.js';
import { appLogin } from '../support/cluster.js';
import { isAlive, readPidFile, waitForExit } from '../../src/util/process.js';

const P = 17900;
const keel = (args: string[]) => spawnSync(process.execPath, ['bin/keel.js', ...args], { encoding: 'utf8', timeout: 240_000 });

interface StatusJson {
  leader: string | null;
  synchronousMode: string;
  members: { name: string; role: string; dataDir: string; agentPid: number | null; postmasterPid: number | null; address: string }[];
  connection: { rw: string; ro: string; pooled: string; nodes: string[]; passfile: string } | null;
  dashboard: string | null;
  router: { engine: string | null; why: string | null; endpoints: { rw: { address: string; engine: string | null }; ro: { address: string; engine: string | null } } } | null;
}

function status(dir: string): { code: number | null; json: StatusJson } {
  const result = keel(['status', '--dir', dir, '--json']);
  return { code: result.status, json: JSON.parse(result.stdout) as StatusJson };
}

function clusterPids(layout: LocalLayout, json: StatusJson): number[] {
  const pids = [readPidFile(layout.etcdPidFile), readPidFile(layout.supervisorPidFile), readPidFile(layout.routerPidFile), readPidFile(layout.controllerPidFile), readPidFile(layout.dashboardPidFile)];
  for (const m of json.members) pids.push(m.agentPid, m.postmasterPid, readPidFile(layout.guardPidFile(m.name)));
  return pids.filter((p): p is number => p !== null);
}

/** The processes listening on a TCP port, from `ss`. */
function listenerPids(port: number): number[] {
  const out = execFileSync('ss', ['-ltnpH', `sport = :${port}`], { encoding: 'utf8' });
  return [...out.matchAll(/pid=(\d+)/g)].map((m) => Number(m[1]));
}

/** Listening TCP ports of the given processes, from `ss`. */
function listeningPorts(pids: number[]): number[] {
  const out = execFileSync('ss', ['-ltnpH'], { encoding: 'utf8' });
  const ports: number[] = [];
  for (const line of out.split('\n')) {
    const owners = [...line.matchAll(/pid=(\d+)/g)].map((m) => Number(m[1]));
    if (!owners.some((p) => pids.includes(p))) continue;
    const port = Number(/:(\d+)\s/.exec(line)?.[1]);
    if (Number.isInteger(port)) ports.push(port);
  }
  return ports;
}

async function queryNode(address: string, login: Login, sql: string): Promise<pg.QueryResult> {
  const [host, port] = address.split(':');
  const client = new pg.Client(loginConfig(login, host!, Number(port)));
  await client.connect();
  try {
    return await client.query(sql);
  } finally {
    await client.end();
  }
}

describe('keel up / status / down', () => {
  let dir: string;
  let layout: LocalLayout;
  beforeAll(() => {
    dir = join(mkdtempSync('/tmp/keel-up-'), 'cluster');
    chmodSync(join(dir, '..'), 0o755);
    layout = new LocalLayout(dir);
  });
  afterAll(async () => {
    keel(['down', '--dir', dir]);
    await rm(join(dir, '..'), { recursive: true, force: true });
  });

  it('starts detached, reports every node, keeps its ports in range, and stops cleanly', async () => {
    const up = keel(['up', '--dir', dir, '--port-base', String(P), '--nodes', '2', '--detach']);
    expect(up.stderr).toBe('');
    expect(up.status).toBe(0);
    expect(up.stdout).toContain('is up: 2 node(s)');
    expect(up.stdout).toContain('read-write:');
    const { code, json } = status(dir);
    expect(code).toBe(0);
    expect(json.members).toHaveLength(2);
    // a cluster made with the defaults replicates synchronously
    expect(json.synchronousMode).toBe('on');
    for (const m of json.members) {
      expect(m.dataDir).toBe(layout.dataDir(m.name));
      expect(m.agentPid).toBeGreaterThan(0);
      expect(m.postmasterPid).toBeGreaterThan(0);
    }
    // the application role, over TLS with the server verified against the cluster CA
    expect(json.connection?.rw).toMatch(/^postgresql:\/\/app@127\.0\.0\.1:\d+\/app\?sslmode=verify-full&sslrootcert=/);
    expect(json.connection?.ro).toMatch(/^postgresql:\/\/app@.*sslmode=verify-full/);
    expect(decodeURIComponent(json.connection!.rw.split('sslrootcert=')[1]!)).toBe(layout.caFiles.cert);
    // the dashboard keel up runs, and the router's and controller's /metrics, in the same range
    expect(json.dashboard).toBe(`https://127.0.0.1:${P + 5}/`);
    expect(readPidFile(layout.dashboardPidFile)).toBeGreaterThan(0);
    // keel up gives the router no --engine: HAProxy, which setup installs, serves both endpoints
    expect(json.router?.engine, JSON.stringify(json.router)).toBe('haproxy');
    expect(json.router?.why).toBe('--engine auto: HAProxy is installed at /usr/sbin/haproxy');
    expect(json.router?.endpoints).toEqual({ rw: { address: `127.0.0.1:${P + 2}`, engine: 'haproxy' }, ro: { address: `127.0.0.1:${P + 3}`, engine: 'haproxy' } });
    for (const secret of Object.values(layout.readSecrets())) expect(JSON.stringify(json)).not.toContain(secret);

    // the router's pooled rw endpoint: PgBouncer on P+7, its DSN without a password
    expect(up.stdout).toContain('pooled rw:');
    expect(json.connection?.pooled).toMatch(new RegExp(`^postgresql://app@127\\.0\\.0\\.1:${P + 7}/app\\?sslmode=verify-full&sslrootcert=`));
    const pool = listenerPids(P + 7);
    expect(pool.length).toBeGreaterThan(0);
    const pids = [...clusterPids(layout, json), ...pool];
    const ports = listeningPorts(pids);
    expect(ports.length).toBeGreaterThanOrEqual(8);
    for (const port of ports) expect(port >= P && port <= P + 99, `port ${port} outside [${P}, ${P + 99}]`).toBe(true);

    const leader = json.members.find((m) => m.role === 'leader')!;
    await queryNode(leader.address, appLogin(layout), "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('still here')");

    const again = keel(['up', '--dir', dir, '--detach']);
    expect(again.status).toBe(2);
    expect(again.stderr).toContain('KEEL_ALREADY_RUNNING');

    const down = keel(['down', '--dir', dir]);
    expect(down.status).toBe(0);
    for (const pid of pids) expect(isAlive(pid), `pid ${pid} still alive after down`).toBe(false);
  });

  it('starts the same cluster again with its data; keel down stops everything even after its supervisor was killed', async () => {
    const systemIdBefore = layout.readCluster();
    const up = keel(['up', '--dir', dir, '--detach']);
    expect(up.status).toBe(0);
    const { json } = status(dir);
    const pids = clusterPids(layout, json);
    // every node runs a fencing guard
    for (const m of json.members) expect(readPidFile(layout.guardPidFile(m.name)), `${m.name}'s guard`).toBeGreaterThan(0);
    expect(layout.readCluster()).toEqual(systemIdBefore);
    const leader = json.members.find((m) => m.role === 'leader')!;
    const rows = await queryNode(leader.address, appLogin(layout), 'SELECT v FROM kept');
    expect(rows.rows).toEqual([{ v: 'still here' }]);
    process.kill(readPidFile(layout.supervisorPidFile)!, 'SIGKILL');
    expect(keel(['down', '--dir', dir]).status).toBe(0);
    for (const pid of pids) expect(await waitForExit(pid, 5000), `pid ${pid} still alive after down`).toBe(true);
  });

  it('runs in the foreground and stops everything on Ctrl-C', async () => {
    const child = spawn(process.execPath, ['bin/keel.js', 'up', '--dir', dir], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    const deadline = Date.now() + 120_000;
    while (!out.includes('is up') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
    expect(out).toContain('is up');
    const pids = clusterPids(layout, status(dir).json);
    child.kill('SIGINT');
    expect(await exited).toBe(0);
    for (const pid of pids) expect(await waitForExit(pid, 5000), `pid ${pid} still alive after Ctrl-C`).toBe(true);
  });
});
