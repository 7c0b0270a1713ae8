/**
 * Timeline history files (pg_wal/<TLI>.history), written for timelines that
 * another node started: one line per switch, "<parent TLI>\t<switch LSN>\t<reason>".
 */
import { formatLsn } from '../model/lsn.js';

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
