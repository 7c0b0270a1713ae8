import { readFileSync } from 'node:fs';
import { sleep } from './clock.js';

/** Whether a process with this PID exists (signal 0 checks without touching it). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  // A zombie answers signal 0 but has ended: it only waits for its parent to reap it.
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return true;
  }
}

/** The PID in a pid file (first line), or null when the file is missing or holds no number. */
export function readPidFile(path: string): number | null {
  try {
    const pid = Number(readFileSync(path, 'utf8').split('\n')[0]?.trim());
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

/** Waits until the process is gone; true when it went within the time. */
export async function waitForExit(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (isAlive(pid)) {
    if (Date.now() >= deadline) return false;
    await sleep(50);
  }
  return true;
}

/** SIGTERM, then SIGKILL after the grace period. Resolves once the process is gone. */
export async function terminate(pid: number, graceMs: number, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (!isAlive(pid)) return;
  try {
    process.kill(pid, signal);
  } catch {
    return;
  }
  if (await waitForExit(pid, graceMs)) return;
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    return;
  }
  await waitForExit(pid, 5000);
}

/** A process's arguments, as /proc shows them; null once it is gone. */
export function commandLine(pid: number): string[] | null {
  if (!isAlive(pid)) return null;
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter((arg) => arg !== '');
  } catch {
    return null;
  }
}

/**
 * terminate(), only while the process's command line holds every one of
 * `marks`: a PID read from a file may belong to an unrelated process by now.
 */
export async function terminateIfNamed(pid: number, marks: readonly string[], graceMs: number, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  const line = commandLine(pid)?.join(' ');
  if (line === undefined || !marks.every((mark) => line.includes(mark))) return;
  await terminate(pid, graceMs, signal);
}
