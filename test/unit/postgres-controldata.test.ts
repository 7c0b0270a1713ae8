import { mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { isKeelError } from '../../src/errors.js';
import { ControlDataCache, crc32c, parseControlData, parseControlFile } from '../../src/postgres/controldata.js';
import { formatLsn, parseLsn, parseLsnOrNull } from '../../src/model/lsn.js';

/** pg_controldata (PostgreSQL 15, LC_ALL=C) of a standby after pg_rewind, while it streams on timeline 2. */
const standbyOutput = `pg_control version number:            1300
Catalog version number:               202209061
Database system identifier:           7712473621022930827
Database cluster state:               in archive recovery
pg_control last modified:             Thu Nov 26 13:36:47 2026
Latest checkpoint location:           0/4028BB0
Latest checkpoint's REDO location:    0/4028B78
Latest checkpoint's REDO WAL file:    000000020000000000000004
Latest checkpoint's TimeLineID:       2
Latest checkpoint's PrevTimeLineID:   2
Latest checkpoint's full_page_writes: on
Latest checkpoint's NextXID:          0:733
Latest checkpoint's NextOID:          24576
Latest checkpoint's NextMultiXactId:  1
Latest checkpoint's NextMultiOffset:  0
Latest checkpoint's oldestXID:        717
Latest checkpoint's oldestXID's DB:   1
Latest checkpoint's oldestActiveXID:  733
Latest checkpoint's oldestMultiXid:   1
Latest checkpoint's oldestMulti's DB: 1
Latest checkpoint's oldestCommitTsXid:0
Latest checkpoint's newestCommitTsXid:0
Time of latest checkpoint:            Thu Nov 26 13:36:44 2026
Fake LSN counter for unlogged rels:   0/3E8
Minimum recovery ending location:     0/4028DD0
Min recovery ending loc's timeline:   2
Backup start location:                0/0
Backup end location:                  0/0
End-of-backup record required:        no
wal_level setting:                    replica
wal_log_hints setting:                on
max_connections setting:              100
max_worker_processes setting:         8
max_wal_senders setting:              10
max_prepared_xacts setting:           0
max_locks_per_xact setting:           64
track_commit_timestamp setting:       off
Maximum data alignment:               8
Database block size:                  8192
Blocks per segment of large relation: 131072
WAL block size:                       8192
Bytes per WAL segment:                16777216
Maximum length of identifiers:        64
Maximum columns in an index:          32
Maximum size of a TOAST chunk:        1996
Size of a large-object chunk:         2048
Date/time type storage:               64-bit integers
Float8 argument passing:              by value
Data page checksum version:           1
Mock authentication nonce:            b72c490684863370f17812d508206d3bf61f5d59f6d369966dc32139755ac890
`;

/** The same program on a freshly initdb'ed cluster that was never started. */
const freshOutput = standbyOutput
  .replace('Database system identifier:           7712473621022930827', 'Database system identifier:           7712471825953616793')
  .replace('in archive recovery', 'shut down')
  .replace(/Latest checkpoint location: +0\/4028BB0/, 'Latest checkpoint location:           0/1752D40')
  .replace(/Latest checkpoint's TimeLineID: +2/, "Latest checkpoint's TimeLineID:       1")
  .replace(/Minimum recovery ending location: +0\/4028DD0/, 'Minimum recovery ending location:     0/0');

describe('parseLsn / formatLsn', () => {
  it.each([
    ['0/0', 0],
    ['0/1752D40', 0x1752d40],
    ['1/0', 2 ** 32],
    ['16/B374D848', 0x16 * 2 ** 32 + 0xb374d848],
    ['FFFFF/FFFFFFFF', 0xfffff * 2 ** 32 + 0xffffffff],
  ])('%s is %d bytes', (text, bytes) => {
    expect(parseLsn(text)).toBe(bytes);
    expect(formatLsn(bytes)).toBe(text);
  });

  it('accepts lower case and surrounding space', () => {
    expect(parseLsn(' 0/4028bb0\n')).toBe(0x4028bb0);
  });

  it.each(['', '0', '0/', '/1', '0/123456789', 'x/1', '0/1/2'])('rejects %j', (text) => {
    expect(() => parseLsn(text)).toThrow(/not a WAL position/);
  });

  it('keeps SQL NULL as null', () => {
    expect(parseLsnOrNull(null)).toBeNull();
    expect(parseLsnOrNull('0/10')).toBe(16);
  });

  it('refuses to format negative or fractional positions', () => {
    expect(() => formatLsn(-1)).toThrow();
    expect(() => formatLsn(1.5)).toThrow();
  });
});

describe('parseControlData', () => {
  it('reads a streaming standby', () => {
    expect(parseControlData(standbyOutput)).toEqual({
      systemId: '7712473621022930827',
      clusterState: 'in archive recovery',
      timeline: 2,
      checkpointLsn: 0x4028bb0,
      minRecoveryLsn: 0x4028dd0,
      dataChecksums: true,
    });
  });

  it('reads a cluster initdb left shut down', () => {
    expect(parseControlData(freshOutput)).toEqual({
      systemId: '7712471825953616793',
      clusterState: 'shut down',
      timeline: 1,
      checkpointLsn: 0x1752d40,
      minRecoveryLsn: 0,
      dataChecksums: true,
    });
  });

  it.each(['in production', 'shut down in recovery', 'in crash recovery'])('keeps the state %j as written', (state) => {
    expect(parseControlData(standbyOutput.replace('in archive recovery', state)).clusterState).toBe(state);
  });

  it('keeps the 64-bit system identifier exact', () => {
    // 7712473621022930827 is above 2^53: as a number it would round.
    expect(parseControlData(standbyOutput).systemId).not.toBe(String(Number('7712473621022930827')));
  });

  it('sees checksums off', () => {
    const text = standbyOutput.replace(/Data page checksum version: +1/, 'Data page checksum version:           0');
    expect(parseControlData(text).dataChecksums).toBe(false);
  });

  it('tolerates the CRC warning pg_controldata prints for a file being written', () => {
    const text = `WARNING: Calculated CRC checksum does not match value stored in file.\nEither the file is corrupt, or it has a different layout than this program\nis expecting.  The results below are untrustworthy.\n\n${standbyOutput}`;
    expect(parseControlData(text).timeline).toBe(2);
  });

  it.each([
    ['a missing field', standbyOutput.replace(/^Database cluster state:.*$/m, '')],
    ['a bad timeline', standbyOutput.replace(/Latest checkpoint's TimeLineID: +2/, "Latest checkpoint's TimeLineID:       zero")],
    ['a bad position', standbyOutput.replace(/Latest checkpoint location: +0\/4028BB0/, 'Latest checkpoint location:           nowhere')],
    ['empty output', ''],
  ])('fails with KEEL_POSTGRES_FAILED on %s', (_label, text) => {
    let caught: unknown;
    try {
      parseControlData(text);
    } catch (err) {
      caught = err;
    }
    expect(isKeelError(caught) && caught.code).toBe('KEEL_POSTGRES_FAILED');
  });
});

/** A cache over a control file in a temporary directory, counting pg_controldata's runs (it prints a standby's output). */
function setup() {
  const dir = mkdtempSync(join(tmpdir(), 'keel-control-'));
  const path = join(dir, 'pg_control');
  let runs = 0;
  const cache = new ControlDataCache(path, async () => {
    runs += 1;
    return standbyOutput;
  });
  const touch = (secondsAgo: number) => {
    const at = new Date(Date.now() - secondsAgo * 1000);
    writeFileSync(path, 'x');
    utimesSync(path, at, at);
  };
  return { cache, path, touch, runs: () => runs, done: () => rmSync(dir, { recursive: true, force: true }) };
}

describe('ControlDataCache', () => {


  it('is null without a control file, and runs nothing', async () => {
    const t = setup();
    expect(await t.cache.read()).toBeNull();
    expect(t.runs()).toBe(0);
    t.done();
  });

  it('reuses a reading while the file stays as it was, and reads again once it changed', async () => {
    const t = setup();
    t.touch(5);
    expect((await t.cache.read())?.timeline).toBe(2);
    await t.cache.read();
    expect(t.runs()).toBe(1);
    t.touch(2);
    await t.cache.read();
    expect(t.runs()).toBe(2);
    t.done();
  });

  it('never reuses a reading of a file written a moment ago: a second write may keep its timestamp', async () => {
    const t = setup();
    t.touch(0);
    await t.cache.read();
    await t.cache.read();
    expect(t.runs()).toBe(2);
    t.done();
  });

  /** The head of a pg_control file: system identifier, layout and catalog versions, state (this machine's byte order). */
  function head(version: number, state: number): Buffer {
    const bytes = Buffer.alloc(8192);
    bytes.writeBigUInt64LE(7712473621022930827n, 0);
    bytes.writeUInt32LE(version, 8);
    bytes.writeUInt32LE(202209061, 12);
    bytes.writeInt32LE(state, 16);
    return bytes;
  }

  it('reads the state from the file itself, with no program run, for the layout of PostgreSQL 13 to 16', async () => {
    const t = setup();
    const { path } = t;
    expect(await t.cache.state()).toBeNull();
    for (const [state, name] of [[1, 'shut down'], [3, 'shutting down'], [5, 'in archive recovery'], [6, 'in production']] as const) {
      writeFileSync(path, head(1300, state));
      expect(await t.cache.state()).toBe(name);
    }
    expect(t.runs()).toBe(0);
    t.done();
  });

  it('asks pg_controldata when the layout or the state is one it does not know', async () => {
    const t = setup();
    const { path } = t;
    writeFileSync(path, head(1700, 1));
    expect(await t.cache.state()).toBe('in archive recovery');
    writeFileSync(path, head(1300, 42));
    expect(await t.cache.state()).toBe('in archive recovery');
    writeFileSync(path, 'short');
    expect(await t.cache.state()).toBe('in archive recovery');
    expect(t.runs()).toBe(3);
    t.done();
  });
});

describe('pg_control read from the file', () => {
  it('checksums with CRC-32C, as PostgreSQL does', () => {
    // the check value of CRC-32C (Castagnoli)
    expect(crc32c(Buffer.from('123456789'))).toBe(0xe3069283);
    expect(crc32c(Buffer.alloc(0))).toBe(0);
  });

  /** A control file of layout 1300 with the given fields, checksummed (this machine's byte order is little-endian here). */
  function controlFile(fields: { state: number; timeline: number; checkpoint: bigint; minRecovery: bigint; checksums: number }, version = 1300): Buffer {
    const bytes = Buffer.alloc(8192);
    bytes.writeBigUInt64LE(7712473621022930827n, 0);
    bytes.writeUInt32LE(version, 8);
    bytes.writeInt32LE(fields.state, 16);
    bytes.writeBigUInt64LE(fields.checkpoint, 32);
    bytes.writeUInt32LE(fields.timeline, 48);
    bytes.writeBigUInt64LE(fields.minRecovery, 136);
    bytes.writeUInt32LE(fields.checksums, 252);
    bytes.writeUInt32LE(crc32c(bytes.subarray(0, 288)), 288);
    return bytes;
  }

  it('gives the fields pg_controldata prints for a file of the layout of PostgreSQL 13 to 16', () => {
    const file = controlFile({ state: 1, timeline: 5, checkpoint: 0x9000028n, minRecovery: 0n, checksums: 1 });
    expect(parseControlFile(file)).toEqual({ systemId: '7712473621022930827', clusterState: 'shut down', timeline: 5, checkpointLsn: 0x9000028, minRecoveryLsn: 0, dataChecksums: true });
    expect(parseControlFile(controlFile({ state: 5, timeline: 2, checkpoint: 0x3000060n, minRecovery: 0x3000108n, checksums: 0 }))).toMatchObject({ clusterState: 'in archive recovery', minRecoveryLsn: 0x3000108, dataChecksums: false });
  });

  it('gives nothing (pg_controldata answers) for another layout, a failed checksum, a short read or an unknown state', () => {
    const fields = { state: 6, timeline: 1, checkpoint: 0x1000028n, minRecovery: 0n, checksums: 1 };
    expect(parseControlFile(controlFile(fields, 1700))).toBeNull();
    const torn = controlFile(fields);
    torn.writeUInt32LE(2, 48);
    expect(parseControlFile(torn)).toBeNull();
    expect(parseControlFile(controlFile(fields).subarray(0, 200))).toBeNull();
    expect(parseControlFile(controlFile({ ...fields, state: 42 }))).toBeNull();
  });

  it('runs pg_controldata only for a file it cannot read itself', async () => {
    const t = setup();
    writeFileSync(t.path, controlFile({ state: 6, timeline: 3, checkpoint: 0x5000028n, minRecovery: 0n, checksums: 1 }));
    expect(await t.cache.read()).toMatchObject({ clusterState: 'in production', timeline: 3 });
    expect(t.runs()).toBe(0);
    writeFileSync(t.path, controlFile({ state: 6, timeline: 3, checkpoint: 0x5000028n, minRecovery: 0n, checksums: 1 }, 1700));
    expect(await t.cache.read()).toMatchObject({ timeline: 2 });
    expect(t.runs()).toBe(1);
    t.done();
  });

});
