/**
 * What `pgbackrest info --output=json` says about one stanza, parsed, and the
 * progress lines of a running backup. Pure: strings in, values out.
 */
import { z } from 'zod';
import { parseLsn } from '../model/lsn.js';

export type BackupType = 'full' | 'diff' | 'incr';

export interface BackupSet {
  label: string;
  type: BackupType;
  startMs: number;
  stopMs: number;
  /** the database's size when the backup ran */
  sizeBytes: number;
  /** bytes of the database this backup copied (the others come from the backups it references) */
  deltaBytes: number;
  /** what it takes in the repository, compressed */
  repoBytes: number;
  /** the WAL a restore of it needs at least, first and last segment */
  walStart: string;
  walStop: string;
  lsnStart: number;
  lsnStop: number;
  /** labels of the earlier backups it needs */
  references: string[];
  /** pgBackRest found checksum errors in some page: restorable, but look at its log */
  error: boolean;
}

export interface StanzaInfo {
  name: string;
  /** 0 ok; 1 missing stanza path; 2 no valid backups; 3 missing stanza data; 4 different cipher; 99 other */
  statusCode: number;
  statusMessage: string;
  /** a backup or expire runs now on this host */
  backupRunning: boolean;
  systemId: string | null;
  /** oldest first */
  backups: BackupSet[];
  /** WAL the archive holds for the current database */
  archiveMin: string | null;
  archiveMax: string | null;
}

const backupSchema = z.object({
  label: z.string(),
  type: z.enum(['full', 'diff', 'incr']),
  timestamp: z.object({ start: z.number(), stop: z.number() }),
  info: z.object({ size: z.number(), delta: z.number(), repository: z.object({ size: z.number().optional(), delta: z.number().optional() }) }),
  archive: z.object({ start: z.string().nullable(), stop: z.string().nullable() }),
  lsn: z.object({ start: z.string(), stop: z.string() }).optional(),
  reference: z.array(z.string()).nullable().optional(),
  error: z.boolean().optional(),
});

const stanzaSchema = z.object({
  name: z.string(),
  status: z.object({ code: z.number(), message: z.string(), lock: z.object({ backup: z.object({ held: z.boolean() }) }).optional() }),
  repo: z.array(z.object({ status: z.object({ code: z.number(), message: z.string() }) })).default([]),
  db: z.array(z.object({ id: z.number(), 'system-id': z.string() })).default([]),
  backup: z.array(backupSchema).default([]),
  archive: z.array(z.object({ database: z.object({ id: z.number() }), min: z.string().nullable(), max: z.string().nullable() })).default([]),
});

/**
 * system-id is a 64-bit number: JSON.parse would round it, so it is made a string first. An info file
 * the key cannot decrypt is quoted raw in a message: its control characters would break JSON.parse.
 */
function quoteSystemIds(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/g, '?').replace(/"system-id":(\d+)/g, '"system-id":"$1"');
}

/** The stanzas of an info answer; throws a plain Error for text that is not one. */
export function parseInfo(text: string): StanzaInfo[] {
  const raw = z.array(stanzaSchema).parse(JSON.parse(quoteSystemIds(text)));
  return raw.map((stanza) => {
    const currentDb = stanza.db[stanza.db.length - 1] ?? null;
    const archive = stanza.archive.find((a) => a.database.id === currentDb?.id) ?? null;
    return {
      name: stanza.name,
      statusCode: stanza.status.code,
      // `other` says nothing: the repository's own status says what went wrong
      statusMessage: stanza.status.message === 'other' ? (stanza.repo[0]?.status.message ?? 'other') : stanza.status.message,
      backupRunning: stanza.status.lock?.backup.held ?? false,
      systemId: currentDb?.['system-id'] ?? null,
      backups: stanza.backup.map((b) => ({
        label: b.label,
        type: b.type,
        startMs: b.timestamp.start * 1000,
        stopMs: b.timestamp.stop * 1000,
        sizeBytes: b.info.size,
        deltaBytes: b.info.delta,
        repoBytes: b.info.repository.delta ?? b.info.repository.size ?? 0,
        walStart: b.archive.start ?? '',
        walStop: b.archive.stop ?? '',
        lsnStart: b.lsn ? parseLsn(b.lsn.start) : 0,
        lsnStop: b.lsn ? parseLsn(b.lsn.stop) : 0,
        references: b.reference ?? [],
        error: b.error ?? false,
      })),
      archiveMin: archive?.min ?? null,
      archiveMax: archive?.max ?? null,
    };
  });
}

/** The last percentage a backup printed (`backup file ... (12MB, 45.67%)`), or null when the text has none. */
export function lastProgressPercent(text: string): number | null {
  const matches = [...text.matchAll(/\(\d+(?:\.\d+)?[KMGT]?B, (\d+(?:\.\d+)?)%\)/g)];
  const last = matches[matches.length - 1];
  return last === undefined ? null : Number(last[1]);
}

/** pgBackRest's error lines (`ERROR: [056]: ...` and their HINTs), for a message a person can act on. */
export function pgbackrestErrors(output: string): string {
  const lines = output.split('\n');
  const wanted: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (!/\b(ERROR|WARN): \[\d+\]/.test(line) && !/^\s+HINT:/.test(line)) continue;
    // binary noise from an undecryptable file says nothing to a person
    wanted.push(line.replace(/^.*?\b(ERROR|WARN):/, '$1:').replace(/[^\x20-\x7e].*$/, '…').trim());
  }
  return wanted.slice(0, 6).join('\n');
}

/** Bytes in the units pgBackRest and people use. */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}
