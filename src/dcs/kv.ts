/**
 * The key-value port Keel's cluster store is built on: ranges, transactions,
 * leases and watches, with etcd v3's semantics. Two implementations keep it:
 * kv-etcd.ts (the real one) and kv-memory.ts (unit tests); one contract suite
 * (test/support/kv-contract.ts) runs against both. Everything Keel knows about
 * its keys and values lives above this port, in store.ts, once.
 *
 * Errors: KEEL_ETCD_UNREACHABLE when the store did not answer in time (the
 * outcome of a write is then unknown: read again before acting on it);
 * KEEL_CONFLICT when a write names a lease the store no longer knows.
 */

/** One stored key, as a read returns it. Revisions are decimal strings (etcd's are 64-bit). */
export interface KvEntry {
  key: string;
  value: string;
  modRevision: string;
  /** '0' when the key has no lease */
  lease: string;
}

/** One condition of a transaction; all must hold for its writes to apply. */
export type KvCompare =
  /** the key does not exist */
  | { key: string; absent: true }
  /** the key was last written at this revision ('0': it does not exist) */
  | { key: string; modRevision: string }
  /** the key exists with exactly this value */
  | { key: string; value: string }
  /** the key exists and is bound to this lease */
  | { key: string; lease: string };

export type KvWrite =
  | { put: string; value: string; lease?: string }
  /** deletes `delete`, or the range [delete, end) when end is given */
  | { delete: string; end?: string };

/** Keys in [key, end), or the single key when end is absent. */
export interface KvRange {
  key: string;
  end?: string;
  /** at most this many keys, in key order (last ones first when descending) */
  limit?: number;
  descending?: boolean;
}

/** What a watch reports: a key written (value) or deleted (null). */
export interface KvChange {
  key: string;
  value: string | null;
  modRevision: string;
  /** a put's lease ('0' when none); absent on a delete */
  lease?: string;
}

export interface KvWatchHandlers {
  onChange: (change: KvChange) => void;
  /** changes may have been missed (the watch reconnected or restarted): read again */
  onResync: () => void;
}

export interface KvStore {
  /** where the store is, for error messages (no credentials) */
  readonly where: string;
  /** Reads every range at ONE revision. Idempotent: may be retried on another member. */
  read(what: string, ranges: KvRange[]): Promise<{ revision: string; entries: KvEntry[][] }>;
  /** Applies every write if every compare holds, all in one revision; true when they held. */
  txn(what: string, compares: KvCompare[], writes: KvWrite[]): Promise<boolean>;
  /** A new lease; its id. */
  grant(ttlSeconds: number): Promise<string>;
  /** One keep-alive: false when the store no longer knows the lease. */
  keepAlive(leaseId: string): Promise<boolean>;
  /** Ends a lease and deletes every key bound to it, in one step. Unknown is fine. */
  revoke(leaseId: string): Promise<void>;
  /** Reports changes under `prefix` from now on. Resolves once the watch is live; returns its stop function. */
  watch(what: string, prefix: string, handlers: KvWatchHandlers): Promise<() => Promise<void>>;
  close(): Promise<void>;
}

