/**
 * Instances of the loopback EC2 endpoint backed by network namespaces: each
 * instance the endpoint launches becomes a namespace host (netns-net.ts) at
 * the instance's private address, runs the user data RunInstances carried
 * (decoded, as cloud-init would run it) with the KEEL_BOOT_* test hooks —
 * paths under a root of its own, secrets from a local directory laid out
 * like the SSM parameters, the address given instead of IMDS, no systemd —
 * and then starts `keel guard` and `keel agent` in the namespace as the
 * units would (the netns provider spawns them the same way). A stop or a
 * termination kills the namespace's processes by PID; a termination removes
 * the namespace and the instance's root as well.
 *
 * The endpoint's subnets must lie inside the network's /24 (e.g. three /26
 * for three zones), so an instance's address is a host address here.
 */
import { execFile, spawn } from 'node:child_process';
import { closeSync } from 'node:fs';
import { chmod, mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { guardBin, keelBin, waitForSocket } from '../../src/providers/local.js';
import { killNamespace, type NetHost, type NetnsNetwork } from '../../src/providers/netns-net.js';
import { awsPaths } from '../../src/providers/aws-userdata.js';
import { openLogFile } from '../../src/util/log-file.js';
import { isAlive } from '../../src/util/process.js';
import type { Ec2Instance } from './ec2-fleet.js';
import type { Ec2Lifecycle } from './ec2-endpoint.js';

export interface Ec2NetnsOptions {
  net: NetnsNetwork;
  /** each instance's root (KEEL_BOOT_ROOT) and logs go to <dir>/<instance id> */
  dir: string;
  /** KEEL_BOOT_SECRETS_DIR: files at <secretsDir><parameter name> */
  secretsDir: string;
  /**
   * Puts the instance's secrets under secretsDir before its user data runs (its
   * certificate must name the address the endpoint gave it), the instance-id
   * parameter last; without it, someone else does (the provider's credentials
   * through a loopback SSM), and the user data waits for them
   */
  prepareSecrets?: (instance: Readonly<Ec2Instance>) => Promise<void>;
  /** how long the user data may run; default 120 s */
  bootTimeoutMs?: number;
  /** how long to wait for the guard's socket before the agent starts anyway; default 10 s */
  guardWaitMs?: number;
}

export interface Ec2NetnsHost {
  instanceId: string;
  host: NetHost;
  /** KEEL_BOOT_ROOT of the instance */
  root: string;
  nodeConfig: string;
  bootLog: string;
  guardPid: number | null;
  agentPid: number | null;
}

/** The user data's test hooks (aws-userdata.ts) for one instance. */
export function bootEnvironment(root: string, secretsDir: string, address: string, instanceId: string): Record<string, string> {
  return { KEEL_BOOT_ROOT: root, KEEL_BOOT_SECRETS_DIR: secretsDir, KEEL_BOOT_ADDRESS: address, KEEL_BOOT_INSTANCE_ID: instanceId, KEEL_BOOT_SYSTEMD: '0' };
}

export class Ec2NetnsBacking implements Ec2Lifecycle {
  private readonly hosts = new Map<string, Ec2NetnsHost>();
  private nextHost = 1;

  constructor(private readonly options: Ec2NetnsOptions) {}

  host(instanceId: string): Ec2NetnsHost | undefined {
    return this.hosts.get(instanceId);
  }

  list(): Ec2NetnsHost[] {
    return [...this.hosts.values()];
  }

  /** The instance boots: its namespace, its user data, then its guard and agent. */
  async onRun(instance: Readonly<Ec2Instance>, userData: string): Promise<void> {
    const net = this.options.net;
    const address = instance.privateIpAddress;
    const octet = Number(address.split('.')[3]);
    if (!address.startsWith(`${net.subnet}.`)) throw new Error(`${instance.instanceId} has ${address}, outside the network's ${net.subnet}.0/24: give the endpoint subnets inside it`);
    const instanceDir = join(this.options.dir, instance.instanceId);
    const root = join(instanceDir, 'root');
    await mkdir(root, { recursive: true });
    // PostgreSQL runs as its own user: it must be able to walk down to its directory under the root
    await chmod(this.options.dir, 0o755);
    await chmod(instanceDir, 0o755);
    await chmod(root, 0o755);
    // the image's own directories, as open as on Debian: the user data runs under umask 077, and what it
    // creates on the way to /var/lib/keel/postgres would otherwise be closed to PostgreSQL's user
    for (const dir of ['var', 'var/lib', 'etc', 'opt']) {
      await mkdir(join(root, dir), { recursive: true });
      await chmod(join(root, dir), 0o755);
    }
    const host = await net.addHost(`vm${this.nextHost++}`, octet);
    const record: Ec2NetnsHost = {
      instanceId: instance.instanceId,
      host,
      root,
      nodeConfig: join(root, awsPaths.nodeConfig),
      bootLog: join(instanceDir, 'boot.log'),
      guardPid: null,
      agentPid: null,
    };
    this.hosts.set(instance.instanceId, record);
    await this.options.prepareSecrets?.(instance);
    const script = join(instanceDir, 'user-data.sh');
    await writeFile(script, userData, { mode: 0o700 });
    await this.runUserData(record, script);
    await this.spawnGuard(record);
    record.agentPid = this.spawnDaemon(record, 'agent.log', [keelBin, 'agent', '--config', record.nodeConfig]);
  }

  /** A stop: every process of the namespace killed by PID; the namespace and the files stay. */
  async onStop(instance: Readonly<Ec2Instance>): Promise<void> {
    await this.killAll(instance.instanceId);
  }

  /** A termination: the processes killed, then the namespace and the instance's directory removed. */
  async onTerminate(instance: Readonly<Ec2Instance>): Promise<void> {
    const record = this.hosts.get(instance.instanceId);
    if (record === undefined) return;
    await this.killAll(instance.instanceId);
    await this.options.net.removeHost(record.host.name);
    await rm(join(this.options.dir, instance.instanceId), { recursive: true, force: true });
    this.hosts.delete(instance.instanceId);
  }

  /** Kills every instance's processes (by PID); the namespaces go with NetnsNetwork.destroy(). */
  async close(): Promise<void> {
    await Promise.all([...this.hosts.keys()].map((id) => this.killAll(id)));
  }

  private async killAll(instanceId: string): Promise<void> {
    const record = this.hosts.get(instanceId);
    if (record === undefined) return;
    // the ones we started first, by the PIDs we hold; then whatever else the namespace runs (postmaster, backends)
    for (const pid of [record.agentPid, record.guardPid]) {
      if (pid !== null && isAlive(pid)) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone meanwhile
        }
      }
    }
    const left = await killNamespace(record.host.namespace);
    if (left.length > 0) throw new Error(`${instanceId}: processes ${left.join(', ')} of ${record.host.namespace} survived SIGKILL`);
    record.agentPid = null;
    record.guardPid = null;
  }

  private runUserData(record: Ec2NetnsHost, script: string): Promise<void> {
    const env = { ...process.env, ...bootEnvironment(record.root, this.options.secretsDir, record.host.address, record.instanceId) };
    const timeout = this.options.bootTimeoutMs ?? 120_000;
    return new Promise((resolve, reject) => {
      execFile('ip', ['netns', 'exec', record.host.namespace, 'bash', script], { env, timeout, encoding: 'utf8', maxBuffer: 4 * 1024 * 1024 }, (err, stdout, stderr) => {
        void writeFile(record.bootLog, `${stdout}${stderr}`, { mode: 0o600 }).finally(() => {
          if (err) reject(new Error(`the user data of ${record.instanceId} failed (${err.code ?? err.signal ?? 'error'}): ${stderr.trim().split('\n').slice(-3).join(' / ')}`));
          else resolve();
        });
      });
    });
  }

  /** The guard comes before the agent, as keel-guard@ before keel-agent@. */
  private async spawnGuard(record: Ec2NetnsHost): Promise<void> {
    record.guardPid = this.spawnDaemon(record, 'guard.log', [guardBin, '--config', record.nodeConfig]);
    await waitForSocket(join(record.root, awsPaths.guardSocket), this.options.guardWaitMs ?? 10_000);
  }

  /** One daemon in the instance's namespace; `ip netns exec` execs it, so the PID is the daemon's. */
  private spawnDaemon(record: Ec2NetnsHost, logName: string, args: string[]): number | null {
    const log = openLogFile(join(this.options.dir, record.instanceId, logName));
    try {
      const child = spawn('ip', ['netns', 'exec', record.host.namespace, process.execPath, ...args], { detached: true, stdio: ['ignore', log, log] });
      child.unref();
      return child.pid ?? null;
    } finally {
      closeSync(log);
    }
  }
}
