/**
 * The WAL an old leader had not archived when it died. With archive_mode
 * `on`, a standby marks the segments it streamed as done without archiving
 * them; those the leader had not pushed yet would be missing from the archive
 * for ever, and a point-in-time recovery across the failover would stop
 * there. A new leader pushes them after its promotion: every complete segment
 * of the timeline it branched from, before the switch point, that its pg_wal
 * still holds (a segment already in the repository with the same content is
 * accepted as it is).
 */
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { parentOf } from '../postgres/history.js';
import { sleep } from '../util/clock.js';
import { isLockBusy, type Pgbackrest } from './pgbackrest.js';

/**
 * The complete segments of the parent timeline before the switch, oldest first. Later names are not
 * taken: PostgreSQL renames old segments to future names for reuse, and their bytes are not WAL.
 */
export function gapSegments(walFiles: readonly string[], parent: { timeline: number; switchLsn: number }, segmentBytes: number): string[] {
  const tli = parent.timeline.toString(16).toUpperCase().padStart(8, '0');
  const switchSegment = Math.floor(parent.switchLsn / segmentBytes);
  return walFiles
    .filter((name) => {
      const match = /^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$/.exec(name);
      if (match === null || match[1] !== tli) return false;
      const segment = parseInt(match[2]!, 16) * (2 ** 32 / segmentBytes) + parseInt(match[3]!, 16);
      return segment < switchSegment;
    })
    .sort();
}

/** One segment, waiting (a few seconds at most) while the asynchronous push that runs after a promotion holds the lock. */
async function pushOne(pgbackrest: Pgbackrest, path: string): Promise<string> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await pgbackrest.run('archive-push', ['--no-archive-async'], { parameters: [path] });
    } catch (err) {
      if (attempt >= 10 || !isLockBusy((err as Error).message)) throw err;
      await sleep(1000);
    }
  }
}

export interface GapOutcome {
  timeline: number;
  pushed: string[];
  /** already in the repository, same content */
  present: number;
}

/** Pushes the segments of the parent of `timeline` this data directory holds; null on timeline 1. segmentBytes: wal_segment_size */
export async function fillArchiveGap(dataDir: string, timeline: number, segmentBytes: number, pgbackrest: Pgbackrest): Promise<GapOutcome | null> {
  const history = await readFile(join(dataDir, 'pg_wal', `${timeline.toString(16).toUpperCase().padStart(8, '0')}.history`), 'utf8').catch(() => null);
  const parent = history === null ? null : parentOf(history);
  if (parent === null) return null;
  const segments = gapSegments(await readdir(join(dataDir, 'pg_wal')), parent, segmentBytes);
  const outcome: GapOutcome = { timeline: parent.timeline, pushed: [], present: 0 };
  for (const segment of segments) {
    const output = await pushOne(pgbackrest, join(dataDir, 'pg_wal', segment));
    if (/already exists in the (repo\d+ )?archive/i.test(output)) outcome.present += 1;
    else outcome.pushed.push(segment);
  }
  return outcome;
}
