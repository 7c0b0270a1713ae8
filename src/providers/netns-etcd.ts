/**
 * An etcd cluster whose members each live on their own host of a
 * NetnsNetwork: Debian's etcd with Keel's flags (etcdArgs), started inside the
 * member's namespace, so a member can be killed, frozen or cut off alone.
 * With TLS each member gets a pair for its own address from the given CA and
 * speaks https to clients and peers, each of which must show a pair of that CA.
 */
import { spawn } from 'node:child_process';
import { closeSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { TlsFiles } from '../config/schema.js';
import { createEtcdClient } from '../dcs/etcd-client.js';
import { defaultEtcdBinary, etcdArgs, etcdHealthy, etcdHttp, type StartEtcdOptions } from '../dcs/etcd-server.js';
import { ensureCertificate, type CertificatePair } from '../tls/pki.js';
import { sleep } from '../util/clock.js';
import { isAlive } from '../util/process.js';
import { killNamespace, NetnsError, type NetnsNetwork } from './netns-net.js';
import { openLogFile } from '../util/log-file.js';

export const etcdClientPort = 2379;
export const etcdPeerPort = 2380;

interface Member {
  name: string;
  dataDir: string;
  logFile: string;
  /** its server and peer pair, with TLS */
  pair: CertificatePair;
  pid: number | null;
}

export interface NetnsEtcdTls {
  /** signs each member's pair (made at start for the member's address) */
  ca: CertificatePair;
  /** a client pair of the same CA that the health and leader checks show */
  client: TlsFiles;
}

export interface NetnsEtcdOptions {
  binary?: string;
  /** https with client certificates; plain http without */
  tls?: NetnsEtcdTls;
}

/** The environment without ETCD_* variables, which etcd would read as flags. */
function etcdEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('ETCD_')));
}

export class NetnsEtcd {
  private readonly members = new Map<string, Member>();
  private readonly binary: string;
  readonly tls: NetnsEtcdTls | undefined;

  /** Hosts must already exist on `net` (one per member name). */
  constructor(
    private readonly net: NetnsNetwork,
    dir: string,
    names: string[],
    options: NetnsEtcdOptions = {},
  ) {
    this.binary = options.binary ?? defaultEtcdBinary;
    this.tls = options.tls;
    for (const name of names) {
      const pair = { cert: join(dir, name, 'tls', 'etcd.crt'), key: join(dir, name, 'tls', 'etcd.key') };
      this.members.set(name, { name, dataDir: join(dir, name, 'data'), logFile: join(dir, name, 'etcd.log'), pair, pid: null });
    }
  }

  private get scheme(): 'http' | 'https' {
    return this.tls === undefined ? 'http' : 'https';
  }

  names(): string[] {
    return [...this.members.keys()];
  }

  endpoint(name: string): string {
    return `${this.scheme}://${this.net.host(name).address}:${etcdClientPort}`;
  }

  endpoints(): string[] {
    return this.names().map((name) => this.endpoint(name));
  }

  logFile(name: string): string {
    return this.member(name).logFile;
  }

  pid(name: string): number | null {
    return this.member(name).pid;
  }

  private member(name: string): Member {
    const member = this.members.get(name);
    if (member === undefined) throw new NetnsError(`${name} is not an etcd member`);
    return member;
  }

  private options(member: Member, state: 'new' | 'existing'): StartEtcdOptions {
    const initialCluster = this.names()
      .map((name) => `${name}=${this.scheme}://${this.net.host(name).address}:${etcdPeerPort}`)
      .join(',');
    return {
      name: member.name,
      dataDir: member.dataDir,
      host: this.net.host(member.name).address,
      clientPort: etcdClientPort,
      peerPort: etcdPeerPort,
      initialCluster,
      initialClusterState: state,
      logFile: member.logFile,
      ...(this.tls === undefined ? {} : { tls: { ca: this.tls.ca.cert, server: member.pair, client: this.tls.client } }),
    };
  }

  /** Starts every member at once (a new cluster needs a quorum to become healthy) and waits for all. */
  async start(timeoutMs = 30_000): Promise<void> {
    const tls = this.tls;
    if (tls !== undefined) {
      for (const member of this.members.values()) {
        const address = this.net.host(member.name).address;
        await ensureCertificate(tls.ca, member.pair, { commonName: `etcd-${member.name}`, names: [address], usage: 'both' });
      }
    }
    for (const member of this.members.values()) this.spawnMember(member, 'new');
    await Promise.all(this.names().map((name) => this.waitHealthy(name, timeoutMs)));
  }

  private spawnMember(member: Member, state: 'new' | 'existing'): void {
    mkdirSync(member.dataDir, { recursive: true, mode: 0o700 });
    const out = openLogFile(member.logFile);
    try {
      const child = spawn('ip', [...this.net.execArgs(member.name), this.binary, ...etcdArgs(this.options(member, state))], {
        detached: true,
        stdio: ['ignore', out, out],
        env: etcdEnv(),
      });
      member.pid = child.pid ?? null;
      child.once('exit', () => {
        if (member.pid === child.pid) member.pid = null;
      });
      child.unref();
    } finally {
      closeSync(out);
    }
  }

  async waitHealthy(name: string, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!(await etcdHealthy(this.endpoint(name), this.tls?.client))) {
      if (Date.now() > deadline) throw new NetnsError(`etcd member ${name} was not healthy within ${timeoutMs} ms; see ${this.logFile(name)}`);
      await sleep(100);
    }
  }

  /** SIGKILLs the member (every process of its namespace). */
  async kill(name: string): Promise<void> {
    const left = await killNamespace(this.net.host(name).namespace);
    if (left.length > 0) throw new NetnsError(`etcd member ${name}: processes ${left.join(', ')} survived SIGKILL`);
    this.member(name).pid = null;
  }

  /** Starts a stopped member again on its data directory. */
  async restart(name: string, timeoutMs = 30_000): Promise<void> {
    const member = this.member(name);
    if (member.pid !== null && isAlive(member.pid)) return;
    this.spawnMember(member, 'existing');
    await this.waitHealthy(name, timeoutMs);
  }

  /** The member etcd's Raft currently follows as leader, asked of every member; null when none answers. */
  async leader(): Promise<string | null> {
    const idToName = new Map<string, string>();
    let leaderId: string | null = null;
    for (const name of this.names()) {
      const status = await this.memberStatus(name);
      // a member that does not answer says nothing about the leader
      if (status === null) continue;
      if (status.memberId) idToName.set(status.memberId, name);
      if (status.leader && status.leader !== '0') leaderId = status.leader;
    }
    return leaderId === null ? null : (idToName.get(leaderId) ?? null);
  }

  /**
   * One member's id and the leader it follows, within a second; null when it does not answer. With TLS
   * this goes over gRPC: once auth is on, etcd 3.4's HTTP gateway refuses any request with a client certificate.
   */
  private async memberStatus(name: string): Promise<{ memberId?: string; leader?: string } | null> {
    const timeoutMs = 1000;
    if (this.tls === undefined) {
      const answer = await etcdHttp(`${this.endpoint(name)}/v3/maintenance/status`, undefined, { method: 'POST', body: '{}', timeoutMs });
      try {
        const body = answer === null ? null : (JSON.parse(answer) as { header?: { member_id?: string }; leader?: string });
        return body === null ? null : { memberId: body.header?.member_id, leader: body.leader };
      } catch {
        return null;
      }
    }
    const client = createEtcdClient([this.endpoint(name)], timeoutMs, { tls: this.tls.client });
    try {
      const status = await Promise.race([client.maintenance.status(), sleep(timeoutMs).then(() => null)]);
      return status === null ? null : { memberId: String(status.header.member_id), leader: String(status.leader) };
    } catch {
      return null;
    } finally {
      client.close();
    }
  }

  async stop(): Promise<void> {
    for (const name of this.names()) {
      const member = this.member(name);
      if (member.pid !== null && isAlive(member.pid)) {
        try {
          process.kill(member.pid, 'SIGTERM');
        } catch {
          // gone meanwhile
        }
      }
    }
    const deadline = Date.now() + 5000;
    for (const member of this.members.values()) {
      while (member.pid !== null && isAlive(member.pid) && Date.now() < deadline) await sleep(50);
    }
    for (const name of this.names()) await killNamespace(this.net.host(name).namespace);
  }
}

