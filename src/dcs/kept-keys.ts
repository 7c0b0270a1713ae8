/**
 * The cluster's keys kept from reads and from the watch's changes between
 * them, for a watcher that acts on every change (the router): a change is a
 * view at once, not a read of the whole cluster. In a switchover's pause that
 * read was a round trip to etcd of 25-95 ms on the path of the hold and of
 * the route, and the CPU of etcd and of the router, for every change.
 *
 * Reads and changes meet by revision. A change newer than every read counts;
 * one the last read already covers is old news (it comes late, or twice). A
 * read at revision R takes each key it returns, unless the watch brought a
 * newer change of that key meanwhile (a put, or a delete kept as a tombstone
 * until a read at or past it); a kept key the read lacks goes, unless a change
 * newer than R put it. So neither a slow read nor a late change takes the view
 * back. Pure: the store (store.ts) feeds it.
 */
import type { KvChange } from './kv.js';
import type { RawKv } from './view.js';

export class KeptKeys {
  private readonly keys = new Map<string, RawKv>();
  /** deletes newer than the last read, until a read at or past them */
  private readonly gone = new Map<string, bigint>();
  /** the newest revision read or changed */
  private newest = 0n;
  /** the revision of the newest read; changes at or before it are in it */
  private readAt = -1n;

  /** false until a read came: changes alone are no view of the cluster */
  get loaded(): boolean {
    return this.readAt >= 0n;
  }

  get revision(): string {
    return String(this.newest);
  }

  /** True when the change was taken (not older than what is kept). */
  apply(change: KvChange): boolean {
    const at = BigInt(change.modRevision);
    if (at <= this.readAt) return false;
    const kept = this.keys.get(change.key);
    const known = kept !== undefined ? BigInt(kept.modRevision) : this.gone.get(change.key);
    if (known !== undefined && at < known) return false;
    if (change.value === null) {
      this.keys.delete(change.key);
      this.gone.set(change.key, at);
    } else {
      this.keys.set(change.key, { key: change.key, value: change.value, modRevision: change.modRevision, lease: change.lease ?? '0' });
      this.gone.delete(change.key);
    }
    if (at > this.newest) this.newest = at;
    return true;
  }

  /** Merges a read of every kept range at `revision`. */
  load(revision: string, entries: RawKv[]): void {
    const at = BigInt(revision);
    if (at < this.readAt) return;
    const read = new Map(entries.map((kv) => [kv.key, kv]));
    for (const [key, kv] of this.keys) {
      if (!read.has(key) && BigInt(kv.modRevision) <= at) this.keys.delete(key);
    }
    for (const [key, kv] of read) {
      const kept = this.keys.get(key);
      const goneAt = this.gone.get(key);
      if ((kept !== undefined && BigInt(kept.modRevision) > at) || (goneAt !== undefined && goneAt > at)) continue;
      this.keys.set(key, kv);
    }
    for (const [key, goneAt] of this.gone) if (goneAt <= at) this.gone.delete(key);
    this.readAt = at;
    if (at > this.newest) this.newest = at;
  }

  /** The kept keys in key order, as a read returns them. */
  entries(): RawKv[] {
    return [...this.keys.values()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }
}
