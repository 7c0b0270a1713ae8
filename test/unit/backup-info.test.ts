/**
 * What pgBackRest says, parsed; archiving status and its events; where a
 * backup is taken from.
 */
import { describe, expect, it } from 'vitest';
import { archiveStatus, archiveSummary, archiveTransition, type ArchiverReading } from '../../src/backup/archive-status.js';
import { lastProgressPercent, parseInfo, pgbackrestErrors } from '../../src/backup/info.js';
import { backupMembers } from '../../src/backup/runner.js';
import { cluster, leaderKey, member, primaryMember } from './fixtures.js';

const infoText = `[{"archive":[{"database":{"id":1,"repo-key":1},"id":"15-1","max":"00000001000000000000000A","min":"000000010000000000000001"}],
"backup":[{"archive":{"start":"000000010000000000000008","stop":"000000010000000000000008"},"backrest":{"format":5,"version":"2.45"},
"database":{"id":1,"repo-key":1},"error":false,"info":{"delta":38902488,"repository":{"delta":7340032,"size":7340032},"size":38902488},
"label":"20261203-025214F","lsn":{"start":"0/8000028","stop":"0/8000138"},"prior":null,"reference":null,
"timestamp":{"start":1796266334,"stop":1796266337},"type":"full"},
{"archive":{"start":"000000010000000000000009","stop":"00000001000000000000000A"},"backrest":{"format":5,"version":"2.45"},
"database":{"id":1,"repo-key":1},"error":false,"info":{"delta":8500,"repository":{"delta":560,"size":7340592},"size":38902488},
"label":"20261203-025214F_20261203-025221I","lsn":{"start":"0/9000028","stop":"0/A000050"},"prior":"20261203-025214F","reference":["20261203-025214F"],
"timestamp":{"start":1796266341,"stop":1796266345},"type":"incr"}],
"cipher":"aes-256-cbc","db":[{"id":1,"repo-key":1,"system-id":7714901886385765176,"version":"15"}],"name":"keel",
"repo":[{"cipher":"aes-256-cbc","key":1,"status":{"code":0,"message":"ok"}}],"status":{"code":0,"lock":{"backup":{"held":true}},"message":"ok"}}]`;

describe('pgbackrest info', () => {
  it('reads the backups oldest first, with times, sizes, WAL and LSN ranges', () => {
    const [stanza] = parseInfo(infoText);
    expect(stanza!.name).toBe('keel');
    expect(stanza!.backupRunning).toBe(true);
    expect(stanza!.archiveMin).toBe('000000010000000000000001');
    expect(stanza!.backups.map((b) => [b.label, b.type])).toEqual([['20261203-025214F', 'full'], ['20261203-025214F_20261203-025221I', 'incr']]);
    expect(stanza!.backups[1]).toMatchObject({ startMs: 1796266341000, stopMs: 1796266345000, deltaBytes: 8500, repoBytes: 560, walStop: '00000001000000000000000A', lsnStop: 0xa000050, references: ['20261203-025214F'] });
  });

  it('keeps the 64-bit system identifier exact', () => {
    expect(parseInfo(infoText)[0]!.systemId).toBe('7714901886385765176');
  });

  it('reads a stanza with no backup and its status', () => {
    const [stanza] = parseInfo('[{"archive":[],"backup":[],"cipher":"none","db":[],"name":"x","repo":[],"status":{"code":1,"lock":{"backup":{"held":false}},"message":"missing stanza path"}}]');
    expect(stanza).toMatchObject({ statusCode: 1, statusMessage: 'missing stanza path', backups: [], systemId: null });
  });
});

describe('backup output', () => {
  it('finds the last progress percentage', () => {
    const lines = 'P01 DETAIL: backup file /d/base/5/16396 (128MB, 74.61%) checksum 6f39\nP01 DETAIL: backup file /d/base/1/13404 (0B, 100.00%)\n';
    expect(lastProgressPercent(lines)).toBe(100);
    expect(lastProgressPercent('INFO: backup start archive = 0000')).toBeNull();
  });

  it("keeps pgBackRest's error and hint lines, without binary noise", () => {
    const output = '2026 P00 INFO: begin\nERROR: [056]: unable to find primary cluster - cannot proceed\n       HINT: are all available clusters in recovery?\nERROR: [099]: key/value found at line 1: \u0001\u0002junk';
    expect(pgbackrestErrors(output)).toBe('ERROR: [056]: unable to find primary cluster - cannot proceed\nHINT: are all available clusters in recovery?\nERROR: [099]: key/value found at line 1: …');
  });
});

const segment = 16 * 1024 * 1024;
const reading = (over: Partial<ArchiverReading> = {}): ArchiverReading => ({
  archivedCount: 4,
  lastArchivedWal: '000000010000000000000004',
  lastArchivedAtMs: 100_000,
  failedCount: 0,
  lastFailedWal: null,
  lastFailedAtMs: null,
  currentLsn: 5 * segment + 4096,
  readySegments: 0,
  segmentBytes: segment,
  ...over,
});

describe('archiving status', () => {
  it('counts the segment being written and those waiting as lag', () => {
    const status = archiveStatus(reading({ readySegments: 2 }), 130_000);
    expect(status).toMatchObject({ state: 'ok', lagBytes: 4096 + 2 * segment, lagSeconds: 30 });
    expect(archiveStatus(reading({ currentLsn: 6 * segment }), 130_000)).toMatchObject({ lagBytes: 0, lagSeconds: 0 });
  });

  it('fails while the last failure is newer than the last success', () => {
    expect(archiveStatus(reading({ failedCount: 3, lastFailedWal: '000000010000000000000005', lastFailedAtMs: 120_000 }), 130_000).state).toBe('failing');
    expect(archiveStatus(reading({ failedCount: 3, lastFailedAtMs: 90_000 }), 130_000).state).toBe('ok');
    expect(archiveStatus(reading({ failedCount: 1, lastFailedAtMs: 90_000, lastArchivedAtMs: null, archivedCount: 0 }), 130_000)).toMatchObject({ state: 'failing', lagSeconds: null });
  });

  it('makes an event when archiving starts failing and when it works again, not while it keeps failing', () => {
    const failing = archiveStatus(reading({ failedCount: 2, lastFailedWal: '000000010000000000000005', lastFailedAtMs: 120_000 }), 130_000);
    const ok = archiveStatus(reading({ failedCount: 2, lastFailedAtMs: 120_000, lastArchivedAtMs: 125_000 }), 130_000);
    expect(archiveTransition('node1', false, failing, 'repo1: Permission denied')).toEqual({
      kind: 'archive-failed',
      message: 'node1 cannot archive WAL 000000010000000000000005 (failed 2 time(s) so far): repo1: Permission denied',
    });
    expect(archiveTransition('node1', true, failing, null)).toBeNull();
    expect(archiveTransition('node1', true, ok, null)?.kind).toBe('archive-recovered');
    expect(archiveTransition('node1', false, ok, null)).toBeNull();
  });

  it('sums it up for keel status', () => {
    expect(archiveSummary(undefined)).toBe('');
    expect(archiveSummary(archiveStatus(reading({ currentLsn: 6 * segment }), 130_000))).toBe('ok');
    expect(archiveSummary(archiveStatus(reading({ failedCount: 3, lastFailedAtMs: 120_000 }), 130_000))).toBe('FAILING x3, 4 KiB waiting');
  });
});

describe('where a backup is taken from', () => {
  it('takes the streaming replica with the most replayed, not one being drained', () => {
    const view = cluster({
      leader: leaderKey('node1'),
      members: [primaryMember('node1'), member('node2', { replayedLsn: 900 }), member('node3', { replayedLsn: 990 }), member('node4', { replayedLsn: 999 })],
      draining: [{ v: 1, name: 'node4', sinceMs: 0, reason: 'scale-in' }],
    });
    expect(backupMembers(view)).toMatchObject({ leader: { name: 'node1' }, standby: { name: 'node3' } });
  });

  it('falls back to the leader when no replica streams from it on its timeline', () => {
    const view = cluster({ leader: leaderKey('node1'), members: [primaryMember('node1', { timeline: 2 }), member('node2', { timeline: 1 }), member('node3', { streaming: false })] });
    expect(backupMembers(view)).toMatchObject({ leader: { name: 'node1' }, standby: null });
  });

  it('needs a leader running as primary', () => {
    expect(backupMembers(cluster({ leader: leaderKey('node1'), members: [member('node1'), member('node2')] }))).toBeNull();
  });
});

describe('an info answer quoting an undecryptable file', () => {
  it('still parses, the raw bytes made harmless', () => {
    const text = '[{"archive":[],"backup":[],"cipher":"none","db":[],"name":"keel","repo":[],"status":{"code":99,"lock":{"backup":{"held":false}},"message":"[FormatError] at line 1: Salted__\u0001\u001b\u007f"}}]\n';
    expect(parseInfo(text)[0]).toMatchObject({ name: 'keel', statusCode: 99, statusMessage: expect.stringContaining('Salted__???') });
  });
});
