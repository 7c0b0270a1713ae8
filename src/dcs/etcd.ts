/**
 * The Dcs on etcd v3. Every method is one round trip (appendHistory: a few),
 * bounded by requestTimeoutMs. A call that times out may still have been
 * applied by etcd: callers treat KEEL_ETCD_UNREACHABLE as "outcome unknown"
 * and read again before acting on it.
 */
import { randomBytes } from 'node:crypto';
import {
  EtcdLeaseInvalidError,
  type Etcd3,
  type ICompare,
  type IKeyValue,
  type IRequestOp,
  type ITxnResponse,
  type Watcher,
} from 'etcd3';
import type { DynamicConfig } from '../config/schema.js';
import { describeError, KeelError, redactSecrets } from '../errors.js';
import type { Logger } from '../util/log.js';
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
import { createEtcdClient } from './etcd-client.js';
import { buf, createdNever, del, leaseIs, modifiedAt, put, toRaw, valueIs } from './etcd-ops.js';
import { keepAliveOnce, MemberRotation } from './etcd-members.js';
import type {
  ClusterView,
  ControllerValue,
  CreationValue,
  Dcs,
  DrainingValue,
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

export interface EtcdDcsOptions {
  endpoints: string[];
  cluster: string;
  requestTimeoutMs: number;
  logger: Logger;
}

/** Trimming costs a count read, so it runs once every this many added events. */
const trimEveryEvents = 50;
const historyCasAttempts = 5;

export class EtcdDcs implements Dcs {
  readonly cluster: string;
  private readonly client: Etcd3;
  private readonly k: ClusterKeys;
  private readonly timeoutMs: number;
  private readonly where: string;
  private readonly log: Logger;
  private readonly invalid: InvalidValueReporter;
  private readonly stops = new Set<() => Promise<void>>();
  private eventsSinceTrim = 0;
  /** member by member, for the calls a silent member must not stall */
  private readonly members: MemberRotation;

  constructor(options: EtcdDcsOptions) {
    this.cluster = options.cluster;
    this.k = keys(options.cluster);
    this.timeoutMs = options.requestTimeoutMs;
    this.where = redactSecrets(options.endpoints.join(','));
    this.log = options.logger;
    this.invalid = new InvalidValueReporter((fields, message) => this.log.warn(fields, message));
    this.client = createEtcdClient(options.endpoints, options.requestTimeoutMs);
    this.members = new MemberRotation(options.endpoints, options.requestTimeoutMs, this.log, (what, run, timeoutMs, where) =>
      this.call(what, run, timeoutMs, where),
    );
  }

  /** Runs one request against etcd, bounded in time; errors become KeelErrors. */
  private async call<T>(
    what: string,
    run: (signal: AbortSignal) => Promise<T>,
    timeoutMs = this.timeoutMs,
    where = this.where,
  ): Promise<T> {
    const abort = new AbortController();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => {
        abort.abort();
        reject(new KeelError('KEEL_ETCD_UNREACHABLE', `etcd at ${where} did not answer the ${what} within ${timeoutMs} ms`));
      }, timeoutMs);
    });
    try {
      return await Promise.race([run(abort.signal), timeout]);
    } catch (err) {
      throw this.translate(err, what);
    } finally {
      clearTimeout(timer);
    }
  }

  /** An idempotent call that a silent member must not stall: member by member when there are several. */
  private memberByMember<T>(what: string, request: (client: Etcd3, signal: AbortSignal) => Promise<T>): Promise<T> {
    if (this.members.size < 2) return this.call(what, (signal) => request(this.client, signal));
    return this.members.run(what, request);
  }

  private translate(err: unknown, what: string): KeelError {
    if (err instanceof KeelError) return err;
    if (err instanceof EtcdLeaseInvalidError) {
      return new KeelError('KEEL_CONFLICT', `the lease of the ${what} no longer exists (expired or revoked)`, {
        hint: 'grant a new lease and write the key again',
        cause: err,
      });
    }
    return new KeelError('KEEL_ETCD_UNREACHABLE', `the ${what} failed at ${this.where}: ${describeError(err)}`, { cause: err });
  }

  private txn(what: string, compare: ICompare[], success: IRequestOp[]): Promise<ITxnResponse> {
    return this.call(what, () => this.client.kv.txn({ compare, success, failure: [] }));
  }

  async readCluster(): Promise<ClusterView> {
    // Two ranges in one transaction: one revision, without the (large, noisy) events.
    const read = (client: Etcd3) =>
      client.kv.txn({
        compare: [],
        success: [
          { request_range: { key: buf(this.k.prefix), range_end: buf(this.k.eventsPrefix) } },
          { request_range: { key: buf(this.k.eventsEnd), range_end: buf(this.k.prefixEnd) } },
        ],
        failure: [],
      });
    const what = 'read of the cluster';
    const res = await this.memberByMember(what, read);
    const kvs = res.responses.flatMap((r) => r.response_range?.kvs ?? []).map(toRaw);
    return buildClusterView(this.cluster, String(res.header.revision), kvs, this.invalid.report);
  }

  async watch(onChange: () => void): Promise<() => Promise<void>> {
    let stopped = false;
    let current: Watcher | null = null;
    const notify = (): void => {
      if (stopped) return;
      try {
        onChange();
      } catch (err) {
        this.log.error({ err: describeError(err) }, 'etcd watch callback threw');
      }
    };
    const isEvent = (kv: IKeyValue): boolean => kv.key.toString('utf8').startsWith(this.k.eventsPrefix);

    const start = async (): Promise<void> => {
      const watcher = this.client.watch().prefix(this.k.prefix).watcher();
      current = watcher;
      let lostConnection = false;
      watcher.on('put', (kv) => isEvent(kv) || notify());
      watcher.on('delete', (kv) => isEvent(kv) || notify());
      watcher.on('disconnected', (err) => {
        // etcd3 retries every second while etcd is down: say so once, not every second
        if (!lostConnection) this.log.warn({ err: describeError(err) }, 'etcd watch disconnected; reconnecting');
        lostConnection = true;
      });
      // changes made while disconnected may be lost to us: let the caller read again
      watcher.on('connected', () => {
        if (!lostConnection) return;
        lostConnection = false;
        this.log.info('etcd watch reconnected');
        notify();
      });
      watcher.on('error', (err) => {
        // etcd cancelled the watch (e.g. its resume revision was compacted): start a fresh one
        this.log.warn({ err: describeError(err) }, 'etcd cancelled the watch; starting a new one');
        notify();
        setTimeout(() => {
          // the new watch starts at the current revision: changes since the old one died need a read
          if (!stopped) start().then(notify, (e: unknown) => this.log.warn({ err: describeError(e) }, 'could not restart the etcd watch'));
        }, 1000).unref();
      });
      await new Promise<void>((resolve, reject) => {
        watcher.once('connected', () => resolve());
        watcher.once('error', reject);
      });
    };

    const stop = async (): Promise<void> => {
      stopped = true;
      this.stops.delete(stop);
      const watcher = current;
      if (!watcher) return;
      await this.call('watch cancel', () => watcher.cancel()).catch((err: unknown) =>
        this.log.debug({ err: describeError(err) }, 'etcd watch cancel did not complete'),
      );
    };

    try {
      await this.call('watch creation', start);
    } catch (err) {
      // not awaited: the caller has waited requestTimeoutMs already
      void stop();
      throw err;
    }
    this.stops.add(stop);
    return stop;
  }

  async grantLease(ttlSeconds: number): Promise<string> {
    const res = await this.call('lease grant', () => this.client.leaseClient.leaseGrant({ TTL: ttlSeconds }));
    if (res.error) throw new KeelError('KEEL_ETCD_UNREACHABLE', `etcd refused a lease: ${res.error}`);
    return String(res.ID);
  }

  /** One keep-alive; with several members, member by member (see MemberRotation). */
  keepAlive(leaseId: string): Promise<boolean> {
    return this.memberByMember('lease keep-alive', (client, signal) => keepAliveOnce(client, leaseId, signal));
  }

  async revokeLease(leaseId: string): Promise<void> {
    await this.call('lease revoke', async () => {
      try {
        await this.client.leaseClient.leaseRevoke({ ID: leaseId });
      } catch (err) {
        // already gone is what the caller wanted
        if (!(err instanceof EtcdLeaseInvalidError)) throw err;
      }
    });
  }

  async claimInitialize(value: InitializeValue): Promise<boolean> {
    const k = this.k.initialize;
    return (await this.txn('initialize claim', [createdNever(k)], [put(k, encode(value))])).succeeded;
  }

  async updateInitialize(value: InitializeValue, expectModRevision: string): Promise<boolean> {
    const k = this.k.initialize;
    return (await this.txn('initialize update', [modifiedAt(k, expectModRevision)], [put(k, encode(value))])).succeeded;
  }

  async deleteInitialize(expectModRevision: string): Promise<boolean> {
    const k = this.k.initialize;
    return (await this.txn('initialize delete', [modifiedAt(k, expectModRevision)], [del(k)])).succeeded;
  }

  async acquireLeader(name: string, leaseId: string): Promise<boolean> {
    const k = this.k.leader;
    return (await this.txn('leader acquisition', [createdNever(k)], [put(k, encodeLeader(name), leaseId)])).succeeded;
  }

  async rebindLeader(name: string, leaseId: string, expectModRevision: string): Promise<boolean> {
    const k = this.k.leader;
    const compare = [modifiedAt(k, expectModRevision), valueIs(k, encodeLeader(name))];
    return (await this.txn('leader rebind', compare, [put(k, encodeLeader(name), leaseId)])).succeeded;
  }

  async releaseLeader(name: string): Promise<boolean> {
    const k = this.k.leader;
    return (await this.txn('leader release', [valueIs(k, encodeLeader(name))], [del(k)])).succeeded;
  }

  async moveLease(move: LeaseMove): Promise<boolean> {
    const k = this.k.leader;
    const writes = move.member === null ? [] : [put(this.k.member(move.name), encode(move.member), move.toLeaseId)];
    if (move.leader) writes.push(put(k, encodeLeader(move.name), move.toLeaseId));
    if (writes.length === 0) return true;
    const compare = move.leader ? [valueIs(k, encodeLeader(move.name)), leaseIs(k, move.fromLeaseId)] : [];
    // the failure branch reads the leader key: an earlier attempt may have moved it already
    const res = await this.call('lease move', () =>
      this.client.kv.txn({ compare, success: writes, failure: [{ request_range: { key: buf(k) } }] }),
    );
    if (res.succeeded) return true;
    const now = res.responses[0]?.response_range?.kvs[0];
    return now !== undefined && now.value.toString('utf8') === encodeLeader(move.name) && String(now.lease) === move.toLeaseId;
  }

  async putMember(value: MemberValue, leaseId: string): Promise<void> {
    await this.call('member write', () =>
      this.client.kv.put({ key: buf(this.k.member(value.name)), value: buf(encode(value)), lease: leaseId }),
    );
  }

  async deleteMember(name: string): Promise<void> {
    await this.call('member delete', () => this.client.kv.deleteRange({ key: buf(this.k.member(name)) }));
  }

  async putConfig(value: DynamicConfig, expectModRevision: string | null): Promise<boolean> {
    const k = this.k.config;
    const compare = expectModRevision === null ? createdNever(k) : modifiedAt(k, expectModRevision);
    return (await this.txn('config write', [compare], [put(k, encodeConfig(value))])).succeeded;
  }

  async putStatus(value: StatusValue): Promise<boolean> {
    const compare = valueIs(this.k.leader, encodeLeader(value.leader));
    return (await this.txn('status write', [compare], [put(this.k.status, encode(value))])).succeeded;
  }

  async putSync(value: SyncValue, leaseId: string): Promise<boolean> {
    const k = this.k.leader;
    const compare = [valueIs(k, encodeLeader(value.leader)), leaseIs(k, leaseId)];
    return (await this.txn('sync write', compare, [put(this.k.sync, encode(value))])).succeeded;
  }

  async appendHistory(entry: HistoryEntry): Promise<void> {
    const k = this.k.history;
    for (let attempt = 0; attempt < historyCasAttempts; attempt++) {
      const res = await this.call('history read', () => this.client.kv.range({ key: buf(k) }));
      const current = res.kvs[0];
      let entries: HistoryEntry[] = [];
      if (current) {
        const decoded = decodeHistory(current.value.toString('utf8'));
        if (decoded.ok) entries = decoded.value.entries;
        else this.invalid.report(k, String(current.mod_revision), `${decoded.reason}; overwriting it`);
      }
      // a retry after an unknown outcome must not record the same switch twice
      if (entries.length > 0 && sameHistoryEntry(entries[entries.length - 1]!, entry)) return;
      const next = encode({ v: 1, entries: [...entries, entry] });
      const compare = current ? modifiedAt(k, String(current.mod_revision)) : createdNever(k);
      if ((await this.txn('history append', [compare], [put(k, next)])).succeeded) return;
    }
    throw new KeelError('KEEL_CONFLICT', `history changed under ${historyCasAttempts} attempts to append timeline ${entry.timeline}`);
  }

  async requestSwitchover(value: SwitchoverValue): Promise<boolean> {
    const k = this.k.switchover;
    return (await this.txn('switchover request', [createdNever(k)], [put(k, encode(value))])).succeeded;
  }

  async clearSwitchover(expectModRevision?: string): Promise<void> {
    const k = this.k.switchover;
    await this.txn('switchover clear', expectModRevision === undefined ? [] : [modifiedAt(k, expectModRevision)], [del(k)]);
  }

  async putDraining(value: DrainingValue): Promise<void> {
    const k = this.k.draining(value.name);
    await this.call('draining write', () => this.client.kv.put({ key: buf(k), value: buf(encode(value)) }));
  }

  async deleteDraining(name: string): Promise<void> {
    const k = this.k.draining(name);
    await this.call('draining delete', () => this.client.kv.deleteRange({ key: buf(k) }));
  }

  async claimCreation(value: CreationValue, leaseId: string): Promise<boolean> {
    const k = this.k.creation(value.name);
    // only the active controller records creations: its key must be on this very lease
    return (await this.txn('creation record', [createdNever(k), leaseIs(this.k.controller, leaseId)], [put(k, encode(value), leaseId)])).succeeded;
  }

  async deleteCreation(name: string): Promise<void> {
    const k = this.k.creation(name);
    await this.call('creation delete', () => this.client.kv.deleteRange({ key: buf(k) }));
  }

  async readSpec(): Promise<Versioned<SpecValue> | null> {
    const kv = (await this.call('spec read', () => this.client.kv.range({ key: buf(this.k.spec) }))).kvs[0];
    if (!kv) return null;
    const decoded = decodeSpec(kv.value.toString('utf8'));
    if (decoded.ok) return { value: decoded.value, modRevision: String(kv.mod_revision) };
    this.invalid.report(this.k.spec, String(kv.mod_revision), decoded.reason);
    return null;
  }

  async putSpec(value: SpecValue, expectModRevision: string | null): Promise<boolean> {
    const k = this.k.spec;
    const compare = expectModRevision === null ? createdNever(k) : modifiedAt(k, expectModRevision);
    return (await this.txn('spec write', [compare], [put(k, encodeSpec(value))])).succeeded;
  }

  async acquireController(value: ControllerValue, leaseId: string): Promise<boolean> {
    const k = this.k.controller;
    return (await this.txn('controller acquisition', [createdNever(k)], [put(k, encode(value), leaseId)])).succeeded;
  }

  async releaseController(name: string): Promise<boolean> {
    const current = await this.readController();
    if (current === null || current.value.name !== name) return false;
    const k = this.k.controller;
    return (await this.txn('controller release', [modifiedAt(k, current.modRevision)], [del(k)])).succeeded;
  }

  async readController(): Promise<(Versioned<ControllerValue> & { leaseId: string }) | null> {
    const kv = (await this.call('controller read', () => this.client.kv.range({ key: buf(this.k.controller) }))).kvs[0];
    if (!kv) return null;
    const decoded = decodeController(kv.value.toString('utf8'));
    if (decoded.ok) return { value: decoded.value, modRevision: String(kv.mod_revision), leaseId: String(kv.lease ?? '0') };
    this.invalid.report(this.k.controller, String(kv.mod_revision), decoded.reason);
    return null;
  }

  async watchEvents(onEvent: (event: EventValue) => void): Promise<() => Promise<void>> {
    const watcher = await this.call('event watch creation', () => this.client.watch().prefix(this.k.eventsPrefix).create());
    watcher.on('put', (kv) => {
      const decoded = decodeEvent(kv.value.toString('utf8'));
      if (decoded.ok) onEvent(decoded.value);
      else this.invalid.report(kv.key.toString('utf8'), String(kv.mod_revision), decoded.reason);
    });
    watcher.on('error', (err) => this.log.warn({ err: describeError(err) }, 'etcd cancelled the event watch'));
    const stop = async (): Promise<void> => {
      this.stops.delete(stop);
      await this.call('event watch cancel', () => watcher.cancel()).catch(() => undefined);
    };
    this.stops.add(stop);
    return stop;
  }

  async addEvent(event: Omit<EventValue, 'v'>): Promise<void> {
    try {
      const value: EventValue = { v: 1, atMs: event.atMs, source: event.source, kind: event.kind, message: event.message };
      const key = eventKeyName(this.k.eventsPrefix, event.atMs, event.source, randomBytes(2).toString('hex'));
      await this.call('event write', () => this.client.kv.put({ key: buf(key), value: buf(encode(value)) }));
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
    const range = { key: buf(this.k.eventsPrefix), range_end: buf(this.k.eventsEnd) };
    const counted = await this.call('event count', () => this.client.kv.range({ ...range, count_only: true }));
    const excess = Number(counted.count) - maxEvents;
    if (excess <= 0) return;
    const oldest = await this.call('event scan', () => this.client.kv.range({ ...range, keys_only: true, limit: excess }));
    const last = oldest.kvs[oldest.kvs.length - 1];
    if (!last) return;
    // range_end just past the last key to drop
    const end = Buffer.concat([last.key, Buffer.from([0])]);
    await this.call('event trim', () => this.client.kv.deleteRange({ key: range.key, range_end: end }));
  }

  async listEvents(limit: number): Promise<EventValue[]> {
    if (limit <= 0) return [];
    const res = await this.call('event read', () =>
      this.client.kv.range({
        key: buf(this.k.eventsPrefix),
        range_end: buf(this.k.eventsEnd),
        sort_order: 'Descend',
        sort_target: 'Key',
        limit,
      }),
    );
    const events: EventValue[] = [];
    for (const kv of res.kvs) {
      const decoded = decodeEvent(kv.value.toString('utf8'));
      if (decoded.ok) events.push(decoded.value);
      else this.invalid.report(kv.key.toString('utf8'), String(kv.mod_revision), decoded.reason);
    }
    return events.reverse();
  }

  async close(): Promise<void> {
    await Promise.all([...this.stops].map((stop) => stop()));
    this.client.close();
    this.members.close();
  }
}
