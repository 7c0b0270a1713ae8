/**
 * Timeline history files (pg_wal/<TLI>.history), written for timelines that
 * another node started: one line per switch, "<parent TLI>\t<switch LSN>\t<reason>".
 */
import { join } from 'node:path';
import { readSmallFile } from './datadir.js';
import { formatLsn, parseLsn } from '../model/lsn.js';

export function historyFileName(timeline: number): string {
  return `${timeline.toString(16).toUpperCase().padStart(8, '0')}.history`;
}

/**
 * The history of `timeline` as far as the cluster's record (the `history` key) knows it: the switches
 * into each timeline up to it, oldest first. A switch the record lacks is left out; PostgreSQL needs the
 * file to exist (to number a later timeline past it) more than it needs every line.
 */
export function historyFileText(timeline: number, known: readonly { timeline: number; switchLsn: number }[]): string {
  const lines = [...known]
    .filter((entry) => entry.timeline > 1 && entry.timeline <= timeline)
    .sort((a, b) => a.timeline - b.timeline)
    .map((entry) => `${entry.timeline - 1}\t${formatLsn(entry.switchLsn)}\tstarted on another node (Keel's history key)`);
  return `${lines.join('\n')}\n`;
}

/** The parent timeline and the switch point: the last line of a timeline's history file. */
export function parentOf(historyText: string): { timeline: number; switchLsn: number } | null {
  const last = historyText.split('\n').map((l) => l.trim()).filter((l) => /^\d+\s/.test(l)).pop();
  if (last === undefined) return null;
  const [timeline, lsn] = last.split(/\s+/);
  try {
    return { timeline: Number(timeline), switchLsn: parseLsn(lsn!) };
  } catch {
    return null;
  }
}

/**
 * Where PostgreSQL switched into `timeline`, from the history file its
 * promotion wrote: the end of the WAL it had replayed, exact where a reading
 * taken before the promotion may be short of it. Null without a file.
 */
export async function readSwitchPoint(dataDir: string, timeline: number): Promise<number | null> {
  const text = readSmallFile(join(dataDir, 'pg_wal', historyFileName(timeline)));
  return text === null ? null : (parentOf(text)?.switchLsn ?? null);
}
