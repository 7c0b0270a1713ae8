/**
 * PostgreSQL as Keel secures it, against the real server: TLS only, the
 * superuser on the local socket alone, replication by the cluster's client
 * certificate, and connections to other nodes that give nothing to a server
 * which cannot prove who it is.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nodeConfigSchema, type NodeConfig } from '../../src/config/schema.js';
import { isKeelError } from '../../src/errors.js';
import { LocalPostgres } from '../../src/postgres/local.js';
import { ensureCertificateAuthority, issueCertificate } from '../../src/tls/pki.js';
import { silentLogger } from '../../src/util/log.js';

const ports = { node1: 19580, node2: 19581, fake: 19589 } as const;
const secrets = { superuser: 'sec-super-pw-0001', rewind: 'sec-rewind-pw-001', app: 'sec-app-pw-000001' };
const pgbin = '/usr/lib/postgresql/15/bin';

const postgresUser = (): { uid: number; gid: number } | null =>
  process.getuid?.() === 0
    ? { uid: Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' })), gid: Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' })) }
    : null;

function configFor(dir: string, name: 'node1' | 'node2'): NodeConfig {
  const tls = join(dir, name, 'tls');
  return nodeConfigSchema.parse({
    name,
    cluster: 'sec',
    etcd: { endpoints: ['https://127.0.0.1:2379'] },
    api: { listen: '127.0.0.1:8008' },
    tls: { ca: join(dir, 'ca.crt'), cert: join(tls, 'node.crt'), key: join(tls, 'node.key') },
    postgres: {
      dataDir: join(dir, name, 'postgres', 'data'),
      port: ports[name],
      superuser: { password: secrets.superuser },
      replication: { cert: join(tls, 'replication.crt'), key: join(tls, 'replication.key') },
      rewind: { password: secrets.rewind },
      app: { password: secrets.app },
    },
  });
}

/** libpq's answer to a connection string: exit status and what psql printed. */
function psql(conninfo: string, command = 'SELECT 1'): { status: number | null; output: string } {
  const result = spawnSync(`${pgbin}/psql`, ['-XAtq', '-d', conninfo, '-c', command], {
    encoding: 'utf8',
    env: { PATH: process.env.PATH ?? '/usr/bin', PGCONNECT_TIMEOUT: '5' },
    timeout: 20_000,
  });
  return { status: result.status, output: `${result.stdout}${result.stderr}` };
}

/**
 * A server that pretends to be PostgreSQL: it declines TLS, then asks for a
 * clear-text password, and records every byte a client sends.
 */
function fakeServer(port: number): Promise<{ received: () => Buffer; afterPasswordRequest: () => Buffer; close: () => Promise<void> }> {
  const chunks: Buffer[] = [];
  const answers: Buffer[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    let askedPassword = false;
    socket.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      if (askedPassword) {
        answers.push(chunk);
        return;
      }
      if (chunk.length >= 8 && chunk.readUInt32BE(4) === 80877103) {
        socket.write('N');
        return;
      }
      // a start-up packet: AuthenticationCleartextPassword ('R', length 8, code 3)
      askedPassword = true;
      socket.write(Buffer.from([0x52, 0, 0, 0, 8, 0, 0, 0, 3]));
    });
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () =>
      resolve({
        received: () => Buffer.concat(chunks),
        afterPasswordRequest: () => Buffer.concat(answers),
        close: () =>
          new Promise<void>((done) => {
            for (const socket of sockets) socket.destroy();
            server.close(() => done());
          }),
      }),
    );
  });
}

describe('PostgreSQL secured by default', () => {
  let dir: string;
  let node1: LocalPostgres;
  let node2: LocalPostgres;
  let ca: string;

  beforeAll(async () => {
    dir = mkdtempSync('/tmp/keel-sec-');
    chmodSync(dir, 0o755);
    const authority = await ensureCertificateAuthority({ cert: join(dir, 'ca.crt'), key: join(dir, 'ca.key') }, 'keel sec CA');
    ca = authority.cert;
    for (const name of ['node1', 'node2'] as const) {
      const tls = join(dir, name, 'tls');
      await issueCertificate(authority, { cert: join(tls, 'node.crt'), key: join(tls, 'node.key') }, { commonName: 'sec-agent', names: ['127.0.0.1', 'localhost'], usage: 'both', keyOwner: postgresUser() });
      await issueCertificate(authority, { cert: join(tls, 'replication.crt'), key: join(tls, 'replication.key') }, { commonName: 'replicator', usage: 'client', keyOwner: postgresUser() });
    }
    // a second CA, as an attacker would bring, with a certificate that claims the replication role
    const other = await ensureCertificateAuthority({ cert: join(dir, 'other', 'ca.crt'), key: join(dir, 'other', 'ca.key') }, 'someone else');
    await issueCertificate(other, { cert: join(dir, 'other', 'replication.crt'), key: join(dir, 'other', 'replication.key') }, { commonName: 'replicator', usage: 'client' });

    node1 = new LocalPostgres(configFor(dir, 'node1'), silentLogger());
    node2 = new LocalPostgres(configFor(dir, 'node2'), silentLogger());
    await node1.initdb();
    await node1.start({ replica: false, upstream: null, slotName: 'node1', parameters: {} });
    await node1.createClusterObjects();
    await node1.syncSlots(['node2']);
    await node2.basebackup({ name: 'node1', host: '127.0.0.1', port: ports.node1 });
    await node2.start({ replica: true, upstream: { name: 'node1', host: '127.0.0.1', port: ports.node1 }, slotName: 'node2', parameters: {} });
  }, 120_000);

  afterAll(async () => {
    for (const node of [node1, node2]) {
      if (!node) continue;
      await node.stop('immediate').catch(() => undefined);
      await node.close();
    }
    if (dir && !process.env.KEEL_KEEP_TEST_DIR) rmSync(dir, { recursive: true, force: true });
  });

  const appUrl = (port: number, extra = 'sslmode=verify-full') => `postgresql://app:${secrets.app}@127.0.0.1:${port}/app?${extra}&sslrootcert=${ca}`;

  it('serves the application role over TLS with the server verified (verify-full), with PostGIS', async () => {
    const client = new pg.Client({ host: '127.0.0.1', port: ports.node1, user: 'app', password: secrets.app, database: 'app', ssl: { ca: readFileSync(ca, 'utf8') } });
    await client.connect();
    try {
      const { rows } = await client.query<{ ssl: boolean; owner: string; postgis: string }>(
        `SELECT ssl, (SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'app') AS owner, postgis_lib_version() AS postgis
           FROM pg_stat_ssl WHERE pid = pg_backend_pid()`,
      );
      expect(rows[0]).toMatchObject({ ssl: true, owner: 'app' });
      expect(rows[0]?.postgis).toMatch(/^3\./);
    } finally {
      await client.end();
    }
    expect(psql(appUrl(ports.node2))).toMatchObject({ status: 0 });
  });

  it('refuses a plaintext connection to any node', () => {
    for (const port of [ports.node1, ports.node2]) {
      const result = psql(appUrl(port, 'sslmode=disable'));
      expect(result.status).not.toBe(0);
      expect(result.output).toMatch(/no encryption/);
    }
  });

  it('refuses the superuser over the network, even with TLS and the right password', () => {
    const result = psql(`postgresql://postgres:${secrets.superuser}@127.0.0.1:${ports.node1}/postgres?sslmode=verify-full&sslrootcert=${ca}`);
    expect(result.status).not.toBe(0);
    expect(result.output).toMatch(/pg_hba\.conf rejects connection/);
  });

  it('lets the replication role in only with a client certificate of the cluster CA', () => {
    const base = `host=127.0.0.1 port=${ports.node1} user=replicator replication=true sslmode=verify-full sslrootcert=${ca}`;
    const withCert = (cert: string, key: string) => `${base} sslcert=${cert} sslkey=${key}`;
    const replicationPsql = (conninfo: string) => psql(conninfo, 'IDENTIFY_SYSTEM');
    // the node's own replication certificate logs in (the running replica proves it streams)
    const own = replicationPsql(withCert(join(dir, 'node2', 'tls', 'replication.crt'), join(dir, 'node2', 'tls', 'replication.key')));
    expect(own).toMatchObject({ status: 0 });
    // no certificate: nothing to log in with
    const none = replicationPsql(base);
    expect(none.status).not.toBe(0);
    expect(none.output).toMatch(/certificate|authentication failed|no password supplied/);
    // a certificate from another CA with the right CN
    const foreign = replicationPsql(withCert(join(dir, 'other', 'replication.crt'), join(dir, 'other', 'replication.key')));
    expect(foreign.status).not.toBe(0);
    expect(foreign.output).toMatch(/unknown ca|certificate/);
    // a certificate of the cluster CA for another name (the agent's)
    const otherName = replicationPsql(withCert(join(dir, 'node2', 'tls', 'node.crt'), join(dir, 'node2', 'tls', 'node.key')));
    expect(otherName.status).not.toBe(0);
    expect(otherName.output).toMatch(/certificate authentication failed/);
  });

  it('replicates over TLS with the cluster certificate', async () => {
    const client = new pg.Client({ host: join(dir, 'node1', 'postgres'), port: ports.node1, user: 'postgres', password: secrets.superuser, database: 'postgres' });
    await client.connect();
    try {
      let row: { ssl: boolean; client_dn: string | null } | undefined;
      for (let attempt = 0; attempt < 50 && row === undefined; attempt += 1) {
        ({ rows: [row] } = await client.query<{ ssl: boolean; client_dn: string | null }>(
          `SELECT s.ssl, s.client_dn FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid) WHERE r.application_name = 'node2'`,
        ));
        if (row === undefined) await new Promise((resolve) => setTimeout(resolve, 200));
      }
      expect(row).toMatchObject({ ssl: true, client_dn: '/CN=replicator' });
    } finally {
      await client.end();
    }
  });

  it('gives a server that declines TLS and asks for a clear-text password nothing: neither a clone nor pg_rewind', async () => {
    const fake = await fakeServer(ports.fake);
    try {
      const target = { name: 'impostor', host: '127.0.0.1', port: ports.fake };
      const clone = new LocalPostgres({ ...configFor(dir, 'node2'), postgres: { ...configFor(dir, 'node2').postgres, dataDir: join(dir, 'clone', 'postgres', 'data') } }, silentLogger());
      const cloneError = await clone.basebackup(target).then(() => null, (err: unknown) => err);
      expect(isKeelError(cloneError)).toBe(true);
      const rewindError = await clone.rewind(target).then(() => null, (err: unknown) => err);
      expect(isKeelError(rewindError)).toBe(true);
      await clone.close();
      const bytes = fake.received();
      // both clients did reach it: they sent SSLRequests, then gave up without a start-up packet
      expect(bytes.length).toBeGreaterThanOrEqual(8);
      expect(fake.afterPasswordRequest().length).toBe(0);
      for (const secret of Object.values(secrets)) expect(bytes.includes(Buffer.from(secret))).toBe(false);
    } finally {
      await fake.close();
    }
  });
});
