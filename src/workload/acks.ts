/**
 * The acknowledged-write checker: which changes a client was told were
 * committed, and which of them a server lacks. No I/O of its own: the server
 * is asked through the query function the caller passes in.
 */
import type { WriteRecord } from './records.js';

/** The kind of a record that says nothing else: it inserted a row. */
export const insertKind = 'insert';

/** The commit was answered and the statement changed a row (an UPDATE that matched none acknowledged nothing). */
export function acknowledged(record: WriteRecord): boolean {
  return record.ok && record.rowCount !== 0;
}

/** Ids acknowledged to a client but absent from `present`. */
export function missingIds(acked: readonly WriteRecord[], present: ReadonlySet<number>): number[] {
  return acked.filter((w) => acknowledged(w) && !present.has(w.id)).map((w) => w.id);
}

/** What a long-running workload keeps of its writes: the ids of acknowledged changes, by kind. */
export class AckLog {
  count = 0;
  private readonly byKind = new Map<string, number[]>();

  add(record: WriteRecord): void {
    if (!acknowledged(record)) return;
    const kind = record.kind ?? insertKind;
    const ids = this.byKind.get(kind) ?? [];
    ids.push(record.id);
    this.byKind.set(kind, ids);
    this.count += 1;
  }

  ids(kind: string = insertKind): readonly number[] {
    return this.byKind.get(kind) ?? [];
  }
}

/** Runs one statement on the server to check; rows carry an `id` column. */
export type IdQuery = (sql: string, params: unknown[]) => Promise<readonly { id: string | number }[]>;

/** The ids among $1 that have a row in `table`. */
export function presentRowsSql(table: string, column = 'id'): string {
  return `SELECT ${column} AS id FROM ${table} WHERE ${column} = ANY($1::bigint[])`;
}

/** ids per statement: one array parameter, well below any message size limit */
const chunk = 50_000;

/** The ids among `ids` that the server has, as `presentSql` (given the ids as $1::bigint[]) finds them. */
export async function presentIds(query: IdQuery, ids: readonly number[], presentSql: string): Promise<Set<number>> {
  const present = new Set<number>();
  for (let i = 0; i < ids.length; i += chunk) {
    for (const row of await query(presentSql, [ids.slice(i, i + chunk)])) present.add(Number(row.id));
  }
  return present;
}

/** The ids among `ids` that the server lacks, in their order. */
export async function lackedIds(query: IdQuery, ids: readonly number[], presentSql: string): Promise<number[]> {
  const present = await presentIds(query, ids, presentSql);
  return ids.filter((id) => !present.has(id));
}
