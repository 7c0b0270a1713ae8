/** Which segments a new leader pushes for the old one: the parent timeline's, before the switch. */
import { describe, expect, it } from 'vitest';
import { gapSegments } from '../../src/backup/archive-gap.js';
import { parentOf } from '../../src/postgres/history.js';

const mb16 = 16 * 1024 * 1024;

describe('the archive gap after a failover', () => {
  it("reads the parent timeline and the switch point from the new timeline's history file", () => {
    expect(parentOf('1\t0/5000000\tno recovery target specified\n2\t0/9A000D8\tno recovery target specified\n')).toEqual({ timeline: 2, switchLsn: 0x9a000d8 });
    expect(parentOf('')).toBeNull();
    expect(parentOf('1\tnot-an-lsn\n')).toBeNull();
  });

  it('takes the complete segments of the parent timeline before the switch, not later names (recycled files)', () => {
    const files = [
      '000000010000000000000006', '000000010000000000000007', '000000010000000000000008',
      // the switch lies in segment 9: it is on the new timeline now, and its old copy is .partial
      '000000010000000000000009.partial', '00000001000000000000000A', '00000001000000000000000B',
      '000000020000000000000009', '00000002.history', 'archive_status',
    ];
    expect(gapSegments(files, { timeline: 1, switchLsn: 0x90000d8 }, mb16)).toEqual(['000000010000000000000006', '000000010000000000000007', '000000010000000000000008']);
  });

  it('counts segments across log files', () => {
    // 0x100 segments of 16 MiB make one 4 GiB log file
    expect(gapSegments(['0000000100000000000000FF', '000000010000000100000000', '000000010000000100000001'], { timeline: 1, switchLsn: 2 ** 32 + 0x1000000 + 5 }, mb16)).toEqual(['0000000100000000000000FF', '000000010000000100000000']);
  });

  it('numbers segments by the size the cluster was made with', () => {
    // 4 MiB segments: 0x400 to a log file, and 0/90000D8 lies in segment 0x24
    const files = ['000000010000000000000022', '000000010000000000000023', '000000010000000000000024', '000000010000000000000025'];
    expect(gapSegments(files, { timeline: 1, switchLsn: 0x90000d8 }, 4 * 1024 * 1024)).toEqual(['000000010000000000000022', '000000010000000000000023']);
    expect(gapSegments(['0000000100000000000003FF', '000000010000000100000000', '000000010000000100000001'], { timeline: 1, switchLsn: 2 ** 32 + 0x400000 + 5 }, 4 * 1024 * 1024)).toEqual(['0000000100000000000003FF', '000000010000000100000000']);
    // read as 16 MiB segments the same names would all lie past the switch (segment 9)
    expect(gapSegments(files, { timeline: 1, switchLsn: 0x90000d8 }, mb16)).toEqual([]);
  });
});
