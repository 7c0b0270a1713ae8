/**
 * HAProxy's `show stat` answer as the router's endpoint counts. Pure: parses
 * the CSV HAProxy prints (a `# ` header naming the columns, one row per
 * frontend, backend and server) and names each server slot by the member the
 * engine put in it.
 */
import type { SlotTable } from './haproxy-runtime.js';
import type { EndpointStats } from './types.js';

export type StatRow = Record<string, string>;

export function parseStat(text: string): StatRow[] {
  const lines = text.split('\n').filter((line) => line.trim() !== '');
  const header = lines[0];
  if (header === undefined || !header.startsWith('# ')) throw new Error(`not a "show stat" answer: ${JSON.stringify(text.slice(0, 80))}`);
  const columns = header.slice(2).split(',');
  return lines.slice(1).map((line) => {
    const cells = line.split(',');
    return Object.fromEntries(columns.map((name, i) => [name, cells[i] ?? '']));
  });
}

const count = (row: StatRow | undefined, column: string): number => {
  const n = Number(row?.[column] ?? '');
  return Number.isFinite(n) ? n : 0;
};

/**
 * One endpoint from its frontend (`fe_rw`) and backend rows and the holder's
 * counts: connections by member from the server slots and from what the
 * holder forwarded, waiting = accepted but on no member yet (held, or still
 * sending their first message), refusals = connections the frontend denied
 * (the connection cap).
 */
export function endpointStats(rows: StatRow[], frontend: string, table: SlotTable, holder: EndpointStats): EndpointStats {
  const front = rows.find((r) => r.pxname === frontend && r.svname === 'FRONTEND');
  const connections: Record<string, number> = { ...holder.connections };
  let forwarded = Object.values(holder.connections).reduce((sum, n) => sum + n, 0);
  for (const row of rows) {
    if (row.pxname !== table.backend) continue;
    const member = table.slots.find((slot) => slot.server === row.svname)?.member;
    const current = count(row, 'scur');
    if (member === undefined || member === null || current === 0) continue;
    connections[member] = (connections[member] ?? 0) + current;
    forwarded += current;
  }
  return {
    connections,
    waiting: Math.max(0, count(front, 'scur') - forwarded),
    acceptedTotal: count(front, 'stot'),
    heldTotal: holder.heldTotal ?? 0,
    holdTimeoutsTotal: holder.holdTimeoutsTotal ?? 0,
    refusedTotal: count(front, 'dcon'),
    receivedBytesTotal: count(front, 'bin'),
    sentBytesTotal: count(front, 'bout'),
  };
}
