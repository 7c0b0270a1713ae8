import { describe, expect, it } from 'vitest';
import { historyFileName, historyFileText } from '../../src/postgres/history.js';

describe('timeline history files written for timelines started elsewhere', () => {
  it('are named as PostgreSQL names them', () => {
    expect(historyFileName(2)).toBe('00000002.history');
    expect(historyFileName(26)).toBe('0000001A.history');
  });

  it('list the switches into each timeline up to the one written, oldest first, in PostgreSQL\'s format', () => {
    const known = [
      { timeline: 3, switchLsn: 0x5000000 },
      { timeline: 2, switchLsn: 0x4029b10 },
      { timeline: 4, switchLsn: 0x6000028 },
    ];
    const lines = historyFileText(3, known).trimEnd().split('\n');
    expect(lines.map((line) => line.split('\t').slice(0, 2))).toEqual([
      ['1', '0/4029B10'],
      ['2', '0/5000000'],
    ]);
    expect(historyFileText(2, [])).toBe('\n');
  });
});
