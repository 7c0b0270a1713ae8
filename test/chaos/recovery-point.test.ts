/** The recovery point of fault 11, computed from writes, what was restored and the archive's end. */
import { describe, expect, it } from 'vitest';
import type { WriteRecord } from '../../src/workload/records.js';
import { commitMarginBytes, recoveryPoint, segmentEndLsn } from './recovery-point.js';

const write = (id: number, lsn: string, doneMs: number, ok = true): WriteRecord => ({ id, writer: 0, mode: 'persistent', via: 'router', sentMs: doneMs - 5, doneMs, ok, lsn });

const mb16 = 16 * 1024 * 1024;
const mb4 = 4 * 1024 * 1024;

describe('fault 11 recovery point', () => {
  it('reads the end of a WAL segment from its name', () => {
    expect(segmentEndLsn('000000010000000000000003', mb16)).toBe(4 * mb16);
    expect(segmentEndLsn('0000000200000001000000FF', mb16)).toBe(2 ** 32 + 256 * mb16);
    // 4 MiB segments: 0x400 of them to a log file
    expect(segmentEndLsn('000000010000000000000003', mb4)).toBe(4 * mb4);
    expect(segmentEndLsn('0000000200000001000003FF', mb4)).toBe(2 ** 33);
    expect(() => segmentEndLsn('00000002.history', mb16)).toThrow(/not a WAL segment/);
  });

  it('counts what the archive held and what was lost after it, in bytes and seconds', () => {
    const end = segmentEndLsn('000000010000000000000003', mb16);
    const writes = [
      write(1, '0/3000100', 1000),
      write(2, `0/${(end - commitMarginBytes - 1).toString(16).toUpperCase()}`, 2000),
      // its commit may lie past the archive's end: not counted as archived
      write(3, `0/${(end - 100).toString(16).toUpperCase()}`, 3000),
      write(4, '0/4000200', 4500),
      write(5, '0/4000300', 4600, false),
    ];
    expect(recoveryPoint(writes, new Set([1, 2]), '000000010000000000000003', mb16)).toEqual({
      acked: 4,
      ackedInArchive: 2,
      missingFromArchive: [],
      lost: 2,
      lostBytes: 0x4000200 - end,
      lostSeconds: 2.5,
    });
    expect(recoveryPoint(writes, new Set([2, 3, 4]), '000000010000000000000003', mb16).missingFromArchive).toEqual([1]);
  });
});
