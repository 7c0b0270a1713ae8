import { closeSync, openSync, readSync, statSync } from 'node:fs';
import { endianness } from 'node:os';
import { KeelError } from '../errors.js';
import { parseLsn } from '../model/lsn.js';
import type { ControlData } from './types.js';

/**
 * Parses pg_controldata's output. The labels are only stable in the C locale,
 * which is why local.ts runs the program with LC_ALL=C.
 */
export function parseControlData(text: string): Omit<ControlData, 'backupLabel'> {
  const fields = new Map<string, string>();
  for (const line of text.split('\n')) {
    // Labels contain spaces and apostrophes but never a colon, so the first colon splits.
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    fields.set(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
  }

  const field = (label: string): string => {
    const value = fields.get(label);
    if (value === undefined || value === '') {
      throw new KeelError('KEEL_POSTGRES_FAILED', `pg_controldata output has no "${label}" line`);
    }
    return value;
  };
  const lsnField = (label: string): number => {
    try {
      return parseLsn(field(label));
    } catch (err) {
      if (err instanceof KeelError) throw err;
      throw new KeelError('KEEL_POSTGRES_FAILED', `pg_controldata "${label}" is not a WAL position`);
    }
  };

  const systemId = field('Database system identifier');
  if (!/^\d+$/.test(systemId)) {
    throw new KeelError('KEEL_POSTGRES_FAILED', `pg_controldata system identifier is not a number: ${systemId}`);
  }
  const timeline = Number(field("Latest checkpoint's TimeLineID"));
  if (!Number.isInteger(timeline) || timeline < 1) {
    throw new KeelError('KEEL_POSTGRES_FAILED', `pg_controldata timeline is not a positive integer`);
  }
  return {
    // A 64-bit integer: kept as a string because a number would round it.
    systemId,
    clusterState: field('Database cluster state'),
    timeline,
    checkpointLsn: lsnField('Latest checkpoint location'),
    minRecoveryLsn: lsnField('Minimum recovery ending location'),
    dataChecksums: field('Data page checksum version') !== '0',
  };
}

/** How long pg_control must have been left alone before a reading of it is reused. */
const settledMs = 100;

/**
 * pg_controldata, run again only when pg_control changed: the agent reads it
 * on every loop, and a process per read cost CPU and time on the path of
 * every reaction. The file's inode, size and modification time say whether it
 * changed; but two writes within the file system's timestamp granularity (a
 * few ms) can leave the same time, so a reading is reused only when the file
 * had been left alone for a while before it was read.
 */
export class ControlDataCache {
  private cached: { key: string; data: Omit<ControlData, 'backupLabel'> } | null = null;

  constructor(
    private readonly path: string,
    /** pg_controldata's output */
    private readonly run: () => Promise<string>,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * The cluster state alone, read from the file's fixed head without starting
   * pg_controldata: a shutdown is polled every few ms, and a process per poll
   * costs CPU that the shutdown needs. A file of another layout is read by
   * pg_controldata. Unchecked (pg_controldata verifies the file's CRC): what
   * depends on the state read it again through read().
   */
  async state(): Promise<string | null> {
    const head = readHead(this.path);
    if (head === null) return null;
    const name = head.version === controlVersion ? clusterStates[head.state] : undefined;
    return name ?? (await this.read())?.clusterState ?? null;
  }

  /**
   * The parsed control file; null when there is none. Read from the file
   * itself when it has the layout of PostgreSQL 13 to 16 and its checksum
   * holds (no process started: 30-50 ms, and the CPU a switchover's
   * shutdown and promotion need); otherwise by pg_controldata.
   */
  async read(): Promise<Omit<ControlData, 'backupLabel'> | null> {
    let key: string;
    let mtimeMs: number;
    try {
      // read synchronously, as datadir.ts says why
      const st = statSync(this.path, { bigint: true });
      key = `${st.ino}:${st.size}:${st.mtimeNs}`;
      mtimeMs = Number(st.mtimeNs / 1_000_000n);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
    if (this.cached?.key === key) return this.cached.data;
    const data = parseControlFile(readPrefix(this.path, controlFileBytes)) ?? parseControlData(await this.run());
    this.cached = this.now() - mtimeMs >= settledMs ? { key, data } : null;
    return data;
  }
}

/**
 * pg_control starts with the system identifier (8 bytes), the layout's
 * version and the catalog version (4 each), then the state (an enum: 4
 * bytes), in the machine's byte order. Layout 1300 is PostgreSQL 13 to 16;
 * the names are pg_controldata's.
 */
const controlVersion = 1300;
const clusterStates: readonly string[] = [
  'starting up',
  'shut down',
  'shut down in recovery',
  'shutting down',
  'in crash recovery',
  'in archive recovery',
  'in production',
];

/**
 * Where ControlFileData (layout 1300) keeps what Keel reads: the latest
 * checkpoint's location, then its copy of the checkpoint, whose third field
 * is its timeline; the minimum recovery point; the data checksum version;
 * and the CRC-32C of every byte before it. Offsets as the C compiler lays the
 * struct out on a 64-bit machine.
 */
const layout = { checkpointLsn: 32, timeline: 48, minRecoveryLsn: 136, dataChecksumVersion: 252, crc: 288 } as const;
const controlFileBytes = layout.crc + 4;

/**
 * The fields of ControlData from pg_control's bytes, or null when they are not
 * the layout this code knows or their checksum fails (a file of another
 * version or a torn read): pg_controldata answers then.
 */
export function parseControlFile(bytes: Buffer): Omit<ControlData, 'backupLabel'> | null {
  if (bytes.length < controlFileBytes) return null;
  const little = endianness() === 'LE';
  const u32 = (at: number) => (little ? bytes.readUInt32LE(at) : bytes.readUInt32BE(at));
  const u64 = (at: number) => (little ? bytes.readBigUInt64LE(at) : bytes.readBigUInt64BE(at));
  if (u32(8) !== controlVersion || crc32c(bytes.subarray(0, layout.crc)) !== u32(layout.crc)) return null;
  const state = clusterStates[little ? bytes.readInt32LE(16) : bytes.readInt32BE(16)];
  const timeline = u32(layout.timeline);
  if (state === undefined || timeline < 1) return null;
  return {
    systemId: u64(0).toString(),
    clusterState: state,
    timeline,
    checkpointLsn: Number(u64(layout.checkpointLsn)),
    minRecoveryLsn: Number(u64(layout.minRecoveryLsn)),
    dataChecksums: u32(layout.dataChecksumVersion) !== 0,
  };
}

/** CRC-32C (Castagnoli, reflected), as PostgreSQL checksums its control file. */
export function crc32c(bytes: Uint8Array): number {
  let crc = 0xffffffff;
  for (const byte of bytes) crc = (crc >>> 8) ^ crcTable[(crc ^ byte) & 0xff]!;
  return (crc ^ 0xffffffff) >>> 0;
}

const crcTable = Uint32Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
  return c >>> 0;
});

/** The first `length` bytes of a file (fewer when it is shorter). */
function readPrefix(path: string, length: number): Buffer {
  const fd = openSync(path, 'r');
  try {
    const bytes = Buffer.alloc(length);
    const bytesRead = readSync(fd, bytes, 0, length, 0);
    return bytes.subarray(0, bytesRead);
  } finally {
    closeSync(fd);
  }
}

function readHead(path: string): { version: number; state: number } | null {
  let head: Buffer;
  try {
    head = readPrefix(path, 20);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  if (head.length < 20) return { version: -1, state: -1 };
  const little = endianness() === 'LE';
  return {
    version: little ? head.readUInt32LE(8) : head.readUInt32BE(8),
    state: little ? head.readInt32LE(16) : head.readInt32BE(16),
  };
}
