/**
 * Bad input gets a KEEL_* error and exit status 2, starts nothing and
 * overwrites nothing; bad values in etcd never stop an agent.
 */
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sleep } from '../../src/util/clock.js';
import { isAlive } from '../../src/util/process.js';
import { TestCluster } from '../support/cluster.js';

const keel = (args: string[], timeoutMs = 60_000) => spawnSync(process.execPath, ['bin/keel.js', ...args], { encoding: 'utf8', timeout: timeoutMs });

function nodeYaml(dir: string, overrides: Record<string, unknown> = {}): string {
  const config = {
    name: 'lonely',
    cluster: 'badinput',
    etcd: { endpoints: ['http://127.0.0.1:17099'], requestTimeoutMs: 300 },
    api: { listen: '127.0.0.1:17098' },
    postgres: {
      dataDir: join(dir, 'data'),
      port: 17097,
      superuser: { password: 'superuser-secret-1' },
      replication: { password: 'replication-secret-1' },
    },
    ...overrides,
  };
  const path = join(dir, 'node.yml');
  writeFileSync(path, stringify(config));
  return path;
}

describe('bad input', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync('/tmp/keel-bad-');
    chmodSync(dir, 0o755);
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('rejects an invalid node config naming the field, exit 2, nothing created', () => {
    const path = nodeYaml(dir, { postgres: { dataDir: join(dir, 'data'), port: 'abc', superuser: { password: 'x' }, replication: { password: 'replication-secret-1' } } });
    const result = keel(['agent', '--config', path]);
    expect(result.status).toBe(2);
    expect(result.stderr).toMatch(/KEEL_CONFIG_INVALID: .*postgres\.port: /);
    expect(result.stderr).toMatch(/postgres\.superuser\.password: /);
    expect(result.stderr).not.toContain('replication-secret-1');
    expect(existsSync(join(dir, 'data'))).toBe(false);
  });

  it('reports an unreadable config file and unknown flags with exit 2', () => {
    const missing = keel(['agent', '--config', join(dir, 'nope.yml')]);
    expect(missing.status).toBe(2);
    expect(missing.stderr).toContain('KEEL_CONFIG_UNREADABLE');
    const flag = keel(['up', '--bogus']);
    expect(flag.status).toBe(2);
    expect(flag.stderr).toContain('KEEL_USAGE');
    const nodes = keel(['up', '--dir', join(dir, 'x'), '--nodes', 'many']);
    expect(nodes.status).toBe(2);
    expect(nodes.stderr).toMatch(/KEEL_USAGE: --nodes must be a whole number/);
    const both = keel(['up', '--dir', join(dir, 'y'), '--sync', '--async']);
    expect(both.status).toBe(2);
    expect(both.stderr).toMatch(/KEEL_USAGE: --sync and --async/);
    expect(existsSync(join(dir, 'y'))).toBe(false);
  });

  it('says which PostgreSQL programs are missing', () => {
    const path = nodeYaml(dir, {
      postgres: { dataDir: join(dir, 'data'), binDir: '/nonexistent/bin', port: 17097, superuser: { password: 'superuser-secret-1' }, replication: { password: 'replication-secret-1' } },
    });
    const result = keel(['agent', '--config', path]);
    expect(result.status).toBe(2);
    expect(result.stderr).toMatch(/KEEL_BINARY_MISSING: PostgreSQL programs missing in \/nonexistent\/bin/);
    expect(result.stderr).toContain('apt-get install');
  });

  it('keeps retrying while etcd is unreachable and never starts PostgreSQL', async () => {
    const path = nodeYaml(dir);
    const child = spawn(process.execPath, ['bin/keel.js', 'agent', '--config', path], { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    try {
      for (let i = 0; i < 100 && !output.includes('waiting for it before acting'); i++) await sleep(200);
      await sleep(2000);
      expect(isAlive(child.pid!)).toBe(true);
      expect(output).toMatch(/cannot (read|watch) etcd/);
      expect(output).toContain('waiting for it before acting');
      expect(existsSync(join(dir, 'data', 'PG_VERSION'))).toBe(false);
    } finally {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    }
  });

  it('refuses to start a cluster whose ports are taken, starting nothing', async () => {
    const blocker: Server = createServer();
    await new Promise<void>((resolve, reject) => blocker.once('error', reject).listen(17812, '127.0.0.1', resolve));
    try {
      const target = join(dir, 'taken');
      const result = keel(['up', '--dir', target, '--port-base', '17800', '--detach']);
      expect(result.status).toBe(2);
      expect(result.stderr).toMatch(/KEEL_PORT_IN_USE: ports already in use on 127.0.0.1: 17812/);
      expect(existsSync(join(target, 'supervisor.pid'))).toBe(false);
      expect(existsSync(join(target, 'etcd'))).toBe(false);
    } finally {
      blocker.close();
    }
  });
});

describe('bad state', () => {
  let cluster: TestCluster;
  let dir: string;
  beforeAll(async () => {
    cluster = await TestCluster.start({ portBase: 17050, nodes: 1 });
    dir = mkdtempSync('/tmp/keel-foreign-');
    chmodSync(dir, 0o755);
  });
  afterAll(async () => {
    await cluster?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('refuses a data directory of another cluster and leaves it untouched', async () => {
    const data = join(dir, 'data');
    spawnSync('chown', ['postgres:postgres', dir]);
    const other = spawnSync('runuser', ['-u', 'postgres', '--', '/usr/lib/postgresql/15/bin/initdb', '-D', data, '-A', 'trust'], { encoding: 'utf8', cwd: '/' });
    expect(other.stderr).not.toMatch(/error/i);
    expect(other.status).toBe(0);
    const before = readFileSync(join(data, 'global', 'pg_control'));
    const secrets = cluster.layout.readSecrets();
    const path = nodeYaml(dir, {
      name: 'stranger',
      cluster: 'test',
      // an agent of the cluster as far as etcd can tell: node1's certificate
      etcd: { endpoints: [cluster.layout.etcdEndpoint(cluster.file)], tls: cluster.layout.nodeTls('node1') },
      postgres: { dataDir: data, port: 17059, superuser: { password: secrets.superuser }, replication: { password: secrets.replication } },
    });
    const child = spawn(process.execPath, ['bin/keel.js', 'agent', '--config', path], { stdio: 'ignore' });
    try {
      const view = await cluster.waitFor('the stranger to refuse', (v) => v.members.some((m) => m.name === 'stranger' && m.state === 'failed'), 30_000);
      const stranger = view.members.find((m) => m.name === 'stranger')!;
      expect(stranger.reason).toMatch(/refusing to join/);
      expect(stranger.running).toBe(false);
      expect(readFileSync(join(data, 'global', 'pg_control')).equals(before)).toBe(true);
      expect(existsSync(join(data, 'postmaster.pid'))).toBe(false);
    } finally {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    }
  });

  it('treats malformed and foreign values under the prefix as absent and keeps running', async () => {
    const leader = await cluster.leader();
    const client = cluster.operatorEtcd();
    try {
      await client.put('/keel/test/members/garbage').value('not json at all');
      await client.put('/keel/test/history').value('{"v":99,"entries":"nope"}');
      await client.put('/keel/test/sync').value('{"v":1,"leader":42}');
      await client.put('/keel/test/unknown-key').value('whatever');
      await sleep(3000);
      const view = await cluster.view();
      expect(view.members.map((m) => m.name)).toEqual([leader.name]);
      expect(view.history).toBeNull();
      expect(view.leader?.value.name).toBe(leader.name);
      expect(view.members[0]!.agentPid !== null && isAlive(view.members[0]!.agentPid)).toBe(true);
      await cluster.query(leader.pgPort, 'SELECT 1');
      const log = readFileSync(cluster.layout.agentLog(leader.name), 'utf8');
      expect(log).toMatch(/members\/garbage/);
    } finally {
      await client.delete().key('/keel/test/members/garbage');
      await client.delete().key('/keel/test/history');
      await client.delete().key('/keel/test/sync');
      await client.delete().key('/keel/test/unknown-key');
      client.close();
    }
  });
});
