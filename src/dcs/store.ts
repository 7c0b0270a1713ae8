/**
 * The Dcs, written once over the key-value port (kv.ts): every key Keel keeps
 * under `/keel/<cluster>/`, its value's codec and the condition each write
 * depends on. EtcdDcs and MemoryDcs are this class over etcd and over memory,
 * so the semantics a unit test sees are the ones production runs.
 */
import { randomBytes } from 'node:crypto';
import type { DynamicConfig } from '../config/schema.js';
import { describeError, KeelError } from '../errors.js';
import type { Logger } from '../util/log.js';
import {
  decodeBackupLock,
  decodeController,
  decodeEvent,
  decodeHistory,
  decodeRouter,
  decodeSpec,
  encode,
  encodeConfig,
  encodeLeader,
  encodeSpec,
  eventKeyName,
  keys,
  maxEvents,
  rangeEndOf,
  sameHistoryEntry,
  type ClusterKeys,
} from './codec.js';
import type { KvCompare, KvEntry, KvStore, KvWrite } from './kv.js';
import { KeptKeys } from './kept-keys.js';
import { FiguresFilter } from './wake-filter.js';
import type { BackupLockValue, ClusterView, ControllerValue, CreationValue, DrainingValue, EventValue, HistoryEntry, HistoryValue, InitializeValue, MemberValue, RouterValue, SpecValue, StatusValue, SwitchoverValue, SyncValue, Versioned } from '../model/values.js';
import type { Dcs, KeptCluster, LeaderTake, LeaseMove, WatchOptions } from './types.js';
import { buildClusterView, InvalidValueReporter } from './view.js';

/** Trimming costs a read of the event keys, so it runs once every this many added events. */
const trimEveryEvents = 50;
const historyCasAttempts = 5;

const absent = (key: string): KvCompare => ({ key, absent: true });
const at = (key: string, modRevision: string): KvCompare => ({ key, modRevision });
const put = (key: string, value: string, lease?: string): KvWrite => ({ put: key, value, ...(lease === undefined ? {} : { lease }) });
const del = (key: string): KvWrite => ({ delete: key });

export class StoreDcs implements Dcs {
  readonly cluster: string;
  protected readonly k: ClusterKeys;
  private readonly invalid: InvalidValueReporter;
  private eventsSinceTrim = 0;

  constructor(
    cluster: string,
    protected readonly kv: KvStore,
    private readonly log: Logger,
  ) {
    this.cluster = cluster;
    this.k = keys(cluster);
    this.invalid = new InvalidValueReporter((fields, message) => this.log.warn(fields, message));
  }

  private async one(what: string, key: string): Promise<KvEntry | null> {
    return (await this.kv.read(what, [{ key }])).entries[0]?.[0] ?? null;
  }

  private decoded<T>(entry: KvEntry, decode: (text: string) => { ok: true; value: T } | { ok: false; reason: string }): T | null {
    const result = decode(entry.value);
    if (result.ok) return result.value;
    this.invalid.report(entry.key, entry.modRevision, result.reason);
    return null;
  }

  async readCluster(): Promise<ClusterView> {
    const { revision, entries } = await this.readClusterKeys();
    return buildClusterView(this.cluster, revision, entries, this.invalid.report);
  }

  /** everything but the (large, noisy) events, at one revision */
  private async readClusterKeys(): Promise<{ revision: string; entries: KvEntry[] }> {
    const { revision, entries } = await this.kv.read('read of the cluster', [
      { key: this.k.prefix, end: this.k.eventsPrefix },
      { key: this.k.eventsEnd, end: this.k.prefixEnd },
    ]);
    return { revision, entries: entries.flat() };
  }

  async keepCluster(handlers: { onView: (view: ClusterView) => void; onResync: () => void }): Promise<KeptCluster> {
    const kept = new KeptKeys();
    const view = (): ClusterView => buildClusterView(this.cluster, kept.revision, kept.entries(), this.invalid.report);
    let queued = false;
    const stop = await this.kv.watch('kept watch', this.k.prefix, {
      onChange: (change) => {
        if (change.key.startsWith(this.k.eventsPrefix) || !kept.apply(change)) return;
        if (!kept.loaded || queued || change.key.startsWith(this.k.routersPrefix)) return;
        // after the other changes of its transaction, which come in the same turn of the event loop
        queued = true;
        queueMicrotask(() => {
          queued = false;
          handlers.onView(view());
        });
      },
      onResync: handlers.onResync,
    });
    const read = async (): Promise<ClusterView> => {
      const { revision, entries } = await this.readClusterKeys();
      kept.load(revision, entries);
      return view();
    };
    return { read, stop };
  }

  /**
   * Every change but the events' and the routers' keys: no view a watcher acts
   * on holds those (a leader handing over reads routers/ itself), and a router
   * writes its key as it holds and as it lets go, right in a switchover, where
   * each wake-up is a read of the whole cluster by every agent, the
   * controller and the dashboard.
   */
  watch(onChange: () => void, options: WatchOptions = {}): Promise<() => Promise<void>> {
    const ignored = (key: string): boolean => key.startsWith(this.k.eventsPrefix) || key.startsWith(this.k.routersPrefix);
    const figures = options.figures === false ? new FiguresFilter(this.k) : null;
    return this.kv.watch('watch', this.k.prefix, {
      onChange: (change) => ignored(change.key) || (figures !== null && !figures.wakes(change)) || onChange(),
      onResync: () => {
        figures?.forget();
        onChange();
      },
    });
  }

  grantLease(ttlSeconds: number): Promise<string> {
    return this.kv.grant(ttlSeconds);
  }

  keepAlive(leaseId: string): Promise<boolean> {
    return this.kv.keepAlive(leaseId);
  }

  revokeLease(leaseId: string): Promise<void> {
    return this.kv.revoke(leaseId);
  }

  claimInitialize(value: InitializeValue): Promise<boolean> {
    const k = this.k.initialize;
    return this.kv.txn('initialize claim', [absent(k)], [put(k, encode(value))]);
  }

  updateInitialize(value: InitializeValue, expectModRevision: string): Promise<boolean> {
    const k = this.k.initialize;
    return this.kv.txn('initialize update', [at(k, expectModRevision)], [put(k, encode(value))]);
  }

  deleteInitialize(expectModRevision: string): Promise<boolean> {
    const k = this.k.initialize;
    return this.kv.txn('initialize delete', [at(k, expectModRevision)], [del(k)]);
  }

  acquireLeader(name: string, leaseId: string): Promise<boolean> {
    const k = this.k.leader;
    return this.kv.txn('leader acquisition', [absent(k)], [put(k, encodeLeader(name), leaseId)]);
  }

  async takeLeaderToPromote(take: LeaderTake): Promise<'taken' | 'leader-taken' | 'history-changed'> {
    const { leader, history } = this.k;
    const entries = take.known?.value.entries ?? [];
    const writes = [put(leader, encodeLeader(take.name), take.leaseId), put(history, encode({ v: 1, entries: [...entries, take.entry] }))];
    if (take.sync !== null) writes.push(put(this.k.sync, encode(take.sync)));
    if (take.endsSwitchover === true) writes.push(del(this.k.switchover));
    const unchanged = take.known === null ? absent(history) : at(history, take.known.modRevision);
    if (await this.kv.txn('leader acquisition with the history entry', [absent(leader), unchanged], writes)) return 'taken';
    // which condition failed; or an earlier attempt whose answer was lost wrote it all
    const { entries: found } = await this.kv.read('leader and history read', [{ key: leader }, { key: history }]);
    const [now, recorded] = [found[0]?.[0] ?? null, found[1]?.[0] ?? null];
    if (now !== null && (now.value !== encodeLeader(take.name) || now.lease !== take.leaseId)) return 'leader-taken';
    const decoded = recorded === null ? null : decodeHistory(recorded.value);
    const last = decoded?.ok ? decoded.value.entries.at(-1) : undefined;
    return now !== null && last !== undefined && sameHistoryEntry(last, take.entry) ? 'taken' : 'history-changed';
  }

  rebindLeader(name: string, leaseId: string, expectModRevision: string): Promise<boolean> {
    const k = this.k.leader;
    return this.kv.txn('leader rebind', [at(k, expectModRevision), { key: k, value: encodeLeader(name) }], [put(k, encodeLeader(name), leaseId)]);
  }

  releaseLeader(name: string, finalStatus?: StatusValue): Promise<boolean> {
    const k = this.k.leader;
    const status = finalStatus === undefined ? [] : [put(this.k.status, encode(finalStatus))];
    return this.kv.txn('leader release', [{ key: k, value: encodeLeader(name) }], [del(k), ...status]);
  }

  async moveLease(move: LeaseMove): Promise<boolean> {
    const k = this.k.leader;
    const writes = move.member === null ? [] : [put(this.k.member(move.name), encode(move.member), move.toLeaseId)];
    if (move.leader) writes.push(put(k, encodeLeader(move.name), move.toLeaseId));
    if (writes.length === 0) return true;
    const compares: KvCompare[] = move.leader ? [{ key: k, value: encodeLeader(move.name) }, { key: k, lease: move.fromLeaseId }] : [];
    if (await this.kv.txn('lease move', compares, writes)) return true;
    // an earlier attempt whose answer was lost may have moved it already
    const now = await this.one('leader read', k);
    return now !== null && now.value === encodeLeader(move.name) && now.lease === move.toLeaseId;
  }

  async putMember(value: MemberValue, leaseId: string): Promise<void> {
    await this.kv.txn('member write', [], [put(this.k.member(value.name), encode(value), leaseId)]);
  }

  async deleteMember(name: string): Promise<void> {
    await this.kv.txn('member delete', [], [del(this.k.member(name))]);
  }

  putConfig(value: DynamicConfig, expectModRevision: string | null): Promise<boolean> {
    const k = this.k.config;
    return this.kv.txn('config write', [expectModRevision === null ? absent(k) : at(k, expectModRevision)], [put(k, encodeConfig(value))]);
  }

  putStatus(value: StatusValue): Promise<boolean> {
    return this.kv.txn('status write', [{ key: this.k.leader, value: encodeLeader(value.leader) }], [put(this.k.status, encode(value))]);
  }

  putSync(value: SyncValue, leaseId: string): Promise<boolean> {
    const k = this.k.leader;
    // a leader whose lease ran out (or another member) cannot name standbys
    return this.kv.txn('sync write', [{ key: k, value: encodeLeader(value.leader) }, { key: k, lease: leaseId }], [put(this.k.sync, encode(value))]);
  }

  async appendHistory(entry: HistoryEntry, known?: Versioned<HistoryValue> | null): Promise<void> {
    const k = this.k.history;
    for (let attempt = 0; attempt < historyCasAttempts; attempt++) {
      // the caller's copy saves the read on the first attempt (a promotion's pause); a stale one fails the compare
      const current = attempt === 0 && known !== undefined ? (known === null ? null : { entries: known.value.entries, modRevision: known.modRevision }) : await this.readHistory();
      const entries = current?.entries ?? [];
      // a retry after an unknown outcome must not record the same switch twice
      if (entries.length > 0 && sameHistoryEntry(entries[entries.length - 1]!, entry)) return;
      const next = encode({ v: 1, entries: [...entries, entry] });
      if (await this.kv.txn('history append', [current === null ? absent(k) : at(k, current.modRevision)], [put(k, next)])) return;
    }
    throw new KeelError('KEEL_CONFLICT', `history changed under ${historyCasAttempts} attempts to append timeline ${entry.timeline}`);
  }

  /** The history's entries and revision; none (and a report) when the key holds no valid history. */
  private async readHistory(): Promise<{ entries: HistoryEntry[]; modRevision: string } | null> {
    const k = this.k.history;
    const current = await this.one('history read', k);
    if (current === null) return null;
    const decoded = decodeHistory(current.value);
    if (!decoded.ok) this.invalid.report(k, current.modRevision, `${decoded.reason}; overwriting it`);
    return { entries: decoded.ok ? decoded.value.entries : [], modRevision: current.modRevision };
  }

  requestSwitchover(value: SwitchoverValue): Promise<boolean> {
    const k = this.k.switchover;
    return this.kv.txn('switchover request', [absent(k)], [put(k, encode(value))]);
  }

  /** The leader stepping down says routers hold from now (switchoverHolds); false when the request changed or went. */
  holdSwitchover(request: Versioned<SwitchoverValue>, holdFromMs: number): Promise<boolean> {
    const k = this.k.switchover;
    return this.kv.txn('switchover hold', [at(k, request.modRevision)], [put(k, encode({ ...request.value, holdFromMs }))]);
  }

  async clearSwitchover(expectModRevision?: string): Promise<void> {
    const k = this.k.switchover;
    await this.kv.txn('switchover clear', expectModRevision === undefined ? [] : [at(k, expectModRevision)], [del(k)]);
  }

  async putRouter(value: RouterValue, leaseId: string): Promise<void> {
    await this.kv.txn('router write', [], [put(this.k.router(value.id), encode(value), leaseId)]);
  }

  async putDraining(value: DrainingValue): Promise<void> {
    await this.kv.txn('draining write', [], [put(this.k.draining(value.name), encode(value))]);
  }

  async deleteDraining(name: string): Promise<void> {
    await this.kv.txn('draining delete', [], [del(this.k.draining(name))]);
  }

  claimCreation(value: CreationValue, leaseId: string): Promise<boolean> {
    const k = this.k.creation(value.name);
    // only the active controller records creations: its key must be on this very lease
    return this.kv.txn('creation record', [absent(k), { key: this.k.controller, lease: leaseId }], [put(k, encode(value), leaseId)]);
  }

  async deleteCreation(name: string): Promise<void> {
    await this.kv.txn('creation delete', [], [del(this.k.creation(name))]);
  }

  async readSpec(): Promise<Versioned<SpecValue> | null> {
    const entry = await this.one('spec read', this.k.spec);
    if (entry === null) return null;
    const value = this.decoded(entry, decodeSpec);
    return value === null ? null : { value, modRevision: entry.modRevision };
  }

  putSpec(value: SpecValue, expectModRevision: string | null): Promise<boolean> {
    const k = this.k.spec;
    return this.kv.txn('spec write', [expectModRevision === null ? absent(k) : at(k, expectModRevision)], [put(k, encodeSpec(value))]);
  }

  acquireController(value: ControllerValue, leaseId: string): Promise<boolean> {
    const k = this.k.controller;
    return this.kv.txn('controller acquisition', [absent(k)], [put(k, encode(value), leaseId)]);
  }

  reportController(value: ControllerValue, leaseId: string): Promise<boolean> {
    const k = this.k.controller;
    return this.kv.txn('controller report', [{ key: k, lease: leaseId }], [put(k, encode(value), leaseId)]);
  }

  async releaseController(name: string): Promise<boolean> {
    const current = await this.readController();
    if (current === null || current.value.name !== name) return false;
    return this.kv.txn('controller release', [at(this.k.controller, current.modRevision)], [del(this.k.controller)]);
  }

  async readController(): Promise<(Versioned<ControllerValue> & { leaseId: string }) | null> {
    const entry = await this.one('controller read', this.k.controller);
    if (entry === null) return null;
    const value = this.decoded(entry, decodeController);
    return value === null ? null : { value, modRevision: entry.modRevision, leaseId: entry.lease };
  }

  claimBackup(value: BackupLockValue, leaseId: string): Promise<boolean> {
    const k = this.k.backup;
    return this.kv.txn('backup claim', [absent(k)], [put(k, encode(value), leaseId)]);
  }

  releaseBackup(value: BackupLockValue): Promise<boolean> {
    const k = this.k.backup;
    return this.kv.txn('backup release', [{ key: k, value: encode(value) }], [del(k)]);
  }

  async readBackup(): Promise<(Versioned<BackupLockValue> & { leaseId: string }) | null> {
    const entry = await this.one('backup read', this.k.backup);
    if (entry === null) return null;
    const value = this.decoded(entry, decodeBackupLock);
    return value === null ? null : { value, modRevision: entry.modRevision, leaseId: entry.lease };
  }

  watchEvents(onEvent: (event: EventValue) => void): Promise<() => Promise<void>> {
    return this.kv.watch('event watch', this.k.eventsPrefix, {
      onChange: (change) => {
        if (change.value === null) return;
        const value = this.decoded({ key: change.key, value: change.value, modRevision: change.modRevision, lease: '0' }, decodeEvent);
        if (value !== null) onEvent(value);
      },
      // events are a feed, not a state: nothing to read again
      onResync: () => undefined,
    });
  }

  async addEvent(event: Omit<EventValue, 'v'>): Promise<void> {
    try {
      const value: EventValue = { v: 1, atMs: event.atMs, source: event.source, kind: event.kind, message: event.message };
      const key = eventKeyName(this.k.eventsPrefix, event.atMs, event.source, randomBytes(2).toString('hex'));
      await this.kv.txn('event write', [], [put(key, encode(value))]);
      this.eventsSinceTrim += 1;
      if (this.eventsSinceTrim >= trimEveryEvents) {
        this.eventsSinceTrim = 0;
        await this.trimEvents();
      }
    } catch (err) {
      this.log.warn({ err: describeError(err), kind: event.kind }, 'could not record an event');
    }
  }

  /** Deletes the oldest events beyond maxEvents; keys sort by time. */
  private async trimEvents(): Promise<void> {
    const { entries } = await this.kv.read('event scan', [{ key: this.k.eventsPrefix, end: this.k.eventsEnd }]);
    const all = entries[0] ?? [];
    const excess = all.length - maxEvents;
    if (excess <= 0) return;
    // the range's end just past the last key to drop
    await this.kv.txn('event trim', [], [{ delete: this.k.eventsPrefix, end: `${all[excess - 1]!.key}\0` }]);
  }

  async readRouters(): Promise<RouterValue[]> {
    const prefix = this.k.routersPrefix;
    const { entries } = await this.kv.read('routers read', [{ key: prefix, end: rangeEndOf(prefix) }]);
    const routers: RouterValue[] = [];
    for (const entry of entries[0] ?? []) {
      const value = this.decoded(entry, decodeRouter);
      if (value !== null && value.id === entry.key.slice(prefix.length)) routers.push(value);
    }
    return routers;
  }

  async listEvents(limit: number): Promise<EventValue[]> {
    if (limit <= 0) return [];
    const { entries } = await this.kv.read('event read', [{ key: this.k.eventsPrefix, end: this.k.eventsEnd, descending: true, limit }]);
    const events: EventValue[] = [];
    for (const entry of entries[0] ?? []) {
      const value = this.decoded(entry, decodeEvent);
      if (value !== null) events.push(value);
    }
    return events.reverse();
  }

  close(): Promise<void> {
    return this.kv.close();
  }
}
