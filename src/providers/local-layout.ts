/**
 * The files of a local cluster (`keel up --dir DIR`): where each part keeps
 * its data, logs and PID, and the ports it uses, all within [P, P+99].
 */
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { writeFileNoFollow } from '../util/safe-file.js';
import { join, resolve } from 'node:path';
import { z } from 'zod';
import { stringify as toYaml } from 'yaml';
import type { NodeConfig, TlsFiles } from '../config/schema.js';
import { ensureCertificate, ensureCertificateAuthority, type CertificatePair, type CertificateRequest } from '../tls/pki.js';
import type { FileOwner } from '../util/safe-file.js';
import { nameSchema } from '../model/names.js';
import { validate } from '../config/load.js';
import { KeelError } from '../errors.js';

export const maxLocalNodes = 20;

export const clusterFileSchema = z
  .object({
    v: z.literal(1),
    cluster: nameSchema,
    portBase: z.number().int().min(1024).max(65436),
    nodes: z.number().int().min(1).max(maxLocalNodes),
    synchronousMode: z.enum(['off', 'on', 'strict']).default('on'),
  })
  .strict();
export type ClusterFile = z.infer<typeof clusterFileSchema>;

/**
 * The cluster's generated secrets (secrets.json, 0600). apiToken is the key each node's own API token is
 * derived from (nodeApiToken): one node's token opens no other node's API.
 */
const secretsSchema = z
  .object({
    superuser: z.string().min(16),
    replication: z.string().min(16),
    apiToken: z.string().min(32),
    app: z.string().min(16),
    rewind: z.string().min(16),
    etcdRoot: z.string().min(16),
    /** the backup repository's key (pgBackRest's repo1-cipher-pass); never printed */
    backupCipher: z.string().min(32).optional(),
  })
  .strict();
export type Secrets = z.infer<typeof secretsSchema>;

const newSecret = (bytes = 24): string => randomBytes(bytes).toString('base64url');

/** Fills what an older secrets file lacks; keeps every value it has that is still long enough. */
function completeSecrets(existing: Record<string, unknown>): Secrets {
  const keep = (name: string, min: number, bytes?: number): string => {
    const value = existing[name];
    return typeof value === 'string' && value.length >= min ? value : newSecret(bytes);
  };
  return {
    superuser: keep('superuser', 16),
    replication: keep('replication', 16),
    apiToken: keep('apiToken', 32, 32),
    app: keep('app', 16),
    rewind: keep('rewind', 16),
    etcdRoot: keep('etcdRoot', 16),
    backupCipher: keep('backupCipher', 32, 48),
  };
}

/** One certificate a local cluster keeps, with what it takes to issue it again. */
export interface LeafCertificate {
  what: string;
  pair: CertificatePair;
  request: CertificateRequest;
}

/** Secrets for code that only needs the layout's shape (ports, paths), never a password. */
export const placeholderSecrets: Secrets = { superuser: 'x'.repeat(16), replication: 'x'.repeat(16), apiToken: 'x'.repeat(32), app: 'x'.repeat(16), rewind: 'x'.repeat(16), etcdRoot: 'x'.repeat(16), backupCipher: 'x'.repeat(32) };

/** Node `name`'s API token: 32 bytes derived from the cluster's key, so each node has its own and the CLI can find any of them. */
export function nodeApiToken(secrets: Secrets, name: string): string {
  return apiTokenFromKey(secrets.apiToken, name);
}

/** The same derivation from the key alone (on AWS the controller holds the key, not the other secrets). */
export function apiTokenFromKey(key: string, name: string): string {
  return createHmac('sha256', key).update(`keel api token:${name}`).digest('base64url');
}

/** The etcd users (the CN of each component's client certificate) of a cluster. */
export function etcdUsers(cluster: string): { agent: string; router: string; controller: string; operator: string } {
  return { agent: `${cluster}-agent`, router: `${cluster}-router`, controller: `${cluster}-controller`, operator: `${cluster}-operator` };
}

/** The names a local cluster's servers answer to. */
export const localServerNames = ['127.0.0.1', 'localhost', '::1'];

/** Port offsets from the base; every port lies in [P, P+99]. routerApi: the router's /metrics and /status; routerPool: its pooled rw endpoint (PgBouncer). */
export const portOffsets = { etcdClient: 0, etcdPeer: 1, routerRw: 2, routerRo: 3, routerApi: 4, dashboard: 5, controllerMetrics: 6, routerPool: 7, nodePg: 10, nodeApi: 40 } as const;

export class LocalLayout {
  readonly dir: string;
  constructor(dir: string) {
    this.dir = resolve(dir);
  }
  get clusterFile(): string { return join(this.dir, 'keel.json'); }
  get secretsFile(): string { return join(this.dir, 'secrets.json'); }
  get pgpassFile(): string { return join(this.dir, 'pgpass'); }
  get supervisorPidFile(): string { return join(this.dir, 'supervisor.pid'); }
  get supervisorLog(): string { return join(this.dir, 'supervisor.log'); }
  get etcdDir(): string { return join(this.dir, 'etcd'); }
  get etcdLog(): string { return join(this.dir, 'etcd.log'); }
  get etcdPidFile(): string { return join(this.dir, 'etcd.pid'); }
  get routerPidFile(): string { return join(this.dir, 'router.pid'); }
  get routerLog(): string { return join(this.dir, 'router.log'); }
  get controllerPidFile(): string { return join(this.dir, 'controller.pid'); }
  get controllerLog(): string { return join(this.dir, 'controller.log'); }
  get dashboardPidFile(): string { return join(this.dir, 'dashboard.pid'); }
  get dashboardLog(): string { return join(this.dir, 'dashboard.log'); }
  /** the dashboard's token for actions (0600), derived from the cluster's key */
  get dashboardTokenFile(): string { return join(this.dir, 'dashboard-token'); }
  /** the cluster's backup repository (pgBackRest, posix): PostgreSQL's OS user owns it, 0700 */
  get backupDir(): string { return join(this.dir, 'backup'); }
  /** present while a node is fenced: no supervisor may start its agent again */
  fencedMarker(name: string): string { return join(this.nodeDir(name), 'fenced'); }
  /** the cluster's certificates: the CA (its key 0600), etcd's server pair and the clients' pairs */
  get tlsDir(): string { return join(this.dir, 'tls'); }
  get caFiles(): CertificatePair { return { cert: join(this.tlsDir, 'ca.crt'), key: join(this.tlsDir, 'ca.key') }; }
  get etcdServerFiles(): CertificatePair { return { cert: join(this.tlsDir, 'etcd.crt'), key: join(this.tlsDir, 'etcd.key') }; }
  /** the HTTPS pair of the dashboard and of the router's and controller's /metrics */
  get webServerFiles(): CertificatePair { return { cert: join(this.tlsDir, 'web.crt'), key: join(this.tlsDir, 'web.key') }; }
  /** a client pair for a component that is not a node (router, controller, operator) */
  clientTls(component: 'router' | 'controller' | 'operator'): TlsFiles {
    return { ca: this.caFiles.cert, cert: join(this.tlsDir, `${component}.crt`), key: join(this.tlsDir, `${component}.key`) };
  }
  /** node `name`'s own pair (PostgreSQL, API, etcd client) */
  nodeTls(name: string): TlsFiles {
    const dir = join(this.nodeDir(name), 'tls');
    return { ca: this.caFiles.cert, cert: join(dir, 'node.crt'), key: join(dir, 'node.key') };
  }
  /** node `name`'s replication client pair (CN = the replication role) */
  nodeReplicationTls(name: string): CertificatePair {
    const dir = join(this.nodeDir(name), 'tls');
    return { cert: join(dir, 'replication.crt'), key: join(dir, 'replication.key') };
  }
  /** Nodes that have a config on disk, in index order (the initial ones and any a controller added). */
  nodeNames(): string[] {
    let entries: string[] = [];
    try {
      entries = readdirSync(join(this.dir, 'nodes'));
    } catch {
      return [];
    }
    return entries
      .filter((name) => /^node\d+$/.test(name) && existsSync(this.nodeConfigFile(name)))
      .sort((a, b) => Number(a.slice(4)) - Number(b.slice(4)));
  }
  nodeDir(name: string): string { return join(this.dir, 'nodes', name); }
  nodeConfigFile(name: string): string { return join(this.nodeDir(name), 'node.yml'); }
  agentLog(name: string): string { return join(this.nodeDir(name), 'agent.log'); }
  agentPidFile(name: string): string { return join(this.nodeDir(name), 'agent.pid'); }
  /** PostgreSQL's own directory (owned by its OS user): data, socket, log, password file. node.yml and keys stay outside it. */
  postgresDir(name: string): string { return join(this.nodeDir(name), 'postgres'); }
  dataDir(name: string): string { return join(this.postgresDir(name), 'data'); }
  guardLog(name: string): string { return join(this.nodeDir(name), 'guard.log'); }
  guardPidFile(name: string): string { return join(this.nodeDir(name), 'guard.pid'); }
  /** the fencing guard's socket: in the node directory, or a short path when that one is too long for a socket */
  guardSocket(name: string): string {
    const wanted = join(this.nodeDir(name), 'guard.sock');
    if (Buffer.byteLength(wanted) <= 107) return wanted;
    return `/tmp/keel-guard-${createHash('sha256').update(wanted).digest('hex').slice(0, 16)}.sock`;
  }

  exists(): boolean {
    return existsSync(this.clusterFile);
  }

  readCluster(): ClusterFile {
    let raw: unknown;
    try {
      raw = JSON.parse(readFileSync(this.clusterFile, 'utf8'));
    } catch {
      throw new KeelError('KEEL_NOT_RUNNING', `no Keel cluster in ${this.dir} (missing or unreadable keel.json)`);
    }
    return validate(clusterFileSchema, raw, this.clusterFile);
  }

  readSecrets(): Secrets {
    return validate(secretsSchema, JSON.parse(readFileSync(this.secretsFile, 'utf8')), this.secretsFile);
  }

  /** Creates the directory, the cluster file and the secrets (0600) unless they exist. */
  async create(file: ClusterFile): Promise<{ cluster: ClusterFile; secrets: Secrets }> {
    await mkdir(this.dir, { recursive: true });
    // PostgreSQL runs as another user when Keel is root: it must be able to enter DIR.
    await chmod(this.dir, 0o755);
    if (!this.exists()) await writeFile(this.clusterFile, `${JSON.stringify(file, null, 2)}\n`);
    const existing = existsSync(this.secretsFile) ? (JSON.parse(readFileSync(this.secretsFile, 'utf8')) as Record<string, unknown>) : {};
    this.refuseLostBackupKey(existing);
    const completed = completeSecrets(existing);
    if (JSON.stringify(completed) !== JSON.stringify(existing)) {
      await writeFileNoFollow(this.secretsFile, `${JSON.stringify(completed)}\n`, 0o600, null);
    }
    const cluster = this.readCluster();
    const secrets = this.readSecrets();
    // what applications use: the application role, over TLS
    const app = 'app';
    await writeFileNoFollow(this.pgpassFile, `127.0.0.1:*:*:${app}:${secrets.app}\nlocalhost:*:*:${app}:${secrets.app}\n`, 0o600, null);
    await this.ensureClusterTls(cluster);
    return { cluster, secrets };
  }

  /** A repository that holds backups but whose key is gone from secrets.json: a new key would not open it. */
  private refuseLostBackupKey(secrets: Record<string, unknown>): void {
    if (secrets.backupCipher !== undefined) return;
    let entries: string[] = [];
    try {
      entries = readdirSync(this.backupDir);
    } catch {
      return;
    }
    if (entries.length === 0) return;
    throw new KeelError('KEEL_BACKUP_KEY_MISSING', `${this.backupDir} holds a backup repository but ${this.secretsFile} has no backupCipher, its key`, {
      hint: 'put the key back in secrets.json (backupCipher), or move the repository away to start a new one',
    });
  }

  /** The cluster's own leaf certificates: etcd's server pair and the router's, controller's and operator's client pairs. */
  clusterCertificates(cluster: ClusterFile): LeafCertificate[] {
    const users = etcdUsers(cluster.cluster);
    return [
      { what: 'etcd server', pair: this.etcdServerFiles, request: { commonName: `${cluster.cluster}-etcd`, names: localServerNames, usage: 'both' } },
      { what: 'web server', pair: this.webServerFiles, request: { commonName: `${cluster.cluster}-web`, names: localServerNames, usage: 'server' } },
      ...(['router', 'controller', 'operator'] as const).map((component) => ({
        what: `${component} client`,
        pair: this.clientTls(component),
        request: { commonName: users[component], usage: 'client' as const },
      })),
    ];
  }

  /** Node `name`'s pairs: its own (PostgreSQL, API, etcd client) and its replication client pair; the keys belong to `keyOwner`. */
  nodeCertificates(cluster: ClusterFile, name: string, replicationUser: string, keyOwner: FileOwner | null): LeafCertificate[] {
    return [
      { what: `${name} server`, pair: this.nodeTls(name), request: { commonName: etcdUsers(cluster.cluster).agent, names: localServerNames, usage: 'both', keyOwner } },
      { what: `${name} replication`, pair: this.nodeReplicationTls(name), request: { commonName: replicationUser, usage: 'client', keyOwner } },
    ];
  }

  /** The CA and the cluster's leaf pairs; each made once. */
  async ensureClusterTls(cluster: ClusterFile): Promise<void> {
    await mkdir(this.tlsDir, { recursive: true });
    await chmod(this.tlsDir, 0o755);
    const ca = await ensureCertificateAuthority(this.caFiles, `keel ${cluster.cluster} CA`);
    for (const leaf of this.clusterCertificates(cluster)) await ensureCertificate(ca, leaf.pair, leaf.request);
  }

  /** Node `name`'s pairs, in a directory Keel's user keeps. */
  async ensureNodeTls(cluster: ClusterFile, name: string, replicationUser: string, keyOwner: FileOwner | null): Promise<void> {
    const dir = join(this.nodeDir(name), 'tls');
    await mkdir(dir, { recursive: true });
    await chmod(dir, 0o755);
    for (const leaf of this.nodeCertificates(cluster, name, replicationUser, keyOwner)) await ensureCertificate(this.caFiles, leaf.pair, leaf.request);
  }

  etcdEndpoint(cluster: ClusterFile): string {
    return `https://127.0.0.1:${cluster.portBase + portOffsets.etcdClient}`;
  }

  nodeName(index: number): string {
    return `node${index + 1}`;
  }

  nodeConfig(cluster: ClusterFile, secrets: Secrets, index: number): NodeConfig {
    const name = this.nodeName(index);
    return {
      name,
      cluster: cluster.cluster,
      zone: `local-${String.fromCharCode(97 + (index % 3))}`,
      tags: { nofailover: false },
      etcd: { endpoints: [this.etcdEndpoint(cluster)], requestTimeoutMs: 2000, tls: this.nodeTls(name) },
      api: { listen: `127.0.0.1:${cluster.portBase + portOffsets.nodeApi + index}`, token: nodeApiToken(secrets, name), readAuth: false },
      postgres: {
        dataDir: this.dataDir(name),
        binDir: '/usr/lib/postgresql/15/bin',
        listen: '127.0.0.1',
        port: cluster.portBase + portOffsets.nodePg + index,
        database: 'app',
        superuser: { username: 'postgres', password: secrets.superuser },
        replication: { username: 'replicator', ...this.nodeReplicationTls(name) },
        rewind: { username: 'keel_rewind', password: secrets.rewind },
        app: { username: 'app', password: secrets.app },
        hba: { cluster: ['127.0.0.1/32', '::1/128'], applications: ['127.0.0.1/32', '::1/128'] },
        extensions: ['postgis'],
      },
      tls: this.nodeTls(name),
      // secure by default: no primary without a live fencing guard beside it
      guard: { socket: this.guardSocket(name) },
      bootstrap: { dynamic: undefined },
      // WAL archiving and backups into the cluster's own repository, encrypted with its key
      ...(secrets.backupCipher === undefined
        ? {}
        : { backup: { repo: { type: 'posix' as const, path: this.backupDir }, cipher: 'aes-256-cbc' as const, cipherPass: secrets.backupCipher, archiveTimeoutSeconds: 60, processMax: 2, binary: '/usr/bin/pgbackrest' } }),
    };
  }

  /**
   * Writes node.yml (0600: it holds passwords) and the node's certificates, in the node directory, which
   * Keel's user keeps: PostgreSQL's OS user owns only postgresDir (and its key files).
   */
  async writeNodeConfig(cluster: ClusterFile, config: NodeConfig, keyOwner: FileOwner | null): Promise<string> {
    await mkdir(this.nodeDir(config.name), { recursive: true });
    await chmod(this.nodeDir(config.name), 0o755);
    await this.ensureNodeTls(cluster, config.name, config.postgres.replication.username, keyOwner);
    const path = this.nodeConfigFile(config.name);
    const { bootstrap, ...rest } = config;
    const doc = bootstrap.dynamic ? config : rest;
    await writeFileNoFollow(path, toYaml(doc), 0o600, null);
    return path;
  }

  /** Every port the cluster uses, for a check before anything starts. */
  ports(cluster: ClusterFile): number[] {
    const base = cluster.portBase;
    const fixed = [portOffsets.etcdClient, portOffsets.etcdPeer, portOffsets.routerRw, portOffsets.routerRo, portOffsets.routerApi, portOffsets.dashboard, portOffsets.controllerMetrics, portOffsets.routerPool];
    const nodes = Array.from({ length: cluster.nodes }, (_, i) => [portOffsets.nodePg + i, portOffsets.nodeApi + i]).flat();
    return [...fixed, ...nodes].map((offset) => base + offset);
  }
}

/** Where `keel dashboard --dir` serves the cluster's page (HTTPS with the web pair). */
export function dashboardUrl(cluster: ClusterFile): string {
  return `https://127.0.0.1:${cluster.portBase + portOffsets.dashboard}/`;
}

/** libpq URLs of the cluster's endpoints: rw and ro through the router, rw through its pool (PgBouncer), and each node directly. */
export function connectionStrings(layout: LocalLayout, cluster: ClusterFile): { rw: string; ro: string; pooled: string; nodes: string[] } {
  const tls = `?sslmode=verify-full&sslrootcert=${encodeURIComponent(layout.caFiles.cert)}`;
  const hosts = Array.from({ length: cluster.nodes }, (_, i) => `127.0.0.1:${cluster.portBase + portOffsets.nodePg + i}`);
  return {
    rw: `postgresql://app@127.0.0.1:${cluster.portBase + portOffsets.routerRw}/app${tls}`,
    ro: `postgresql://app@127.0.0.1:${cluster.portBase + portOffsets.routerRo}/app${tls}`,
    pooled: `postgresql://app@127.0.0.1:${cluster.portBase + portOffsets.routerPool}/app${tls}`,
    nodes: hosts.map((h) => `postgresql://app@${h}/app${tls}`),
  };
}
