/**
 * The key-value port in memory, for unit tests, with etcd's semantics: one
 * revision counter bumped once per write transaction, keys bound to leases,
 * a missing key's mod revision compared as 0. Time comes from the injected
 * Clock; every call first reaps the leases whose time has passed, as etcd's
 * reaper would have by then, and expireLeases() does it on demand.
 */
import { KeelError } from '../errors.js';
import type { Clock } from '../util/clock.js';
import type { KvChange, KvCompare, KvEntry, KvRange, KvStore, KvWatchHandlers, KvWrite } from './kv.js';

interface Stored {
  value: string;
  modRevision: number;
  lease: string;
}

interface Watch {
  prefix: string;
  handlers: KvWatchHandlers;
}

export class MemoryKv implements KvStore {
  readonly where = 'memory';
  private readonly data = new Map<string, Stored>();
  private readonly leases = new Map<string, { ttlMs: number; deadlineMs: number }>();
  private readonly watches = new Set<Watch>();
  private revision = 1;
  private nextLeaseId = 7000;
  private unreachable = false;

  constructor(private readonly clock: Clock) {}

  /** While true, every call fails as if the store were down. */
  setUnreachable(down: boolean): void {
    this.unreachable = down;
  }

  currentRevision(): string {
    return String(this.revision);
  }

  /** Revokes every lease whose deadline has passed (etcd's reaper). Returns how many expired. */
  expireLeases(): number {
    const now = this.clock.now();
    let expired = 0;
    for (const [id, lease] of this.leases) {
      if (lease.deadlineMs > now) continue;
      this.dropLease(id);
      expired += 1;
    }
    return expired;
  }

  /** Writes at once, bypassing the reachability switch (tests plant values with it). */
  plant(key: string, value: string, lease?: string): void {
    this.apply([{ put: key, value, lease }]);
  }

  private reachable(): void {
    if (this.unreachable) throw new KeelError('KEEL_ETCD_UNREACHABLE', 'the in-memory store is set unreachable');
    this.expireLeases();
  }

  private dropLease(id: string): void {
    this.leases.delete(id);
    const bound = [...this.data].filter(([, entry]) => entry.lease === id).map(([key]) => ({ delete: key }));
    this.apply(bound);
  }

  private keysOf(range: KvRange): string[] {
    if (range.end === undefined) return this.data.has(range.key) ? [range.key] : [];
    const end = range.end;
    return [...this.data.keys()].filter((key) => key >= range.key && (end === '\0' || key < end)).sort();
  }

  /** Applies writes as one transaction: one new revision when anything changed. */
  private apply(writes: KvWrite[]): void {
    for (const w of writes) {
      if ('put' in w && w.lease !== undefined && w.lease !== '0' && !this.leases.has(w.lease)) {
        throw new KeelError('KEEL_CONFLICT', `lease ${w.lease} no longer exists (expired or revoked)`, { hint: 'grant a new lease and write the key again' });
      }
    }
    const changes: KvChange[] = [];
    const next = this.revision + 1;
    for (const w of writes) {
      if ('put' in w) {
        this.data.set(w.put, { value: w.value, modRevision: next, lease: w.lease ?? '0' });
        changes.push({ key: w.put, value: w.value, modRevision: String(next), lease: w.lease ?? '0' });
        continue;
      }
      for (const key of this.keysOf({ key: w.delete, end: w.end })) {
        this.data.delete(key);
        changes.push({ key, value: null, modRevision: String(next) });
      }
    }
    if (changes.length === 0) return;
    this.revision = next;
    for (const watch of this.watches) {
      for (const change of changes) if (change.key.startsWith(watch.prefix)) queueMicrotask(() => watch.handlers.onChange(change));
    }
  }

  private holds(compare: KvCompare): boolean {
    const entry = this.data.get(compare.key);
    if ('absent' in compare) return entry === undefined;
    if ('modRevision' in compare) return String(entry?.modRevision ?? 0) === compare.modRevision;
    if ('value' in compare) return entry?.value === compare.value;
    return entry !== undefined && entry.lease === compare.lease;
  }

  async read(_what: string, ranges: KvRange[]): Promise<{ revision: string; entries: KvEntry[][] }> {
    this.reachable();
    const entries = ranges.map((range) => {
      let keys = this.keysOf(range);
      if (range.descending) keys = keys.reverse();
      if (range.limit !== undefined && range.limit > 0) keys = keys.slice(0, range.limit);
      return keys.map((key) => {
        const e = this.data.get(key)!;
        return { key, value: e.value, modRevision: String(e.modRevision), lease: e.lease };
      });
    });
    return { revision: String(this.revision), entries };
  }

  async txn(_what: string, compares: KvCompare[], writes: KvWrite[]): Promise<boolean> {
    this.reachable();
    if (!compares.every((c) => this.holds(c))) return false;
    this.apply(writes);
    return true;
  }

  async grant(ttlSeconds: number): Promise<string> {
    this.reachable();
    const id = String(this.nextLeaseId++);
    this.leases.set(id, { ttlMs: ttlSeconds * 1000, deadlineMs: this.clock.now() + ttlSeconds * 1000 });
    return id;
  }

  async keepAlive(leaseId: string): Promise<boolean> {
    this.reachable();
    const lease = this.leases.get(leaseId);
    if (lease === undefined) return false;
    lease.deadlineMs = this.clock.now() + lease.ttlMs;
    return true;
  }

  async revoke(leaseId: string): Promise<void> {
    this.reachable();
    this.dropLease(leaseId);
  }

  async watch(_what: string, prefix: string, handlers: KvWatchHandlers): Promise<() => Promise<void>> {
    this.reachable();
    const watch: Watch = { prefix, handlers };
    this.watches.add(watch);
    return async () => {
      this.watches.delete(watch);
    };
  }

  async close(): Promise<void> {
    this.watches.clear();
  }
}
