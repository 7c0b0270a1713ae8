/**
 * An etcd cluster whose members each live on their own host of a
 * NetnsNetwork: Debian's etcd with Keel's flags (etcdArgs), started inside the
 * member's namespace, so a member can be killed, frozen or cut off alone.
 */
import { spawn } from 'node:child_process';
import { closeSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { defaultEtcdBinary, etcdArgs, type StartEtcdOptions } from '../dcs/etcd-server.js';
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
  pid: number | null;
}

/** The environment without ETCD_* variables, which etcd would read as flags. */
function etcdEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('ETCD_')));
}

async function healthy(endpoint: string, timeoutMs = 1000): Promise<boolean> {
  try {
    const res = await fetch(`${endpoint}/health`, { signal: AbortSignal.timeout(timeoutMs) });
    const body = (await res.json()) as { health?: unknown };
    return body.health === 'true';
  } catch {
    return false;
  }
}

export class NetnsEtcd {
  private readonly members = new Map<string, Member>();

  /** Hosts must already exist on `net` (one per member name). */
  constructor(
    private readonly net: NetnsNetwork,
    dir: string,
    names: string[],
    private readonly binary = defaultEtcdBinary,
  ) {
    for (const name of names) {
      this.members.set(name, { name, dataDir: join(dir, name, 'data'), logFile: join(dir, name, 'etcd.log'), pid: null });
    }
  }

  names(): string[] {
    return [...this.members.keys()];
  }

  endpoint(name: string): string {
    return `http://${this.net.host(name).address}:${etcdClientPort}`;
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
      .map((name) => `${name}=http://${this.net.host(name).address}:${etcdPeerPort}`)
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
    };
  }

  /** Starts every member at once (a new cluster needs a quorum to become healthy) and waits for all. */
  async start(timeoutMs = 30_000): Promise<void> {
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
    while (!(await healthy(this.endpoint(name)))) {
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
      try {
        const res = await fetch(`${this.endpoint(name)}/v3/maintenance/status`, {
          method: 'POST',
          body: '{}',
          signal: AbortSignal.timeout(1000),
        });
        const body = (await res.json()) as { header?: { member_id?: string }; leader?: string };
        if (body.header?.member_id) idToName.set(body.header.member_id, name);
        if (body.leader && body.leader !== '0') leaderId = body.leader;
      } catch {
        // a member that does not answer says nothing about the leader
      }
    }
    return leaderId === null ? null : (idToName.get(leaderId) ?? null);
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

export { healthy as etcdHealthy };
