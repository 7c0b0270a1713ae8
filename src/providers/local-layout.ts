/**
 * The files of a local cluster (`keel up --dir DIR`): where each part keeps
 * its data, logs and PID, and the ports it uses, all within [P, P+99].
 */
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { z } from 'zod';
import { stringify as toYaml } from 'yaml';
import type { NodeConfig } from '../config/schema.js';
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

const secretsSchema = z.object({ superuser: z.string().min(16), replication: z.string().min(16), apiToken: z.string().min(16) }).strict();
export type Secrets = z.infer<typeof secretsSchema>;

/** Port offsets from the base; every port lies in [P, P+99]. */
export const portOffsets = { etcdClient: 0, etcdPeer: 1, routerRw: 2, routerRo: 3, routerApi: 4, nodePg: 10, nodeApi: 40 } as const;

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
  /** present while a node is fenced: no supervisor may start its agent again */
  fencedMarker(name: string): string { return join(this.nodeDir(name), 'fenced'); }
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
  dataDir(name: string): string { return join(this.nodeDir(name), 'data'); }
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
    if (!existsSync(this.secretsFile)) {
      const secret = () => randomBytes(18).toString('base64url');
      const secrets: Secrets = { superuser: secret(), replication: secret(), apiToken: secret() };
      await writeFile(this.secretsFile, `${JSON.stringify(secrets)}\n`, { mode: 0o600 });
    }
    const cluster = this.readCluster();
    const secrets = this.readSecrets();
    await writeFile(this.pgpassFile, `127.0.0.1:*:*:postgres:${secrets.superuser}\nlocalhost:*:*:postgres:${secrets.superuser}\n`, { mode: 0o600 });
    return { cluster, secrets };
  }

  etcdEndpoint(cluster: ClusterFile): string {
    return `http://127.0.0.1:${cluster.portBase + portOffsets.etcdClient}`;
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
      etcd: { endpoints: [this.etcdEndpoint(cluster)], requestTimeoutMs: 2000 },
      api: { listen: `127.0.0.1:${cluster.portBase + portOffsets.nodeApi + index}`, token: secrets.apiToken },
      postgres: {
        dataDir: this.dataDir(name),
        binDir: '/usr/lib/postgresql/15/bin',
        listen: '127.0.0.1',
        port: cluster.portBase + portOffsets.nodePg + index,
        database: 'app',
        superuser: { username: 'postgres', password: secrets.superuser },
        replication: { username: 'replicator', password: secrets.replication },
        extensions: ['postgis'],
      },
      // secure by default: no primary without a live fencing guard beside it
      guard: { socket: this.guardSocket(name) },
      bootstrap: { dynamic: undefined },
    };
  }

  /** Writes node.yml (0600: it holds passwords). */
  async writeNodeConfig(config: NodeConfig): Promise<string> {
    await mkdir(this.nodeDir(config.name), { recursive: true });
    await chmod(this.nodeDir(config.name), 0o755);
    const path = this.nodeConfigFile(config.name);
    const { bootstrap, ...rest } = config;
    const doc = bootstrap.dynamic ? config : rest;
    await writeFile(path, toYaml(doc), { mode: 0o600 });
    return path;
  }

  /** Every port the cluster uses, for a check before anything starts. */
  ports(cluster: ClusterFile): number[] {
    const base = cluster.portBase;
    const fixed = [portOffsets.etcdClient, portOffsets.etcdPeer, portOffsets.routerRw, portOffsets.routerRo, portOffsets.routerApi];
    const nodes = Array.from({ length: cluster.nodes }, (_, i) => [portOffsets.nodePg + i, portOffsets.nodeApi + i]).flat();
    return [...fixed, ...nodes].map((offset) => base + offset);
  }
}

/** libpq URLs of the cluster's endpoints: rw and ro through the router, and each node directly. */
export function connectionStrings(layout: LocalLayout, cluster: ClusterFile): { rw: string; ro: string; nodes: string[] } {
  const hosts = Array.from({ length: cluster.nodes }, (_, i) => `127.0.0.1:${cluster.portBase + portOffsets.nodePg + i}`);
  return {
    rw: `postgresql://postgres@127.0.0.1:${cluster.portBase + portOffsets.routerRw}/app`,
    ro: `postgresql://postgres@127.0.0.1:${cluster.portBase + portOffsets.routerRo}/app`,
    nodes: hosts.map((h) => `postgresql://postgres@${h}/app`),
  };
}
