/**
 * A postmaster killed with SIGKILL (the chaos faults, the benches' dead
 * nodes, a test's crashed leader) leaves its dynamic shared memory segments
 * in /dev/shm: PostgreSQL removes them when it starts again on that data
 * directory, but a test removes the directory instead, and each run left a
 * hundred or so (about 0.5 MB each, in memory) until the machine restarted.
 * These helpers find the segments no process maps any more.
 */
import { readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';

const segmentName = /^PostgreSQL\.\d+$/;
/** a segment this young may be one PostgreSQL is making now, not mapped yet */
const settledMs = 2000;

function commandOf(pid: string): string | null {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return null;
  }
}

/** Every /dev/shm path some process maps now; null when a PostgreSQL process's maps cannot be read (not root): then nothing is known. */
function mappedPaths(dir: string): Set<string> | null {
  const mapped = new Set<string>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let maps: string;
    try {
      maps = readFileSync(`/proc/${entry}/maps`, 'utf8');
    } catch (err) {
      // a process that ended meanwhile is fine; a PostgreSQL process that may not be read leaves us blind (an
      // init whose maps even root may not read, as here, maps no segment of PostgreSQL's)
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ESRCH') continue;
      const command = commandOf(entry);
      if (command === null || command.startsWith('postgres') || command.startsWith('postmaster')) return null;
      continue;
    }
    for (const line of maps.split('\n')) {
      const at = line.indexOf(`${dir}/`);
      if (at >= 0) mapped.add(line.slice(at).replace(/ \(deleted\)$/, ''));
    }
  }
  return mapped;
}

/**
 * Removes the PostgreSQL segments in `dir` made since `sinceMs` (by this
 * run, then) that no process maps; returns their names. Segments older than
 * the run, or still mapped, or made in the last two seconds, stay.
 */
export function removeOrphanedSegments(sinceMs: number, dir = '/dev/shm', nowMs = Date.now()): string[] {
  let names: string[];
  try {
    names = readdirSync(dir).filter((name) => segmentName.test(name));
  } catch {
    return [];
  }
  if (names.length === 0) return [];
  const mapped = mappedPaths(dir);
  if (mapped === null) return [];
  const removed: string[] = [];
  for (const name of names) {
    const path = join(dir, name);
    const stat = statSync(path, { throwIfNoEntry: false });
    if (stat === undefined || stat.mtimeMs < sinceMs || nowMs - stat.mtimeMs < settledMs || mapped.has(path)) continue;
    try {
      rmSync(path, { force: true });
      removed.push(name);
    } catch {
      // another user's segment (the sticky /dev/shm): not ours to remove
    }
  }
  return removed;
}
