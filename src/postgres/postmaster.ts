/**
 * Finding and stopping the postmaster of one data directory, for everything
 * that signals one (the guard, `keel down`, the providers' fence). A PID is
 * signalled only after /proc says it is that data directory's postmaster:
 * its working directory is the data directory (a postmaster changes into it
 * at start) and its program is the postgres binary. A stale postmaster.pid
 * may name any process by now, and Keel often runs as root, which may signal
 * any process at all.
 */
import { readFileSync, readdirSync, readlinkSync, realpathSync } from 'node:fs';
import { basename, join } from 'node:path';
import { commandLine } from '../util/process.js';

export type PostmasterCheck =
  | { kind: 'none' }
  | { kind: 'verified'; pid: number; startTicks: string }
  /** postmaster.pid names a process that is not this data directory's postmaster (a stale file) */
  | { kind: 'refused'; pid: number; why: string }
  /** /proc would not say (no rights): it may be the postmaster, but it is not signalled blind */
  | { kind: 'unverifiable'; pid: number; why: string };

interface ProcStat {
  state: string;
  ppid: number;
  /** field 22: start time in clock ticks since boot; with the PID, it names one process for good */
  startTicks: string;
}

function procStat(pid: number): ProcStat | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // the command name may hold spaces and parentheses: count fields after the last ')'
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { state: fields[0] ?? '', ppid: Number(fields[1]), startTicks: fields[19] ?? '' };
  } catch {
    return null;
  }
}

/** Gone, or a zombie (ended, only waiting for its parent to reap it). */
export function isGone(pid: number): boolean {
  const stat = procStat(pid);
  return stat === null || stat.state === 'Z';
}

/** The real path of a file, or the path as given when it cannot be resolved. */
export function realPathOr(path: string): string {
  try {
    return realpathSync(path);
  } catch {
    return path;
  }
}

function postmasterPidFromFile(dataDir: string): number | null {
  try {
    const pid = Number(readFileSync(join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]?.trim());
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

/**
 * The postmaster named in `dataDir`/postmaster.pid, checked against /proc.
 * `dataDir` and `postgresBinary` are real paths (realPathOr); a null binary
 * accepts any program named `postgres` (callers that do not know the node's
 * binDir).
 */
export function findPostmaster(dataDir: string, postgresBinary: string | null): PostmasterCheck {
  const pid = postmasterPidFromFile(dataDir);
  if (pid === null) return { kind: 'none' };
  const stat = procStat(pid);
  if (stat === null || stat.state === 'Z') return { kind: 'none' };
  let cwd: string;
  let exe: string;
  try {
    cwd = readlinkSync(`/proc/${pid}/cwd`);
    exe = readlinkSync(`/proc/${pid}/exe`).replace(/ \(deleted\)$/, '');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ESRCH') return { kind: 'none' };
    return { kind: 'unverifiable', pid, why: `cannot read /proc/${pid} (${code ?? 'error'}): the guard needs the rights to inspect PostgreSQL's processes` };
  }
  if (cwd !== dataDir) return { kind: 'refused', pid, why: `PID ${pid} works in ${cwd}, not in ${dataDir}` };
  if (postgresBinary === null ? basename(exe) !== 'postgres' : exe !== postgresBinary) {
    return { kind: 'refused', pid, why: `PID ${pid} runs ${exe}, not ${postgresBinary ?? 'a postgres binary'}` };
  }
  return { kind: 'verified', pid, startTicks: stat.startTicks };
}

/**
 * Every process below `pid` (children, their children...), listed in one
 * pass over /proc. Taken while `pid` lives: once it dies they belong to init.
 * A SIGKILLed postmaster leaves them running: backends notice soon, but an
 * archive_command (sh, then pgbackrest) may run on for a minute.
 */
export function descendantsOf(pid: number): number[] {
  const byParent = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const ppid = procStat(Number(entry))?.ppid;
    if (ppid !== undefined) byParent.set(ppid, [...(byParent.get(ppid) ?? []), Number(entry)]);
  }
  const found: number[] = [];
  for (let queue = [pid]; queue.length > 0; ) {
    const next = queue.flatMap((p) => byParent.get(p) ?? []);
    found.push(...next);
    queue = next;
  }
  return found;
}

/** A process's command line as ps shows it (PostgreSQL writes its titles there), or null once it is gone. */
export function processTitle(pid: number): string | null {
  return commandLine(pid)?.join(' ').trimEnd() ?? null;
}

/** A process's children, from /proc/PID/task/PID/children (the main thread's: a postmaster has no other): one read, not a pass over /proc. */
export function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').split(' ').filter((entry) => entry !== '').map(Number);
  } catch {
    return [];
  }
}

/**
 * The postmaster's children still starting as client backends: until their
 * startup packet is read (the TLS handshake included) they carry the
 * postmaster's own command line, then a title ending in "initializing" (set
 * as the packet is read, until the login begins), "authentication" and then
 * "startup" until they are logged in. pg_stat_activity shows none of them yet.
 */
export function startingBackends(postmasterPid: number): number[] {
  const own = processTitle(postmasterPid);
  if (own === null) return [];
  return childrenOf(postmasterPid).filter((child) => {
    const shown = processTitle(child);
    return shown !== null && startingTitle(shown, own);
  });
}

/** Whether a child of the postmaster whose title is `shown` is a backend still starting (startingBackends). Pure. */
export function startingTitle(shown: string, postmasterTitle: string): boolean {
  return shown === postmasterTitle || / (initializing|authentication|startup)$/.test(shown);
}

/**
 * Connections to `port` that the kernel has completed and that wait for the
 * postmaster to accept them: no process stands for them yet, so neither
 * pg_stat_activity nor startingBackends shows them (during a switchover a
 * new connection waited up to 130 ms for PostgreSQL's first answer). For a
 * listening socket the rx_queue of /proc/net/tcp is the length of its accept
 * queue; summed over every listening socket on the port, IPv4 and IPv6, in
 * this network namespace.
 */
export function acceptQueue(port: number): number {
  let total = 0;
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    try {
      total += listenBacklog(readFileSync(table, 'utf8'), port);
    } catch {
      // no IPv6 here
    }
  }
  return total;
}

/** The accept queues of the listening sockets on `port` in one /proc/net/tcp(6) table. Pure. */
export function listenBacklog(table: string, port: number): number {
  let total = 0;
  for (const line of table.split('\n').slice(1)) {
    // sl local_address rem_address st tx_queue:rx_queue ...
    const [, local, , state, queues] = line.trim().split(/\s+/);
    if (state !== '0A' || local === undefined || queues === undefined) continue;
    if (Number.parseInt(local.slice(local.lastIndexOf(':') + 1), 16) !== port) continue;
    total += Number.parseInt(queues.slice(queues.indexOf(':') + 1), 16) || 0;
  }
  return total;
}

/** SIGKILL of a process and of everything below it, as a machine's death would end them. */
export function killWithDescendants(pid: number): void {
  const below = descendantsOf(pid);
  signal(pid, 'SIGKILL');
  for (const child of below) signal(child, 'SIGKILL');
}

function signal(pid: number, name: NodeJS.Signals): void {
  try {
    process.kill(pid, name);
  } catch {
    // gone meanwhile
  }
}

async function waitGone(pid: number, timeoutMs: number, pollMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!isGone(pid)) {
    if (Date.now() >= deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, pollMs));
  }
  return true;
}

export type StopOutcome = 'quit' | 'killed' | 'survived';

/**
 * Immediate shutdown (SIGQUIT: no checkpoint, clients cut at once); SIGKILL
 * to the postmaster and its children if it still runs after `graceMs`.
 * The PID is checked to be the same process before the SIGKILL.
 */
export async function stopPostmaster(target: { pid: number; startTicks: string }, graceMs = 1000, pollMs = 10): Promise<StopOutcome> {
  signal(target.pid, 'SIGQUIT');
  if (await waitGone(target.pid, graceMs, pollMs)) return 'quit';
  const stat = procStat(target.pid);
  if (stat === null || stat.startTicks !== target.startTicks) return 'quit';
  killWithDescendants(target.pid);
  return (await waitGone(target.pid, 1000, pollMs)) ? 'killed' : 'survived';
}

export type TerminateOutcome =
  | { kind: 'none' }
  | { kind: 'refused' | 'unverifiable'; pid: number; why: string }
  | { kind: 'stopped' | 'killed' | 'survived'; pid: number };

/**
 * Stops the postmaster of `dataDir` with `signal` (SIGINT: fast shutdown,
 * SIGKILL: at once), SIGKILL after `graceMs`, but only once findPostmaster
 * verified it; a PID it refuses, or cannot verify, is never signalled. The
 * SIGKILL goes only to the same process (same start time).
 */
export async function terminatePostmaster(
  dataDir: string,
  options: { signal: NodeJS.Signals; graceMs: number; postgresBinary?: string | null; pollMs?: number },
): Promise<TerminateOutcome> {
  const check = findPostmaster(realPathOr(dataDir), options.postgresBinary === undefined || options.postgresBinary === null ? null : realPathOr(options.postgresBinary));
  if (check.kind === 'none') return check;
  if (check.kind !== 'verified') return check;
  const pollMs = options.pollMs ?? 50;
  if (options.signal === 'SIGKILL') killWithDescendants(check.pid);
  else signal(check.pid, options.signal);
  if (await waitGone(check.pid, options.signal === 'SIGKILL' ? Math.max(options.graceMs, 5000) : options.graceMs, pollMs)) {
    return { kind: options.signal === 'SIGKILL' ? 'killed' : 'stopped', pid: check.pid };
  }
  const stat = procStat(check.pid);
  if (stat === null || stat.startTicks !== check.startTicks) return { kind: 'stopped', pid: check.pid };
  killWithDescendants(check.pid);
  return (await waitGone(check.pid, 5000, pollMs)) ? { kind: 'killed', pid: check.pid } : { kind: 'survived', pid: check.pid };
}

/** The PID of `dataDir`'s postmaster when /proc verifies it, else null (no postmaster, or postmaster.pid names another process). */
export function verifiedPostmasterPid(dataDir: string, postgresBinary: string | null = null): number | null {
  const check = findPostmaster(realPathOr(dataDir), postgresBinary === null ? null : realPathOr(postgresBinary));
  return check.kind === 'verified' ? check.pid : null;
}
