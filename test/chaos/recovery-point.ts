/**
 * The recovery point of a restore after every node's data was lost: which
 * acknowledged writes the restored cluster lacks, how many of them the
 * archive held (none may be missing), and how much was lost in WAL bytes and
 * in seconds of acknowledged writes. Pure.
 */
import { parseLsn } from '../../src/model/lsn.js';
import type { WriteRecord } from '../../src/workload/records.js';

/** a write's LSN is read inside its transaction: its commit record follows within this many bytes */
export const commitMarginBytes = 8192;

/** The first byte after a WAL segment named as pg_walfile_name() names it; segmentBytes: wal_segment_size. */
export function segmentEndLsn(walFile: string, segmentBytes: number): number {
  const match = /^[0-9A-F]{8}([0-9A-F]{8})([0-9A-F]{8})$/.exec(walFile);
  if (match === null) throw new Error(`not a WAL segment name: ${walFile}`);
  return parseInt(match[1]!, 16) * 2 ** 32 + (parseInt(match[2]!, 16) + 1) * segmentBytes;
}

export interface RecoveryPoint {
  acked: number;
  /** acknowledged writes whose commit lies before the end of the last archived segment */
  ackedInArchive: number;
  /** of those, the ones the restored cluster lacks: must be none */
  missingFromArchive: number[];
  /** acknowledged writes the restored cluster lacks (written after the archive's end) */
  lost: number;
  /** WAL between the end of the archive and the last acknowledged write */
  lostBytes: number;
  /** from the last acknowledged write the restored cluster has to the last acknowledged at all */
  lostSeconds: number;
}

export function recoveryPoint(writes: readonly WriteRecord[], present: ReadonlySet<number>, lastArchivedSegment: string, segmentBytes: number): RecoveryPoint {
  const end = segmentEndLsn(lastArchivedSegment, segmentBytes);
  const acked = writes.filter((w) => w.ok && w.lsn !== undefined);
  const inArchive = acked.filter((w) => parseLsn(w.lsn!) + commitMarginBytes <= end);
  const lost = acked.filter((w) => !present.has(w.id));
  const kept = acked.filter((w) => present.has(w.id));
  const lastAckedMs = Math.max(0, ...acked.map((w) => w.doneMs));
  const lastKeptMs = Math.max(0, ...kept.map((w) => w.doneMs));
  const lastLsn = Math.max(0, ...acked.map((w) => parseLsn(w.lsn!)));
  return {
    acked: acked.length,
    ackedInArchive: inArchive.length,
    missingFromArchive: inArchive.filter((w) => !present.has(w.id)).map((w) => w.id),
    lost: lost.length,
    lostBytes: lost.length === 0 ? 0 : Math.max(0, lastLsn - end),
    lostSeconds: lost.length === 0 ? 0 : (lastAckedMs - lastKeptMs) / 1000,
  };
}
