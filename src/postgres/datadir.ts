/**
 * What a data directory's files say, read without PostgreSQL: whether it
 * holds a database, which postmaster (if any) runs on it, and the timelines
 * its pg_wal knows of.
 *
 * The small files an agent reads at every loop (these, pg_control, the conf
 * files, history files) are read synchronously: a few KB from the page cache
 * take microseconds, while each step of an asynchronous read (open, stat,
 * read, close) is a round trip through libuv's threads and the event loop.
 * With both CPUs busy, as in a switchover's pause, a promotion's check of its
 * conf file (three such reads) took 80-130 ms and a loop's reading 60-80.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { lstat, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { KeelError } from '../errors.js';
import type { Logger } from '../util/log.js';
import type { NodeLayout } from './conf.js';
import { checkReachable, ensureOwnedDir, type RunAs } from './programs.js';
import type { DataDirState, StopMode } from './types.js';

export async function dataDirState(dataDir: string): Promise<DataDirState> {
  try {
    if (readdirSync(dataDir).length === 0) return 'empty';
    return existsSync(join(dataDir, 'global', 'pg_control')) ? 'present' : 'incomplete';
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return 'missing';
    if (code === 'ENOTDIR') return 'present';
    throw err;
  }
}

/** A small file's text; null when absent or unreadable. */
export function readSmallFile(path: string): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return null;
  }
}

/** The PID on the first line of a lock file (postmaster.pid, a socket's .lock); null when absent or unreadable. */
function lockFilePid(path: string): number | null {
  const pid = Number((readSmallFile(path) ?? '').split('\n')[0]);
  return Number.isInteger(pid) && pid > 0 ? pid : null;
}

/**
 * Whether the postmaster of `dataDir` is shutting down: PostgreSQL writes
 * "stopping" on the status line of postmaster.pid (its eighth) the moment a
 * shutdown is asked, and refuses every new connection from then on (each try
 * a backend forked only to say "the database system is shutting down").
 */
export async function postmasterStopping(dataDir: string): Promise<boolean> {
  const text = readSmallFile(join(dataDir, 'postmaster.pid')) ?? '';
  return text.split('\n')[7]?.trim() === 'stopping';
}

/** The postmaster running on the data directory, if any. */
export async function livePostmasterPid(dataDir: string): Promise<number | null> {
  const pid = lockFilePid(join(dataDir, 'postmaster.pid'));
  return pid !== null && isPostmasterAlive(pid) ? pid : null;
}

function processState(pid: number): { command: string; state: string } | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const close = stat.lastIndexOf(')');
    return { command: stat.slice(stat.indexOf('(') + 1, close), state: stat.slice(close + 2, close + 3) };
  } catch {
    return null;
  }
}

/** A process that exited but was not reaped yet: it runs nothing, yet kill(pid, 0) still succeeds. */
export function isZombie(pid: number): boolean {
  return processState(pid)?.state === 'Z';
}

/** The postmaster's shutdown modes (what pg_ctl stop -m sends). */
const stopSignals: Record<StopMode, NodeJS.Signals> = { smart: 'SIGTERM', fast: 'SIGINT', immediate: 'SIGQUIT' };

/** Asks the postmaster to shut down as `pg_ctl stop -m mode` does, without starting pg_ctl; a postmaster gone already is no error. */
export function signalShutdown(pid: number, mode: StopMode): void {
  try {
    process.kill(pid, stopSignals[mode]);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw new KeelError('KEEL_POSTGRES_FAILED', `cannot signal postmaster ${pid}: ${(err as Error).message}`);
  }
}

/** alive, and really a postgres process: a stale postmaster.pid may name a recycled PID or a zombie */
export function isPostmasterAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  const proc = processState(pid);
  if (proc === null) return true; // no /proc: trust kill(0)
  return proc.state !== 'Z' && (proc.command.startsWith('postgres') || proc.command.startsWith('postmaster'));
}

/**
 * A killed postmaster stays a zombie until its parent (often PID 1, after
 * the agent that started it restarted) reaps it, and PostgreSQL takes a
 * zombie's PID in postmaster.pid for a live postmaster: it refuses to start
 * for as long as the zombie lasts (seconds under some inits, for ever under
 * one that never reaps). A zombie runs nothing, so its lock files are stale;
 * PostgreSQL's own check that no old backend still uses the shared memory
 * segment stays in force.
 */
export async function removeLocksOfZombiePostmaster(dataDir: string, socketLockPath: string, logger: Logger): Promise<void> {
  const lockPath = join(dataDir, 'postmaster.pid');
  const pid = lockFilePid(lockPath);
  if (pid === null || !isZombie(pid)) return;
  logger.warn({ pid }, 'the last postmaster is a zombie: removing its stale lock files');
  await rm(lockPath, { force: true });
  if (lockFilePid(socketLockPath) === pid) await rm(socketLockPath, { force: true });
}

/** The highest timeline of a history file in pg_wal (0 when there is none). */
export async function newestHistoryTimeline(dataDir: string): Promise<number> {
  let files: string[];
  try {
    files = readdirSync(join(dataDir, 'pg_wal'));
  } catch {
    files = [];
  }
  let newest = 0;
  for (const name of files) {
    const hex = /^([0-9A-F]{8})\.history$/.exec(name)?.[1];
    if (hex !== undefined) newest = Math.max(newest, parseInt(hex, 16));
  }
  return newest;
}

/** Node directory (and socket directory) owned by, and reachable for, the run-as user. */
export async function prepareNodeDirs(layout: NodeLayout, runAs: RunAs | null): Promise<void> {
  const { nodeDir, socketDir, socketDirIsFallback } = layout;
  await ensureOwnedDir(nodeDir, 0o700, runAs);
  await checkReachable(nodeDir, runAs);
  if (socketDir === nodeDir) return;
  if (!existsSync(socketDir)) {
    await ensureOwnedDir(socketDir, 0o700, runAs);
  } else if (socketDirIsFallback) {
    // A predictable name under /tmp: only trust it if it is ours.
    const info = await lstat(socketDir);
    if (!info.isDirectory() || info.uid !== (runAs?.uid ?? process.getuid?.())) {
      throw new KeelError('KEEL_DIR_UNUSABLE', `${socketDir} (short socket directory) belongs to someone else`);
    }
  }
  await checkReachable(socketDir, runAs);
}
