/**
 * Backup schedules: cron lines in UTC and intervals, and the spec's backup
 * policy as `keel spec set` changes it.
 */
import { describe, expect, it } from 'vitest';
import { dueBackup, retryDelayMs } from '../../src/controller/backup-plan.js';
import { applySettings, defaultSpec } from '../../src/controller/spec.js';
import type { BackupPolicy } from '../../src/model/values.js';
import { nextRun, parseSchedule, type Schedule } from '../../src/model/schedule.js';

const at = (iso: string) => Date.parse(iso);
const schedule = (text: string): Schedule => {
  const parsed = parseSchedule(text);
  if (typeof parsed === 'string') throw new Error(parsed);
  return parsed;
};
const next = (text: string, afterIso: string) => {
  const ms = nextRun(schedule(text), at(afterIso));
  return ms === null ? null : new Date(ms).toISOString();
};

describe('backup schedules', () => {
  it('runs an interval from the last backup', () => {
    expect(next('6h', '2026-03-01T10:00:00Z')).toBe('2026-03-01T16:00:00.000Z');
    expect(next('30m', '2026-03-01T10:00:00Z')).toBe('2026-03-01T10:30:00.000Z');
    expect(next('7d', '2026-03-01T10:00:00Z')).toBe('2026-03-08T10:00:00.000Z');
  });

  it('runs a cron line at its next matching minute, in UTC', () => {
    // Sundays at 03:00: 2026-03-01 is a Sunday
    expect(next('0 3 * * 0', '2026-03-01T02:59:30Z')).toBe('2026-03-01T03:00:00.000Z');
    expect(next('0 3 * * 0', '2026-03-01T03:00:00Z')).toBe('2026-03-08T03:00:00.000Z');
    expect(next('0 3 * * 7', '2026-03-02T00:00:00Z')).toBe('2026-03-08T03:00:00.000Z');
    expect(next('*/15 * * * *', '2026-03-01T10:07:00Z')).toBe('2026-03-01T10:15:00.000Z');
    expect(next('30 1,13 * * 1-5', '2026-03-06T14:00:00Z')).toBe('2026-03-09T01:30:00.000Z');
    expect(next('0 0 1 * *', '2026-12-15T00:00:00Z')).toBe('2027-01-01T00:00:00.000Z');
  });

  it('takes a day matching either day field when both are restricted, as cron does', () => {
    // the 13th, or any Friday: Friday 2026-03-06 comes first
    expect(next('0 12 13 * 5', '2026-03-02T00:00:00Z')).toBe('2026-03-06T12:00:00.000Z');
  });

  it('never fires a date that does not exist', () => {
    expect(nextRun(schedule('0 0 31 2 *'), at('2026-01-01T00:00:00Z'))).toBeNull();
  });

  it('says what is wrong with a schedule', () => {
    expect(parseSchedule('0 25 * * *')).toMatch(/^hour: "25" is outside 0-23/);
    expect(parseSchedule('every day')).toMatch(/five fields/);
    expect(parseSchedule('5s')).toMatch(/at least 10 s/);
    expect(parseSchedule('* * * * * *')).toMatch(/five fields/);
  });
});

describe('the backup policy in the spec', () => {
  const spec = defaultSpec({ nodes: 3, zones: ['a', 'b', 'c'], instanceClass: 'small' });

  it('takes schedules, retention and the replicas\' source from keel spec set', () => {
    const next = applySettings(spec, ['backup.full=0 3 * * 0', 'backup.incr=6h', 'backup.retentionFull=4', 'backup.replicaSource=leader'], null);
    expect(next.backup).toEqual({ full: '0 3 * * 0', diff: null, incr: '6h', retentionFull: 4, replicaSource: 'leader' });
    expect(applySettings(next, ['backup.incr=off'], null).backup?.incr).toBeNull();
  });

  it('refuses a schedule it cannot read and a retention of nothing', () => {
    expect(() => applySettings(spec, ['backup.full=sometimes'], null)).toThrow(/backup\.full: a cron line/);
    expect(() => applySettings(spec, ['backup.retentionFull=0'], null)).toThrow(/backup\.retentionFull/);
    expect(() => applySettings(spec, ['backup.replicaSource=s3'], null)).toThrow(/backup\.replicaSource/);
  });
});

describe('which scheduled backup is due', () => {
  const policy = (over: Partial<BackupPolicy> = {}): BackupPolicy => ({ full: null, diff: null, incr: null, retentionFull: 2, replicaSource: 'backup', ...over });
  const sunday3am = at('2026-03-01T03:00:00Z');

  it('takes nothing without a schedule, even with no backup at all', () => {
    expect(dueBackup(policy(), [], sunday3am)).toBeNull();
  });

  it('starts with a full backup whatever is scheduled', () => {
    expect(dueBackup(policy({ incr: '1h' }), [{ type: 'incr', startMs: sunday3am }], sunday3am)).toEqual({ type: 'full', reason: 'no full backup in the repository yet' });
  });

  it('takes a kind once its schedule fired since the last backup that covers it', () => {
    const p = policy({ full: '0 3 * * 0', incr: '6h' });
    const taken = [{ type: 'full' as const, startMs: sunday3am }];
    expect(dueBackup(p, taken, sunday3am + 5 * 3_600_000)).toBeNull();
    expect(dueBackup(p, taken, sunday3am + 6 * 3_600_000)?.type).toBe('incr');
    // an incremental since then moves the next one on
    expect(dueBackup(p, [...taken, { type: 'incr', startMs: sunday3am + 6 * 3_600_000 }], sunday3am + 7 * 3_600_000)).toBeNull();
    // a week on, the full is due and goes before the incremental
    expect(dueBackup(p, taken, at('2026-03-08T03:00:00Z'))).toMatchObject({ type: 'full', reason: expect.stringContaining('due since 2026-03-08T03:00:00.000Z') });
  });

  it('counts a full backup as a differential and a differential as an incremental', () => {
    const p = policy({ full: '7d', diff: '1d', incr: '1h' });
    const taken = [{ type: 'full' as const, startMs: sunday3am }, { type: 'diff' as const, startMs: sunday3am + 86_400_000 }];
    expect(dueBackup(p, taken, sunday3am + 86_400_000 + 30 * 60_000)).toBeNull();
    expect(dueBackup(p, taken, sunday3am + 2 * 86_400_000)?.type).toBe('diff');
  });

  it('waits longer after each failure in a row, up to 10 minutes', () => {
    expect([1, 2, 3, 6, 20].map(retryDelayMs)).toEqual([30_000, 60_000, 120_000, 600_000, 600_000]);
  });
});
