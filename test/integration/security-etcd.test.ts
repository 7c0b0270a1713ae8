/**
 * etcd with TLS and per-component users: a real etcd started here with
 * --client-cert-auth and auth enabled by the set-up `keel up` runs
 * (src/dcs/etcd-auth.ts). Two clusters, alpha and beta, share it. Ports
 * 19540-19541.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';
import { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TlsFiles } from '../../src/config/schema.js';
import { defaultDynamicConfig } from '../../src/config/schema.js';
import { setUpEtcdAuth } from '../../src/dcs/etcd-auth.js';
import { createEtcdClient } from '../../src/dcs/etcd-client.js';
import { EtcdDcs } from '../../src/dcs/etcd.js';
import { startEtcd, stopEtcd, type RunningEtcd } from '../../src/dcs/etcd-server.js';
import { EtcdKv } from '../../src/dcs/kv-etcd.js';
import { etcdUsers, localServerNames } from '../../src/providers/local-layout.js';
import { ensureCertificate, ensureCertificateAuthority, issueCertificate, readCertificate } from '../../src/tls/pki.js';
import { sleep } from '../../src/util/clock.js';
import { silentLogger } from '../../src/util/log.js';
import { kvContract } from '../support/kv-contract.js';

const clientPort = 19540;
const peerPort = 19541;
const rootPassword = 'root-password-of-the-test';
const dir = mkdtempSync('/tmp/keel-security-etcd-');
const tlsDir = join(dir, 'tls');
const ca = { cert: join(tlsDir, 'ca.crt'), key: join(tlsDir, 'ca.key') };
const otherCa = { cert: join(tlsDir, 'other-ca.crt'), key: join(tlsDir, 'other-ca.key') };
/** a client pair of the cluster CA whose CN is `user` */
const pair = (user: string): TlsFiles => ({ ca: ca.cert, cert: join(tlsDir, `${user}.crt`), key: join(tlsDir, `${user}.key`) });
const alpha = etcdUsers('alpha');
const beta = etcdUsers('beta');
/** the CN of alpha's operator, signed by a CA etcd does not trust */
const impostor: TlsFiles = { ca: ca.cert, cert: join(tlsDir, 'impostor.crt'), key: join(tlsDir, 'impostor.key') };

let etcd: RunningEtcd | null = null;
const opened: { close(): Promise<void> | void }[] = [];

function kvAs(tls: TlsFiles | undefined, requestTimeoutMs = 2000): EtcdKv {
  const kv = new EtcdKv({ endpoints: [etcd!.endpoint], requestTimeoutMs, logger: silentLogger(), credentials: tls === undefined ? {} : { tls } });
  opened.push(kv);
  return kv;
}

function dcsAs(cluster: string, tls: TlsFiles): EtcdDcs {
  const dcs = new EtcdDcs({ endpoints: [etcd!.endpoint], cluster, requestTimeoutMs: 2000, logger: silentLogger(), credentials: { tls } });
  opened.push(dcs);
  return dcs;
}

/** GET /health over https with what is given; the status code, or the error's code when the handshake fails. */
function health(options: { ca: Buffer; cert?: Buffer; key?: Buffer }): Promise<string> {
  return new Promise((resolve) => {
    const req = request(`${etcd!.endpoint}/health`, { ...options, timeout: 2000 }, (res) => {
      res.resume();
      res.on('end', () => resolve(String(res.statusCode)));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    req.end();
  });
}

const setUp = (cluster: string, users = alpha, password = rootPassword) =>
  setUpEtcdAuth({ endpoints: [etcd!.endpoint], cluster, users, rootPassword: password, tls: pair(alpha.operator), logger: silentLogger() });

beforeAll(async () => {
  const authority = await ensureCertificateAuthority(ca, 'keel test CA');
  const other = await ensureCertificateAuthority(otherCa, 'someone else CA');
  await ensureCertificate(authority, { cert: join(tlsDir, 'etcd.crt'), key: join(tlsDir, 'etcd.key') }, { commonName: 'test-etcd', names: localServerNames, usage: 'both' });
  for (const user of [...Object.values(alpha), beta.agent]) await ensureCertificate(authority, pair(user), { commonName: user, usage: 'client' });
  await ensureCertificate(other, impostor, { commonName: alpha.operator, usage: 'client' });
  etcd = await startEtcd({
    name: 'secure',
    dataDir: join(dir, 'data'),
    clientPort,
    peerPort,
    logFile: join(dir, 'etcd.log'),
    tls: { ca: ca.cert, server: { cert: join(tlsDir, 'etcd.crt'), key: join(tlsDir, 'etcd.key') }, client: pair(alpha.operator) },
  });
  await setUp('alpha');
  // the second cluster's set-up finds auth on and logs in as root
  await setUp('beta', beta);
});

afterAll(async () => {
  for (const client of opened) await client.close();
  if (etcd !== null) await stopEtcd(etcd.pid, 10_000);
  rmSync(dir, { recursive: true, force: true });
});

describe('etcd over TLS with a certificate per component', () => {
  it('speaks https only, and only to a client that shows a certificate of the cluster CA', async () => {
    expect(etcd!.endpoint).toBe(`https://127.0.0.1:${clientPort}`);
    const caPem = readFileSync(ca.cert);
    expect(await health({ ca: caPem, cert: readFileSync(pair(alpha.router).cert), key: readFileSync(pair(alpha.router).key) })).toBe('200');
    // no certificate: the handshake fails before any request
    expect(await health({ ca: caPem })).not.toBe('200');
    expect(await health({ ca: caPem, cert: readFileSync(impostor.cert), key: readFileSync(impostor.key) })).not.toBe('200');
  });

  it('refuses a gRPC client without a certificate', async () => {
    const bare = new Etcd3({ hosts: etcd!.endpoint, credentials: { rootCertificate: readFileSync(ca.cert) }, dialTimeout: 1000 });
    opened.push(bare);
    const outcome = await Promise.race([
      bare.get('/keel/alpha/leader').string().then(() => 'answered', (err: Error) => `refused: ${err.message}`),
      sleep(10_000).then(() => 'no outcome'),
    ]);
    expect(outcome).toMatch(/^refused/);
  });

  it('refuses a certificate from another CA, even with the CN of a real user', async () => {
    await expect(kvAs(impostor).read('read', [{ key: '/keel/alpha/leader' }])).rejects.toMatchObject({ code: 'KEEL_ETCD_UNREACHABLE' });
  });

  it("refuses an etcd whose certificate is not the CA's the client trusts", async () => {
    await expect(kvAs({ ...pair(alpha.router), ca: otherCa.cert }).read('read', [{ key: '/keel/alpha/leader' }])).rejects.toMatchObject({ code: 'KEEL_ETCD_UNREACHABLE' });
  });

  it("lets the router read its cluster's keys and watch them, never write", async () => {
    const operator = dcsAs('alpha', pair(alpha.operator));
    expect(await operator.putConfig({ ...defaultDynamicConfig, ttl: 12 }, null)).toBe(true);
    const router = dcsAs('alpha', pair(alpha.router));
    expect((await router.readCluster()).config?.value.ttl).toBe(12);
    let changes = 0;
    const stop = await router.watch(() => (changes += 1));
    await operator.putConfig({ ...defaultDynamicConfig, ttl: 13 }, (await operator.readCluster()).config!.modRevision);
    for (let i = 0; i < 50 && changes === 0; i++) await sleep(100);
    expect(changes).toBeGreaterThan(0);
    await stop();
    const routerKv = kvAs(pair(alpha.router));
    await expect(routerKv.txn('put', [], [{ put: '/keel/alpha/leader', value: 'router' }])).rejects.toMatchObject({ code: 'KEEL_ETCD_FORBIDDEN' });
    await expect(router.putConfig({ ...defaultDynamicConfig, ttl: 30 }, null)).rejects.toMatchObject({ code: 'KEEL_ETCD_FORBIDDEN' });
    await expect(routerKv.read('read', [{ key: '/keel/beta/', end: '/keel/beta0' }])).rejects.toMatchObject({ code: 'KEEL_ETCD_FORBIDDEN' });
  });

  it("lets an agent hold a lease and write its cluster's prefix, not another cluster's", async () => {
    const agent = kvAs(pair(alpha.agent));
    const lease = await agent.grant(10);
    expect(await agent.txn('member', [], [{ put: '/keel/alpha/members/node1', value: 'x', lease }])).toBe(true);
    expect(await agent.keepAlive(lease)).toBe(true);
    await expect(agent.txn('member', [], [{ put: '/keel/beta/members/node1', value: 'x', lease }])).rejects.toMatchObject({ code: 'KEEL_ETCD_FORBIDDEN' });
    await expect(agent.txn('put', [], [{ put: '/keel/alphabet', value: 'x' }])).rejects.toMatchObject({ code: 'KEEL_ETCD_FORBIDDEN' });
    await expect(agent.read('read', [{ key: '/keel/beta/members/', end: '/keel/beta/members0' }])).rejects.toMatchObject({ code: 'KEEL_ETCD_FORBIDDEN' });
    // revoking needs write on every key the lease holds: all of them alpha's
    await agent.revoke(lease);
    expect((await agent.read('read', [{ key: '/keel/alpha/members/node1' }])).entries[0]).toEqual([]);
    // beta's agent is kept to beta
    const betaAgent = kvAs(pair(beta.agent));
    expect(await betaAgent.txn('put', [], [{ put: '/keel/beta/leader', value: 'b' }])).toBe(true);
    await expect(betaAgent.txn('put', [], [{ put: '/keel/alpha/leader', value: 'b' }])).rejects.toMatchObject({ code: 'KEEL_ETCD_FORBIDDEN' });
  });

  it('lets the controller take its lease-bound key; cluster-wide calls (members, status) need no role', async () => {
    const controller = dcsAs('alpha', pair(alpha.controller));
    const lease = await controller.grantLease(10);
    expect(await controller.acquireController({ v: 1, name: 'c1', pid: process.pid, startedAtMs: Date.now() }, lease)).toBe(true);
    expect((await controller.readController())?.value.name).toBe('c1');
    await controller.revokeLease(lease);
    const client = createEtcdClient([etcd!.endpoint], 2000, { tls: pair(alpha.router) });
    opened.push(client);
    expect((await client.cluster.memberList({})).members).toHaveLength(1);
    expect((await client.maintenance.status()).version).toMatch(/^3\./);
  });

  it('runs the set-up again as root: nothing to do, and a role changed by hand is put back', async () => {
    expect(await setUp('alpha')).toEqual([]);
    const root = createEtcdClient([etcd!.endpoint], 2000, { tls: pair(alpha.operator), user: 'root', password: rootPassword });
    opened.push(root);
    await root.auth.roleGrantPermission({ name: alpha.router, perm: { permType: 'Readwrite', key: Buffer.from('/keel/alpha/'), range_end: Buffer.from('/keel/alpha0') } });
    const steps = await setUp('alpha');
    expect(steps.map((s) => s.kind)).toEqual(['revoke', 'grant']);
    await expect(kvAs(pair(alpha.router)).txn('put', [], [{ put: '/keel/alpha/leader', value: 'router' }])).rejects.toMatchObject({ code: 'KEEL_ETCD_FORBIDDEN' });
  });

  it('refuses the set-up with a wrong root password', async () => {
    await expect(setUp('alpha', alpha, 'not-the-root-password')).rejects.toMatchObject({ code: 'KEEL_ETCD_FORBIDDEN' });
  });

  it('reads a pair renewed in place on reload: calls and a live watch go on over the new client', async () => {
    const files = { ...pair(alpha.agent), cert: join(tlsDir, 'renewed-agent.crt'), key: join(tlsDir, 'renewed-agent.key') };
    await issueCertificate(ca, files, { commonName: alpha.agent, usage: 'client' });
    const agent = kvAs(files);
    const seen: string[] = [];
    await agent.watch('renewal watch', '/keel/alpha/renewal/', { onChange: (change) => seen.push(change.key), onResync: () => undefined });
    const before = readCertificate(files.cert).fingerprint;
    await issueCertificate(ca, files, { commonName: alpha.agent, usage: 'client' });
    expect(readCertificate(files.cert).fingerprint).not.toBe(before);
    await agent.reloadCredentials();
    expect(await agent.txn('put', [], [{ put: '/keel/alpha/renewal/after', value: 'x' }])).toBe(true);
    for (let i = 0; i < 50 && !seen.includes('/keel/alpha/renewal/after'); i++) await sleep(100);
    expect(seen).toContain('/keel/alpha/renewal/after');
    // a pair that cannot be read leaves the client in use
    rmSync(files.key);
    await expect(agent.reloadCredentials()).rejects.toThrow();
    expect(await agent.txn('put', [], [{ put: '/keel/alpha/renewal/still', value: 'x' }])).toBe(true);
  });
});

// the key-value port behaves the same over TLS, as an agent under etcd's auth
let seq = 0;
let contractKv: EtcdKv | null = null;
kvContract('etcd with TLS and auth', () => ({
  kv: (contractKv ??= kvAs(pair(alpha.agent), 3000)),
  passTime: (ms) => sleep(ms),
  prefix: () => `/keel/alpha/contract/${process.pid}/${++seq}/`,
}));
