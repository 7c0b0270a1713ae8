/**
 * The agents' REST API on a real three-node cluster, and a real HAProxy 2.6
 * using Patroni's reference health-check config in front of it: it must route
 * to the leader, follow a switchover requested through the API, and follow a
 * failover after the leader node is killed. The APIs serve HTTPS with each
 * node's certificate; each node takes only its own token.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nodeApiToken, portOffsets } from '../../src/providers/local-layout.js';
import { sleep } from '../../src/util/clock.js';
import { terminate } from '../../src/util/process.js';
import { apiRequest } from '../support/api-client.js';
import { TestCluster } from '../support/cluster.js';

const portBase = 17400;
const haproxyRwPort = 17480;
const haproxyRoPort = 17481;
const names = ['node1', 'node2', 'node3'];
const apiPort = (name: string) => portBase + portOffsets.nodeApi + Number(name.replace('node', '')) - 1;

/** The cluster's CA, which every node's certificate chains to; set once the cluster runs. */
let caFile = '';

async function api(name: string, path: string, init: { method?: string; headers?: Record<string, string>; body?: string } = {}): Promise<{ status: number; json: any; text: string; headers: Headers }> {
  const res = await apiRequest(`https://127.0.0.1:${apiPort(name)}${path}`, { ...init, caFile });
  const headers = new Headers(Object.entries(res.headers).flatMap(([k, v]): [string, string][] => (v === undefined ? [] : [[k, Array.isArray(v) ? v.join(', ') : v]])));
  return { status: res.status, json: res.json, text: res.text, headers };
}

/** Polls `probe` until it returns true; fails with `what` and the last value seen. */
async function until(what: string, probe: () => Promise<unknown>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown = null;
  while (Date.now() < deadline) {
    try {
      last = await probe();
      if (last === true) return;
    } catch (err) {
      last = err instanceof Error ? err.message : String(err);
    }
    await sleep(250);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${JSON.stringify(last)})`);
}

/** Patroni's reference HAProxy config: TCP proxying, HTTP checks against each agent's API, over TLS verified against the cluster CA. */
function haproxyConfig(pgPort: (name: string) => number): string {
  const checkTls = `check-ssl verify required ca-file ${caFile} verifyhost localhost`;
  const servers = names.map((n) => `    server ${n} 127.0.0.1:${pgPort(n)} maxconn 100 check port ${apiPort(n)} ${checkTls}`).join('\n');
  return `global
    maxconn 200
defaults
    mode tcp
    retries 2
    timeout client 30m
    timeout connect 4s
    timeout server 30m
    timeout check 5s
listen primary
    bind 127.0.0.1:${haproxyRwPort}
    option httpchk OPTIONS /primary
    http-check expect status 200
    default-server inter 1s fall 2 rise 1 on-marked-down shutdown-sessions
${servers}
listen replicas
    bind 127.0.0.1:${haproxyRoPort}
    balance roundrobin
    option httpchk OPTIONS /replica
    http-check expect status 200
    default-server inter 1s fall 2 rise 1 on-marked-down shutdown-sessions
${servers}
`;
}

describe('agent REST API', () => {
  let cluster: TestCluster;
  let tokens: Record<string, string>;
  let tmp: string | null = null;
  let haproxy: ChildProcess | null = null;
  const bearer = (name: string) => ({ authorization: `Bearer ${tokens[name]}`, 'content-type': 'application/json' });

  /** Which node a connection through HAProxy reached, and whether it is writable. */
  const through = async (port: number) => {
    const [row] = await cluster.query<{ r: boolean; port: string }>(port, "SELECT pg_is_in_recovery() AS r, current_setting('port') AS port");
    return { inRecovery: row!.r, pgPort: Number(row!.port) };
  };

  /** True once `streak` consecutive connections through rw all reach `leader`'s writable primary. */
  const rwReaches = async (leaderPgPort: number, streak: number) => {
    for (let i = 0; i < streak; i++) {
      const at = await through(haproxyRwPort);
      if (at.inRecovery || at.pgPort !== leaderPgPort) return at;
    }
    return true;
  };

  beforeAll(async () => {
    cluster = await TestCluster.start({ portBase });
    const secrets = cluster.layout.readSecrets();
    tokens = Object.fromEntries(names.map((n) => [n, nodeApiToken(secrets, n)]));
    caFile = cluster.layout.caFiles.cert;
  });

  afterAll(async () => {
    if (haproxy?.pid !== undefined) await terminate(haproxy.pid, 5000);
    if (tmp !== null) await rm(tmp, { recursive: true, force: true });
    await cluster?.stop();
  });

  it('answers the health checks as a leader on the leader and as a replica on the others', async () => {
    const leader = (await cluster.leader()).name;
    const replicas = names.filter((n) => n !== leader);
    // the agents' snapshots trail etcd by up to a loop: wait for every replica to report streaming
    await until('both replicas to pass /replica', async () => (await Promise.all(replicas.map((n) => api(n, '/replica')))).every((r) => r.status === 200), 20_000);
    for (const method of ['GET', 'HEAD', 'OPTIONS']) {
      for (const [path, onLeader, onReplica] of [
        ['/primary', 200, 503], ['/read-write', 200, 503], ['/leader', 200, 503], ['/master', 200, 503],
        ['/replica', 503, 200], ['/replica?lag=16MB', 503, 200], ['/read-only', 200, 200],
        ['/health', 200, 200], ['/liveness', 200, 200], ['/readiness', 200, 200],
      ] as const) {
        expect((await api(leader, path, { method })).status, `${method} ${path} on ${leader}`).toBe(onLeader);
        for (const r of replicas) expect((await api(r, path, { method })).status, `${method} ${path} on ${r}`).toBe(onReplica);
      }
    }
    expect((await api(leader, '/primary')).json).toMatchObject({ name: leader, role: 'leader', postgres: 'running', leader, timeline: expect.any(Number) });
    expect((await api(replicas[0]!, '/replica')).json).toMatchObject({ role: 'replica', streaming: true, lag_bytes: expect.any(Number) });
  });

  it('GET /cluster lists the three members with the leader; /history and /metrics answer', async () => {
    const leader = (await cluster.leader()).name;
    const res = await api('node2', '/cluster');
    expect(res.status).toBe(200);
    expect(res.json.members.map((m: { name: string }) => m.name)).toEqual(names);
    expect(res.json.leader).toBe(leader);
    expect(res.json.members.find((m: { role: string }) => m.role === 'leader').name).toBe(leader);
    for (const m of res.json.members) expect(m.api_url).toBe(`https://127.0.0.1:${apiPort(m.name)}`);
    expect(Array.isArray((await api('node1', '/history')).json)).toBe(true);

    const metrics = await api(leader, '/metrics');
    expect(metrics.status).toBe(200);
    for (const name of ['keel_role', 'keel_timeline', 'keel_replication_lag_bytes', 'keel_lease_renewals_total', 'keel_lease_renewal_failures_total', 'keel_decisions_total', 'keel_failovers_total', 'keel_postgres_running', 'process_cpu_seconds_total']) {
      expect(metrics.text).toContain(name);
    }
    expect(metrics.text).toMatch(/keel_role\{role="leader",[^}]*\} 1/);
    // the node certificate keel up issued lasts a year
    const expiry = Number(/keel_tls_certificate_expiry_seconds\{[^}]*\} (\S+)/.exec(metrics.text)?.[1]);
    expect(expiry / 86_400).toBeGreaterThan(360);
    expect(expiry / 86_400).toBeLessThanOrEqual(366);
    for (const n of names) expect(metrics.text).not.toContain(tokens[n]);
  });

  it('PATCH /config compare-and-swaps on the etcd key and refuses invalid values with 400', async () => {
    const before = await api('node1', '/config');
    const etag = before.headers.get('etag')!;
    const patched = await api('node1', '/config', { method: 'PATCH', headers: { ...bearer('node1'), 'if-match': etag }, body: JSON.stringify({ maximum_lag_on_failover: 2 * 1024 * 1024 }) });
    expect(patched.status).toBe(200);
    expect(patched.json.maximum_lag_on_failover).toBe(2 * 1024 * 1024);
    expect((await cluster.view()).config?.value.maximum_lag_on_failover).toBe(2 * 1024 * 1024);
    expect(patched.headers.get('etag')).not.toBe(etag);
    // the same stale revision again: someone (we) changed it meanwhile
    const stale = await api('node2', '/config', { method: 'PATCH', headers: { ...bearer('node2'), 'if-match': etag }, body: JSON.stringify({ maximum_lag_on_failover: 1 }) });
    expect(stale.status).toBe(409);
    expect(stale.json.code).toBe('KEEL_CONFLICT');
    const invalid = await api('node3', '/config', { method: 'PATCH', headers: bearer('node3'), body: JSON.stringify({ ttl: 1 }) });
    expect(invalid.status).toBe(400);
    expect(invalid.json).toMatchObject({ code: 'KEEL_CONFIG_INVALID' });
    expect(invalid.json.message).toContain('ttl');
    expect((await api('node3', '/config', { method: 'PATCH', body: JSON.stringify({ ttl: 20 }), headers: { 'content-type': 'application/json' } })).status).toBe(401);
    expect((await cluster.view()).config?.value).toMatchObject({ ttl: 10, maximum_lag_on_failover: 2 * 1024 * 1024 });
  });

  it('refuses writes without the token (401), with a wrong one or another node\'s (403), and a failover to an unknown member (412)', async () => {
    const body = JSON.stringify({ candidate: 'node2' });
    expect((await api('node1', '/switchover', { method: 'POST', body, headers: { 'content-type': 'application/json' } })).status).toBe(401);
    expect((await api('node1', '/switchover', { method: 'POST', body, headers: { ...bearer('node1'), authorization: `Bearer ${tokens.node1}-wrong` } })).status).toBe(403);
    expect((await api('node1', '/switchover', { method: 'POST', body, headers: bearer('node2') })).status).toBe(403);
    const unknown = await api('node2', '/failover', { method: 'POST', headers: bearer('node2'), body: JSON.stringify({ candidate: 'node9' }) });
    expect(unknown.status).toBe(412);
    expect(unknown.json.code).toBe('KEEL_UNKNOWN_MEMBER');
    expect(unknown.json.message).toContain('node9');
    expect((await cluster.view()).switchover).toBeNull();
  });

  it('POST /restart stops a replica\'s PostgreSQL and the agent brings it back streaming', async () => {
    const replica = (await cluster.view()).members.find((m) => m.role === 'replica')!.name;
    expect((await api(replica, '/status')).json.postgres).toBe('running');
    const res = await api(replica, '/restart', { method: 'POST', headers: { authorization: `Bearer ${tokens[replica]}` } });
    expect(res.status).toBe(202);
    await until(`${replica} to stream again`, async () => (await api(replica, '/replica')).status === 200, 30_000);
  });

  it('a second agent for the same node stops at once with KEEL_PORT_IN_USE (exit 2)', () => {
    let status = 0;
    let stderr = '';
    try {
      execFileSync(process.execPath, ['bin/keel.js', 'agent', '--config', cluster.layout.nodeConfigFile('node1')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 20_000 });
    } catch (err) {
      ({ status, stderr } = err as { status: number; stderr: string });
    }
    expect(status).toBe(2);
    expect(stderr).toContain('KEEL_PORT_IN_USE');
    expect(stderr).not.toContain(tokens.node1);
  });

  it('after keel certs rotate each agent serves its new certificate (SIGHUP), without a restart', async () => {
    const fingerprint = (name: string) =>
      new Promise<string>((resolve, reject) => {
        const socket = tls.connect({ host: '127.0.0.1', port: apiPort(name), ca: readFileSync(caFile) }, () => {
          resolve(socket.getPeerX509Certificate()!.fingerprint256);
          socket.destroy();
        });
        socket.once('error', reject);
        socket.setTimeout(10_000, () => socket.destroy(new Error(`no TLS handshake with ${name} within 10 s`)));
      });
    const before = await Promise.all(names.map(fingerprint));
    const agentPids = (await cluster.view()).members.map((m) => m.agentPid);
    execFileSync(process.execPath, ['bin/keel.js', 'certs', 'rotate', '--dir', cluster.layout.dir], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 60_000 });
    await until('every API to serve its new certificate', async () => (await Promise.all(names.map(fingerprint))).every((print, i) => print !== before[i]), 10_000);
    for (const n of names) expect(readFileSync(cluster.layout.agentLog(n), 'utf8')).toContain("reloaded the REST API's certificate");
    expect((await cluster.view()).members.map((m) => m.agentPid)).toEqual(agentPids);
    expect((await api('node1', '/restart', { method: 'POST', headers: { authorization: `Bearer ${tokens.node2}` } })).status).toBe(403);
  });

  it('HAProxy with Patroni\'s check config routes rw to the leader and ro to a replica', async () => {
    tmp = mkdtempSync('/tmp/keel-haproxy-');
    const cfg = join(tmp, 'haproxy.cfg');
    writeFileSync(cfg, haproxyConfig((n) => cluster.pgPort(n)));
    execFileSync('/usr/sbin/haproxy', ['-c', '-q', '-f', cfg], { stdio: 'pipe' });
    const log = openSync(join(tmp, 'haproxy.log'), 'a');
    haproxy = spawn('/usr/sbin/haproxy', ['-db', '-f', cfg], { stdio: ['ignore', log, log] });
    closeSync(log);
    const leader = await cluster.leader();
    // HAProxy starts with every server up: wait until the checks took the replicas out
    await until('rw through HAProxy to reach the leader', () => rwReaches(leader.pgPort, 6), 20_000).catch((err) => {
      throw new Error(`${(err as Error).message}\nhaproxy log:\n${readFileSync(join(tmp!, 'haproxy.log'), 'utf8')}`);
    });
    await until('ro through HAProxy to reach replicas only', async () => {
      for (let i = 0; i < 4; i++) if (!(await through(haproxyRoPort)).inRecovery) return false;
      return true;
    }, 20_000);
  });

  it('POST /switchover moves the leader, and HAProxy follows', async () => {
    const old = await cluster.leader();
    const candidate = names.find((n) => n !== old.name)!;
    const res = await api(candidate, '/switchover', { method: 'POST', headers: bearer(candidate), body: JSON.stringify({ leader: old.name, candidate }) });
    expect(res.status).toBe(202);
    expect(res.json).toMatchObject({ from: old.name, to: candidate, failover: false });
    await cluster.waitFor(`${candidate} to lead`, (v) => v.leader?.value.name === candidate && v.members.some((m) => m.name === candidate && m.role === 'primary'), 60_000);
    await until(`rw through HAProxy to reach ${candidate}`, () => rwReaches(cluster.pgPort(candidate), 3), 30_000);
    await until(`${candidate} to answer /primary`, async () => (await api(candidate, '/primary', { method: 'OPTIONS' })).status === 200, 10_000);
    // the next test kills the leader: start it from a healthy cluster, every replica streaming on the new timeline.
    // Generous: the old leader's postmaster exits only once its archiver is done with the last segment, which took
    // over 30 s once on a loaded machine (pgBackRest's archive-push waits up to archive-timeout, 60 s); it rejoins after.
    await cluster.waitFor('both replicas to stream from the new leader', (v) => {
      const lead = v.members.find((m) => m.name === candidate);
      return v.members.filter((m) => m.name !== candidate && m.role === 'replica' && m.streaming && m.timeline === lead?.timeline).length === 2;
    }, 90_000);
  });

  it('after the leader node is killed, HAProxy routes rw to the new leader', async () => {
    const old = await cluster.leader();
    expect((await cluster.local.provider.fence(old.name)).confirmed).toBe(true);
    const view = await cluster.waitFor('a new leader', (v) => {
      const name = v.leader?.value.name;
      return name !== undefined && name !== old.name && v.members.some((m) => m.name === name && m.role === 'primary');
    }, 60_000);
    const next = view.leader!.value.name;
    await until(`rw through HAProxy to reach ${next}`, () => rwReaches(cluster.pgPort(next), 3), 30_000);
    await cluster.query(haproxyRwPort, 'CREATE TABLE api_after_failover (n int)');
    await cluster.query(haproxyRwPort, 'INSERT INTO api_after_failover VALUES (1)');
  });
});
