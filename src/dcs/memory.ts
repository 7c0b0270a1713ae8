/**
 * An in-memory Dcs for unit tests, with etcd's semantics: one revision counter
 * bumped once per write transaction, keys bound to leases, compare-and-swap on
 * modRevision, values stored as the same JSON text etcd would hold (so bad
 * values can be planted with putRaw). Time comes from the injected Clock; the
 * test calls expireLeases() to play etcd's lease reaper, and every call also
 * reaps first, as etcd would have by then.
 */
import type { DynamicConfig } from '../config/schema.js';
import { KeelError } from '../errors.js';
import type { Clock } from '../util/clock.js';
import { silentLogger, type Logger } from '../util/log.js';
import {
  decodeController,
  decodeEvent,
  decodeHistory,
  decodeSpec,
  encode,
  encodeConfig,
  encodeLeader,
  encodeSpec,
  eventKeyName,
  keys,
  maxEvents,
  sameHistoryEntry,
  type ClusterKeys,
} from './codec.js';
import type {
  ClusterView,
  ControllerValue,
  CreationValue,
  DrainingValue,
  Dcs,
  EventValue,
  HistoryEntry,
  InitializeValue,
  LeaseMove,
  MemberValue,
  SpecValue,
  StatusValue,
  SwitchoverValue,
  SyncValue,
  Versioned,
} from './types.js';
import { buildClusterView, InvalidValueReporter } from './view.js';

interface Entry {
  value: string;
  modRevision: number;
  /** '0' when the key has no lease */
  lease: string;
}

/** One write of a transaction: a value to put, or null to delete. */
interface Write {
  key: string;
  value: string | null;
  lease?: string;
}

export interface MemoryDcsOptions {
  cluster: string;
  clock: Clock;
  logger?: Logger;
}

export class MemoryDcs implements Dcs {
  readonly cluster: string;
  private readonly k: ClusterKeys;
  private readonly clock: Clock;
  private readonly invalid: InvalidValueReporter;
  private readonly data = new Map<string, Entry>();
  private readonly leases = new Map<string, { ttlMs: number; deadlineMs: number }>();
  private readonly listeners = new Set<() => void>();
  private readonly eventListeners = new Set<(event: EventValue) => void>();
  private revision = 1;
  private nextLeaseId = 7000;
  private eventSeq = 0;
  private unreachable = false;

  constructor(options: MemoryDcsOptions) {
    this.cluster = options.cluster;
    this.k = keys(options.cluster);
    this.clock = options.clock;
    const log = options.logger ?? silentLogger();
    this.invalid = new InvalidValueReporter((fields, message) => log.warn(fields, message));
  }

  /** While true, every call fails as if etcd were down (addEvent still swallows it). */
  setUnreachable(down: boolean): void {
    this.unreachable = down;
  }

  /** Writes raw text at a key relative to the prefix, e.g. `putRaw('members/x', 'not json')`. */
  putRaw(relativeKey: string, text: string, leaseId?: string): void {
    this.commit([{ key: this.k.prefix + relativeKey, value: text, lease: leaseId }]);
  }

  /** The current store revision, as etcd's header would report it. */
  currentRevision(): string {
    return String(this.revision);
  }

  /** Revokes every lease whose deadline has passed (etcd's reaper). Returns how many expired. */
  expireLeases(): number {
    const now = this.clock.now();
    let expired = 0;
    for (const [id, lease] of this.leases) {
      if (lease.deadlineMs <= now) {
        this.dropLease(id);
        expired += 1;
      }
    }
    return expired;
  }

  private guard(): void {
    if (this.unreachable) throw new KeelError('KEEL_ETCD_UNREACHABLE', 'memory dcs is set unreachable');
    this.expireLeases();
  }

  private dropLease(id: string): void {
    this.leases.delete(id);
    const bound = [...this.data].filter(([, entry]) => entry.lease === id).map(([key]) => key);
    this.commit(bound.map((key) => ({ key, value: null })));
  }

  /** Applies writes as one transaction: one new revision if anything changed. */
  private commit(writes: Write[]): void {
    for (const w of writes) {
      if (w.value !== null && w.lease !== undefined && w.lease !== '0' && !this.leases.has(w.lease)) {
        throw new KeelError('KEEL_CONFLICT', `lease ${w.lease} no longer exists (expired or revoked)`, {
          hint: 'grant a new lease and write the key again',
        });
      }
    }
    const effective = writes.filter((w) => w.value !== null || this.data.has(w.key));
    if (effective.length === 0) return;
    this.revision += 1;
    for (const w of effective) {
      if (w.value === null) this.data.delete(w.key);
      else this.data.set(w.key, { value: w.value, modRevision: this.revision, lease: w.lease ?? '0' });
    }
    if (effective.some((w) => !w.key.startsWith(this.k.eventsPrefix))) {
      for (const listener of this.listeners) queueMicrotask(listener);
    }
  }

  /** etcd compares a missing key's mod_revision as 0. */
  private modIs(key: string, expect: string): boolean {
    return String(this.data.get(key)?.modRevision ?? 0) === expect;
  }

  private valueIs(key: string, value: string): boolean {
    return this.data.get(key)?.value === value;
  }

  async readCluster(): Promise<ClusterView> {
    this.guard();
    const kvs = [...this.data]
      .filter(([key]) => key.startsWith(this.k.prefix) && !key.startsWith(this.k.eventsPrefix))
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([key, e]) => ({ key, value: e.value, modRevision: String(e.modRevision), lease: e.lease }));
    return buildClusterView(this.cluster, String(this.revision), kvs, this.invalid.report);
  }

  async watch(onChange: () => void): Promise<() => Promise<void>> {
    this.guard();
    // a copy per call, so that the same callback watched twice is stopped independently
    const listener = (): void => onChange();
    this.listeners.add(listener);
    return async () => {
      this.listeners.delete(listener);
    };
  }

  async grantLease(ttlSeconds: number): Promise<string> {
    this.guard();
    const id = String(this.nextLeaseId++);
    this.leases.set(id, { ttlMs: ttlSeconds * 1000, deadlineMs: this.clock.now() + ttlSeconds * 1000 });
    return id;
  }

  async keepAlive(leaseId: string): Promise<boolean> {
    this.guard();
    const lease = this.leases.get(leaseId);
    if (!lease) return false;
    lease.deadlineMs = this.clock.now() + lease.ttlMs;
    return true;
  }

  async revokeLease(leaseId: string): Promise<void> {
    this.guard();
    this.dropLease(leaseId);
  }

  /** Runs a compare-then-write transaction; true when the compare held. */
  private txn(compare: boolean, writes: Write[]): boolean {
    if (compare) this.commit(writes);
    return compare;
  }

  async claimInitialize(value: InitializeValue): Promise<boolean> {
    this.guard();
    return this.txn(!this.data.has(this.k.initialize), [{ key: this.k.initialize, value: encode(value) }]);
  }

  async updateInitialize(value: InitializeValue, expectModRevision: string): Promise<boolean> {
    this.guard();
    return this.txn(this.modIs(this.k.initialize, expectModRevision), [{ key: this.k.initialize, value: encode(value) }]);
  }

  async deleteInitialize(expectModRevision: string): Promise<boolean> {
    this.guard();
    return this.txn(this.modIs(this.k.initialize, expectModRevision), [{ key: this.k.initialize, value: null }]);
  }

  async acquireLeader(name: string, leaseId: string): Promise<boolean> {
    this.guard();
    return this.txn(!this.data.has(this.k.leader), [{ key: this.k.leader, value: encodeLeader(name), lease: leaseId }]);
  }

  async rebindLeader(name: string, leaseId: string, expectModRevision: string): Promise<boolean> {
    this.guard();
    const holds = this.modIs(this.k.leader, expectModRevision) && this.valueIs(this.k.leader, encodeLeader(name));
    return this.txn(holds, [{ key: this.k.leader, value: encodeLeader(name), lease: leaseId }]);
  }

  async releaseLeader(name: string): Promise<boolean> {
    this.guard();
    return this.txn(this.valueIs(this.k.leader, encodeLeader(name)), [{ key: this.k.leader, value: null }]);
  }

  async moveLease(move: LeaseMove): Promise<boolean> {
    this.guard();
    const k = this.k.leader;
    const writes: Write[] = move.member === null ? [] : [{ key: this.k.member(move.name), value: encode(move.member), lease: move.toLeaseId }];
    if (move.leader) writes.push({ key: k, value: encodeLeader(move.name), lease: move.toLeaseId });
    const named = this.valueIs(k, encodeLeader(move.name));
    const holds = !move.leader || (named && this.data.get(k)?.lease === move.fromLeaseId);
    if (this.txn(holds, writes)) return true;
    // as in EtcdDcs: an earlier attempt may have moved it already
    return named && this.data.get(k)?.lease === move.toLeaseId;
  }

  async putMember(value: MemberValue, leaseId: string): Promise<void> {
    this.guard();
    this.commit([{ key: this.k.member(value.name), value: encode(value), lease: leaseId }]);
  }

  async deleteMember(name: string): Promise<void> {
    this.guard();
    this.commit([{ key: this.k.member(name), value: null }]);
  }

  async putConfig(value: DynamicConfig, expectModRevision: string | null): Promise<boolean> {
    this.guard();
    const text = encodeConfig(value);
    const fresh = expectModRevision === null ? !this.data.has(this.k.config) : this.modIs(this.k.config, expectModRevision);
    return this.txn(fresh, [{ key: this.k.config, value: text }]);
  }

  async putStatus(value: StatusValue): Promise<boolean> {
    this.guard();
    return this.txn(this.valueIs(this.k.leader, encodeLeader(value.leader)), [{ key: this.k.status, value: encode(value) }]);
  }

  async putSync(value: SyncValue, leaseId: string): Promise<boolean> {
    this.guard();
    const held = this.valueIs(this.k.leader, encodeLeader(value.leader)) && this.data.get(this.k.leader)?.lease === leaseId;
    return this.txn(held, [{ key: this.k.sync, value: encode(value) }]);
  }

  async appendHistory(entry: HistoryEntry): Promise<void> {
    this.guard();
    const current = this.data.get(this.k.history);
    const decoded = current ? decodeHistory(current.value) : null;
    const entries = decoded?.ok ? decoded.value.entries : [];
    const last = entries[entries.length - 1];
    // same rule as EtcdDcs: a retried append of the identical entry is a no-op
    if (last && sameHistoryEntry(last, entry)) return;
    this.commit([{ key: this.k.history, value: encode({ v: 1, entries: [...entries, entry] }) }]);
  }

  async requestSwitchover(value: SwitchoverValue): Promise<boolean> {
    this.guard();
    return this.txn(!this.data.has(this.k.switchover), [{ key: this.k.switchover, value: encode(value) }]);
  }

  async clearSwitchover(expectModRevision?: string): Promise<void> {
    this.guard();
    const matches = expectModRevision === undefined || this.modIs(this.k.switchover, expectModRevision);
    this.txn(matches, [{ key: this.k.switchover, value: null }]);
  }

  async putDraining(value: DrainingValue): Promise<void> {
    this.guard();
    this.commit([{ key: this.k.draining(value.name), value: encode(value) }]);
  }

  async deleteDraining(name: string): Promise<void> {
    this.guard();
    if (this.data.has(this.k.draining(name))) this.commit([{ key: this.k.draining(name), value: null }]);
  }

  async claimCreation(value: CreationValue, leaseId: string): Promise<boolean> {
    this.guard();
    const k = this.k.creation(value.name);
    const active = this.data.get(this.k.controller)?.lease === leaseId;
    return this.txn(active && !this.data.has(k), [{ key: k, value: encode(value), lease: leaseId }]);
  }

  async deleteCreation(name: string): Promise<void> {
    this.guard();
    if (this.data.has(this.k.creation(name))) this.commit([{ key: this.k.creation(name), value: null }]);
  }

  async readSpec(): Promise<Versioned<SpecValue> | null> {
    this.guard();
    const entry = this.data.get(this.k.spec);
    if (!entry) return null;
    const decoded = decodeSpec(entry.value);
    if (decoded.ok) return { value: decoded.value, modRevision: String(entry.modRevision) };
    this.invalid.report(this.k.spec, String(entry.modRevision), decoded.reason);
    return null;
  }

  async putSpec(value: SpecValue, expectModRevision: string | null): Promise<boolean> {
    this.guard();
    const text = encodeSpec(value);
    const fresh = expectModRevision === null ? !this.data.has(this.k.spec) : this.modIs(this.k.spec, expectModRevision);
    return this.txn(fresh, [{ key: this.k.spec, value: text }]);
  }

  async acquireController(value: ControllerValue, leaseId: string): Promise<boolean> {
    this.guard();
    return this.txn(!this.data.has(this.k.controller), [{ key: this.k.controller, value: encode(value), lease: leaseId }]);
  }

  async releaseController(name: string): Promise<boolean> {
    this.guard();
    const current = await this.readController();
    return this.txn(current !== null && current.value.name === name, [{ key: this.k.controller, value: null }]);
  }

  async readController(): Promise<(Versioned<ControllerValue> & { leaseId: string }) | null> {
    this.guard();
    const entry = this.data.get(this.k.controller);
    if (!entry) return null;
    const decoded = decodeController(entry.value);
    return decoded.ok ? { value: decoded.value, modRevision: String(entry.modRevision), leaseId: entry.lease } : null;
  }

  async watchEvents(onEvent: (event: EventValue) => void): Promise<() => Promise<void>> {
    this.guard();
    const listener = (event: EventValue): void => onEvent(event);
    this.eventListeners.add(listener);
    return async () => {
      this.eventListeners.delete(listener);
    };
  }

  async addEvent(event: Omit<EventValue, 'v'>): Promise<void> {
    try {
      this.guard();
      const value: EventValue = { v: 1, atMs: event.atMs, source: event.source, kind: event.kind, message: event.message };
      const suffix = (this.eventSeq++ % 0x10000).toString(16).padStart(4, '0');
      this.commit([{ key: eventKeyName(this.k.eventsPrefix, event.atMs, event.source, suffix), value: encode(value) }]);
      for (const listener of this.eventListeners) queueMicrotask(() => listener(value));
      const eventKeys = this.eventKeys();
      if (eventKeys.length > maxEvents) {
        this.commit(eventKeys.slice(0, eventKeys.length - maxEvents).map((key) => ({ key, value: null })));
      }
    } catch {
      // best effort, as in EtcdDcs
    }
  }

  private eventKeys(): string[] {
    return [...this.data.keys()].filter((key) => key.startsWith(this.k.eventsPrefix)).sort();
  }

  async listEvents(limit: number): Promise<EventValue[]> {
    this.guard();
    if (limit <= 0) return [];
    const events: EventValue[] = [];
    for (const key of this.eventKeys().slice(-limit)) {
      const entry = this.data.get(key)!;
      const decoded = decodeEvent(entry.value);
      if (decoded.ok) events.push(decoded.value);
      else this.invalid.report(key, String(entry.modRevision), decoded.reason);
    }
    return events;
  }

  async close(): Promise<void> {
    this.listeners.clear();
    this.eventListeners.clear();
  }
}
