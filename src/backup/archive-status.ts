/**
 * WAL archiving as a primary's pg_stat_archiver shows it, and the events its
 * changes make. Pure: the monitor (archive-monitor.ts) reads and publishes.
 */
import type { MemberArchive } from '../model/values.js';

/** One reading of pg_stat_archiver and the WAL waiting for it, on a primary. */
export interface ArchiverReading {
  archivedCount: number;
  lastArchivedWal: string | null;
  lastArchivedAtMs: number | null;
  failedCount: number;
  lastFailedWal: string | null;
  lastFailedAtMs: number | null;
  /** pg_current_wal_lsn() as bytes */
  currentLsn: number;
  /** complete segments marked .ready, not yet archived */
  readySegments: number;
  segmentBytes: number;
}

export function archiveStatus(reading: ArchiverReading, nowMs: number): MemberArchive {
  const failing =
    reading.failedCount > 0 && reading.lastFailedAtMs !== null && (reading.lastArchivedAtMs === null || reading.lastFailedAtMs > reading.lastArchivedAtMs);
  // what a loss of every node now would take with it: the segment being written, and those waiting
  const lagBytes = (reading.currentLsn % reading.segmentBytes) + reading.readySegments * reading.segmentBytes;
  const lagSeconds = lagBytes === 0 ? 0 : reading.lastArchivedAtMs === null ? null : Math.max(0, (nowMs - reading.lastArchivedAtMs) / 1000);
  return {
    state: failing ? 'failing' : 'ok',
    archivedCount: reading.archivedCount,
    failedCount: reading.failedCount,
    lastArchivedWal: reading.lastArchivedWal,
    lastArchivedAtMs: reading.lastArchivedAtMs,
    lastFailedWal: reading.lastFailedWal,
    lastFailedAtMs: reading.lastFailedAtMs,
    lagBytes,
    lagSeconds: lagSeconds === null ? null : Math.round(lagSeconds * 10) / 10,
    atMs: nowMs,
  };
}

export interface ArchiveEvent {
  kind: 'archive-failed' | 'archive-recovered';
  message: string;
}

/**
 * An event when archiving starts failing or works again; nothing while it keeps failing (the
 * metric and `keel status` count the failures) or keeps working. `reportedFailing`: the last
 * event said it failed. `detail` is pgBackRest's reason.
 */
export function archiveTransition(node: string, reportedFailing: boolean, next: MemberArchive, detail: string | null): ArchiveEvent | null {
  const wasFailing = reportedFailing;
  if (next.state === 'failing' && !wasFailing) {
    const reason = detail === null ? '' : `: ${detail}`;
    return { kind: 'archive-failed', message: `${node} cannot archive WAL ${next.lastFailedWal ?? '(unknown)'} (failed ${next.failedCount} time(s) so far)${reason}` };
  }
  if (next.state === 'ok' && wasFailing) {
    return { kind: 'archive-recovered', message: `${node} archives WAL again (last: ${next.lastArchivedWal ?? '(unknown)'}, ${next.failedCount} failure(s) in all)` };
  }
  return null;
}

/** One word or two for `keel status`: ok, failing, with the WAL waiting. */
export function archiveSummary(archive: MemberArchive | undefined): string {
  if (archive === undefined) return '';
  const waiting = archive.lagBytes === 0 ? '' : `, ${Math.ceil(archive.lagBytes / 1024)} KiB waiting`;
  return archive.state === 'failing' ? `FAILING x${archive.failedCount}${waiting}` : `ok${waiting}`;
}
