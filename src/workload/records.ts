/**
 * What a workload and an observer write down, for the checks that come after:
 * one record per statement a writer sent, one sample per leader change seen.
 * Plain values, no I/O.
 */

/** Through a router's rw endpoint, or straight to one node's PostgreSQL. */
export type ClientKind = 'router' | 'direct';

/** One connection kept across transactions, or a new connection per transaction. */
export type WriteMode = 'persistent' | 'per-transaction';

export interface WriteRecord {
  /** the row's id: chosen by the writer, or returned by the statement (NaN when a failed statement never said) */
  id: number;
  /** what the statement did, when a writer does more than insert rows (e.g. 'expire') */
  kind?: string;
  writer: number;
  mode: WriteMode;
  via: ClientKind;
  /** the node a direct writer connects to */
  node?: string;
  sentMs: number;
  doneMs: number;
  /** the client got the commit's answer: an acknowledged write */
  ok: boolean;
  /** rows the statement changed; an UPDATE that matched none acknowledged no change */
  rowCount?: number;
  /** facts the statement returned from inside its transaction (serverFactsSql) */
  server?: string;
  serverPort?: number;
  stmtMs?: number;
  timeline?: number;
  lsn?: string;
  error?: string;
  /** a notice that came with the answer, e.g. a cancelled synchronous-replication wait */
  notice?: string;
  /** refused by a server in recovery (a direct writer on a replica); the connection stays usable */
  readOnly?: boolean;
}

export interface LeaderSample {
  /** etcd revision the sample describes */
  rev: number;
  leader: string | null;
  /** when it reached us: the revision existed by then */
  atMs: number;
  source: 'watch' | 'poll';
}
