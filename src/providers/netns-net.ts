/**
 * Private networks made of Linux network namespaces, for tests that need
 * hosts with their own addresses (DESIGN.md: the `netns` provider).
 *
 * Layout, all of it created here and removed in destroy():
 *
 *     <prefix>-hub     holds the bridge br0; nothing else runs there
 *     <prefix>-<host>  one per host: lo and eth0 (a veth whose peer is on br0)
 *     root namespace   one veth `kc<pid>` on the subnet, so the suite and the
 *                      router reach the hosts; no forwarding, no default route
 *
 * The hosts have no route out of the subnet: anything they send elsewhere
 * fails at once. Every namespace name starts with `keelchaos-<pid>-`, the pid
 * of the process that made it, so a later run can tell leftovers (their
 * owner is dead) from a run in progress and remove only those.
 */
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { sleep } from '../util/clock.js';

export const namespacePrefixRoot = 'keelchaos-';

/**
 * A failed namespace, link or firewall operation. Test tooling only, so it
 * stays out of the KEEL_* catalogue in errors.ts (which it would join if the
 * provider ever served users).
 */
export class NetnsError extends Error {
  readonly code = 'KEEL_NETNS_FAILED';
  constructor(message: string, readonly hint = 'run as root with iproute2 and iptables installed (make setup)') {
    super(message);
    this.name = 'NetnsError';
  }
}

/** Each `ip`/`iptables` call is bounded: a hung tool must not hang the suite. */
const commandTimeoutMs = 15_000;

export interface CommandResult {
  stdout: string;
  stderr: string;
}

/** Runs a program without a shell; rejects with KEEL_NETNS_FAILED naming the command. */
export function run(program: string, args: string[], timeoutMs = commandTimeoutMs): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    execFile(program, args, { timeout: timeoutMs, encoding: 'utf8', maxBuffer: 4 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) {
        const detail = (stderr || err.message).trim().split('\n').slice(-3).join(' / ');
        reject(new NetnsError(`${program} ${args.join(' ')} failed: ${detail}`));
        return;
      }
      resolve({ stdout, stderr });
    });
  });
}

export interface NetworkOptions {
  /** the pid-stamped prefix of every namespace; default `keelchaos-<this pid>` */
  prefix?: string;
  /** the first three octets of the /24, e.g. `10.77.0` */
  subnet?: string;
}

export interface NetHost {
  /** short name, e.g. node1 or etcd2 */
  name: string;
  /** the network namespace it lives in */
  namespace: string;
  address: string;
}

const isolationChain = 'KEELCHAOS';

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export async function listNamespaces(): Promise<string[]> {
  const { stdout } = await run('ip', ['netns', 'list']);
  // lines look like `name` or `name (id: 3)`
  return stdout
    .split('\n')
    .map((line) => line.trim().split(/\s+/)[0] ?? '')
    .filter((name) => name !== '');
}

/** PIDs of the processes whose network namespace is `namespace`. */
export async function namespacePids(namespace: string): Promise<number[]> {
  const { stdout } = await run('ip', ['netns', 'pids', namespace]);
  return stdout
    .split('\n')
    .map((line) => Number(line.trim()))
    .filter((pid) => Number.isInteger(pid) && pid > 1 && pid !== process.pid);
}

/** SIGKILLs every process of the namespace until none is left (a dying parent may still fork). */
export async function killNamespace(namespace: string, timeoutMs = 10_000): Promise<number[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const pids = await namespacePids(namespace);
    if (pids.length === 0) return [];
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    if (Date.now() > deadline) return pids;
    await sleep(50);
  }
}

/** Sends a signal to every process of the namespace once; returns the PIDs signalled. */
export async function signalNamespace(namespace: string, signal: NodeJS.Signals): Promise<number[]> {
  const pids = await namespacePids(namespace);
  for (const pid of pids) {
    try {
      process.kill(pid, signal);
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

async function deleteNamespace(namespace: string): Promise<void> {
  await killNamespace(namespace);
  // `ip netns del` can fail with EBUSY while the kernel still tears a process down
  for (let attempt = 0; ; attempt++) {
    try {
      await run('ip', ['netns', 'del', namespace]);
      return;
    } catch (err) {
      if (!(await listNamespaces()).includes(namespace)) return;
      if (attempt >= 20) throw err;
      await sleep(100);
    }
  }
}

/**
 * Removes namespaces left by earlier runs: only names with our prefix whose
 * owning pid is dead (a run in progress keeps its own). Their processes are
 * killed by PID first; the root veth goes with the hub it is paired with.
 */
export async function removeStaleNamespaces(): Promise<string[]> {
  const removed: string[] = [];
  for (const namespace of await listNamespaces()) {
    const match = new RegExp(`^${namespacePrefixRoot}(\\d+)-`).exec(namespace);
    if (match === null) continue;
    const owner = Number(match[1]);
    if (owner === process.pid || pidAlive(owner)) continue;
    await deleteNamespace(namespace);
    removed.push(namespace);
  }
  return removed;
}

/** A /24 of test hosts in network namespaces, reachable from the root namespace through one veth. */
export class NetnsNetwork {
  readonly prefix: string;
  readonly subnet: string;
  readonly hub: string;
  /** the root namespace's end of the link into the hub */
  readonly rootLink: string;
  readonly rootAddress: string;
  private readonly hosts = new Map<string, NetHost>();
  private created = false;

  private constructor(options: NetworkOptions) {
    this.prefix = options.prefix ?? `${namespacePrefixRoot}${process.pid}`;
    if (!this.prefix.startsWith(namespacePrefixRoot)) throw new RangeError(`namespace prefix must start with ${namespacePrefixRoot}`);
    this.subnet = options.subnet ?? '10.77.0';
    if (!/^10\.\d{1,3}\.\d{1,3}$/.test(this.subnet)) throw new RangeError(`subnet ${this.subnet} must be three octets of 10.0.0.0/8`);
    this.hub = `${this.prefix}-hub`;
    this.rootLink = `kc${process.pid}`.slice(0, 15);
    this.rootAddress = `${this.subnet}.1`;
  }

  /**
   * Creates the hub with its bridge and the root link. Refuses when the
   * subnet is already routed in the root namespace: that would be someone
   * else's network (or another run), and the hosts must reach only ours.
   */
  static async create(options: NetworkOptions = {}): Promise<NetnsNetwork> {
    const net = new NetnsNetwork(options);
    const routes = (await run('ip', ['-4', 'route', 'show'])).stdout;
    if (routes.split('\n').some((line) => line.startsWith(`${net.subnet}.`))) {
      throw new NetnsError(
        `${net.subnet}.0/24 is already routed in the root namespace`,
        'another chaos run may be in progress; or choose another subnet',
      );
    }
    net.created = true;
    try {
      await run('ip', ['netns', 'add', net.hub]);
      await run('ip', ['-n', net.hub, 'link', 'set', 'lo', 'up']);
      await run('ip', ['-n', net.hub, 'link', 'add', 'br0', 'type', 'bridge']);
      await run('ip', ['-n', net.hub, 'link', 'set', 'br0', 'up']);
      await run('ip', ['link', 'add', net.rootLink, 'type', 'veth', 'peer', 'name', 'root', 'netns', net.hub]);
      await run('ip', ['-n', net.hub, 'link', 'set', 'root', 'master', 'br0', 'up']);
      await run('ip', ['addr', 'add', `${net.rootAddress}/24`, 'dev', net.rootLink]);
      await run('ip', ['link', 'set', net.rootLink, 'up']);
    } catch (err) {
      await net.destroy().catch(() => undefined);
      throw err;
    }
    return net;
  }

  namespaceOf(name: string): string {
    return `${this.prefix}-${name}`;
  }

  host(name: string): NetHost {
    const host = this.hosts.get(name);
    if (host === undefined) throw new NetnsError(`${name} is not a host of ${this.prefix}`);
    return host;
  }

  list(): NetHost[] {
    return [...this.hosts.values()];
  }

  /** A namespace with `<subnet>.<octet>` on eth0, linked to the hub's bridge. */
  async addHost(name: string, octet: number): Promise<NetHost> {
    if (!/^[a-z][a-z0-9]{0,11}$/.test(name)) throw new RangeError(`host name ${name} must be short lower-case letters and digits`);
    if (!Number.isInteger(octet) || octet < 2 || octet > 250) throw new RangeError(`host octet ${octet} must be in 2..250`);
    if (this.hosts.has(name)) throw new NetnsError(`host ${name} exists already`);
    const namespace = this.namespaceOf(name);
    const address = `${this.subnet}.${octet}`;
    const host: NetHost = { name, namespace, address };
    this.hosts.set(name, host);
    await run('ip', ['netns', 'add', namespace]);
    await run('ip', ['-n', namespace, 'link', 'set', 'lo', 'up']);
    // both ends are created straight in their namespaces: nothing appears in the root namespace
    await run('ip', ['-n', namespace, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', `v-${name}`, 'netns', this.hub]);
    await run('ip', ['-n', this.hub, 'link', 'set', `v-${name}`, 'master', 'br0', 'up']);
    await run('ip', ['-n', namespace, 'addr', 'add', `${address}/24`, 'dev', 'eth0']);
    await run('ip', ['-n', namespace, 'link', 'set', 'eth0', 'up']);
    return host;
  }

  /** The argv prefix that runs a program inside the host's namespace. */
  execArgs(name: string): string[] {
    return ['netns', 'exec', this.host(name).namespace];
  }

  pids(name: string): Promise<number[]> {
    return namespacePids(this.host(name).namespace);
  }

  /** Link state of the host's eth0 (as seen inside its namespace). */
  async linkUp(name: string): Promise<boolean> {
    const { stdout } = await run('ip', ['-n', this.host(name).namespace, '-o', 'link', 'show', 'eth0']);
    return /[<,]UP[,>]/.test(stdout);
  }

  async setLink(name: string, up: boolean): Promise<void> {
    await run('ip', ['-n', this.host(name).namespace, 'link', 'set', 'eth0', up ? 'up' : 'down']);
    if (up) {
      // the link's address survives a down/up, but make sure
      const { stdout } = await run('ip', ['-n', this.host(name).namespace, '-o', '-4', 'addr', 'show', 'dev', 'eth0']);
      if (!stdout.includes(this.host(name).address)) {
        await run('ip', ['-n', this.host(name).namespace, 'addr', 'add', `${this.host(name).address}/24`, 'dev', 'eth0']);
      }
    }
  }

  /**
   * Cuts the host off from every other host and from the root namespace by
   * dropping, inside its namespace, every packet that is not on lo. Packets
   * vanish (no reset, no ICMP), as in a real partition; the link stays up.
   */
  async isolate(name: string): Promise<void> {
    const ns = this.host(name).namespace;
    const ipt = (...args: string[]) => run('ip', ['netns', 'exec', ns, 'iptables', '-w', '5', ...args]);
    await this.heal(name);
    await ipt('-N', isolationChain);
    await ipt('-A', isolationChain, '-i', 'lo', '-j', 'RETURN');
    await ipt('-A', isolationChain, '-o', 'lo', '-j', 'RETURN');
    await ipt('-A', isolationChain, '-j', 'DROP');
    await ipt('-I', 'INPUT', '1', '-j', isolationChain);
    await ipt('-I', 'OUTPUT', '1', '-j', isolationChain);
  }

  async isIsolated(name: string): Promise<boolean> {
    const ns = this.host(name).namespace;
    try {
      await run('ip', ['netns', 'exec', ns, 'iptables', '-w', '5', '-n', '-L', isolationChain]);
      return true;
    } catch {
      return false;
    }
  }

  /** Removes what isolate() added; a host that was not isolated is left as it is. */
  async heal(name: string): Promise<void> {
    const ns = this.host(name).namespace;
    const ipt = (...args: string[]) => run('ip', ['netns', 'exec', ns, 'iptables', '-w', '5', ...args]);
    if (!(await this.isIsolated(name))) return;
    for (const hook of ['INPUT', 'OUTPUT']) await ipt('-D', hook, '-j', isolationChain).catch(() => undefined);
    await ipt('-F', isolationChain);
    await ipt('-X', isolationChain);
  }

  /** Kills the host's processes and removes its namespace. */
  async removeHost(name: string): Promise<void> {
    const host = this.hosts.get(name);
    if (host === undefined) return;
    await deleteNamespace(host.namespace);
    this.hosts.delete(name);
  }

  /**
   * Kills every process in our namespaces (by PID, namespace by namespace),
   * then removes them, the hub last; the root link goes with its peer. Safe
   * to call twice and after a failed create.
   */
  async destroy(): Promise<void> {
    const problems: string[] = [];
    const ours = (await listNamespaces()).filter((ns) => ns.startsWith(`${this.prefix}-`) && ns !== this.hub);
    for (const ns of ours) await deleteNamespace(ns).catch((err: unknown) => problems.push((err as Error).message));
    this.hosts.clear();
    if (this.created && (await listNamespaces()).includes(this.hub)) {
      await deleteNamespace(this.hub).catch((err: unknown) => problems.push((err as Error).message));
    }
    if (existsSync(`/sys/class/net/${this.rootLink}`)) {
      await run('ip', ['link', 'del', this.rootLink]).catch((err: unknown) => problems.push((err as Error).message));
    }
    this.created = false;
    if (problems.length > 0) throw new NetnsError(`cleanup incomplete: ${problems.join('; ')}`);
  }
}

/** The command name of a process (from /proc), or null when it is gone. */
export function processName(pid: number): string | null {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return null;
  }
}
