/**
 * The key-value port on etcd v3. Every call is one round trip bounded by
 * requestTimeoutMs; errors become KeelErrors. A call that times out may still
 * have been applied by etcd (KEEL_ETCD_UNREACHABLE means "outcome unknown").
 * Reads and keep-alives, being idempotent, go member by member when there are
 * several members (etcd-members.ts), so a silent member cannot stall them.
 */
import { EtcdAuthenticationFailedError, EtcdLeaseInvalidError, EtcdPermissionDeniedError, type Etcd3, type ICompare, type IRequestOp, type Watcher } from 'etcd3';
import { describeError, KeelError, redactSecrets } from '../errors.js';
import type { Logger } from '../util/log.js';
import { createEtcdClient, type EtcdCredentials } from './etcd-client.js';
import { keepAliveOnce, MemberRotation } from './etcd-members.js';
import type { KvCompare, KvEntry, KvRange, KvStore, KvWatchHandlers, KvWrite } from './kv.js';

export interface EtcdKvOptions {
  endpoints: string[];
  requestTimeoutMs: number;
  logger: Logger;
  /** etcd.tls, etcd.user and etcd.password of node.yml; none for a plain etcd */
  credentials?: EtcdCredentials;
}

const buf = (text: string): Buffer => Buffer.from(text, 'utf8');

function toCompare(c: KvCompare): ICompare {
  const key = buf(c.key);
  if ('absent' in c) return { key, target: 'Create', result: 'Equal', create_revision: 0 };
  if ('modRevision' in c) return { key, target: 'Mod', result: 'Equal', mod_revision: c.modRevision };
  if ('value' in c) return { key, target: 'Value', result: 'Equal', value: buf(c.value) };
  return { key, target: 'Lease', result: 'Equal', lease: c.lease };
}

function toOp(w: KvWrite): IRequestOp {
  if ('put' in w) return { request_put: { key: buf(w.put), value: buf(w.value), ...(w.lease === undefined ? {} : { lease: w.lease }) } };
  return { request_delete_range: { key: buf(w.delete), ...(w.end === undefined ? {} : { range_end: buf(w.end) }) } };
}

function toRangeOp(r: KvRange): IRequestOp {
  return {
    request_range: {
      key: buf(r.key),
      ...(r.end === undefined ? {} : { range_end: buf(r.end) }),
      ...(r.limit === undefined ? {} : { limit: r.limit }),
      ...(r.descending ? { sort_order: 'Descend' as const, sort_target: 'Key' as const } : {}),
    },
  };
}

export class EtcdKv implements KvStore {
  readonly where: string;
  private client: Etcd3;
  private readonly endpoints: string[];
  private readonly credentials: EtcdCredentials;
  private readonly timeoutMs: number;
  private readonly log: Logger;
  private readonly members: MemberRotation;
  private readonly stops = new Set<() => Promise<void>>();
  /** each live watch, started again on a new client */
  private readonly restarts = new Set<() => Promise<void>>();

  constructor(options: EtcdKvOptions) {
    this.where = redactSecrets(options.endpoints.join(','));
    this.endpoints = options.endpoints;
    this.timeoutMs = options.requestTimeoutMs;
    this.log = options.logger;
    const credentials = options.credentials ?? {};
    this.credentials = credentials;
    this.client = createEtcdClient(options.endpoints, options.requestTimeoutMs, credentials);
    this.members = new MemberRotation(options.endpoints, credentials, options.requestTimeoutMs, this.log, (what, run, timeoutMs, where) => this.call(what, run, timeoutMs, where));
  }

  /** Runs one request against etcd, bounded in time; errors become KeelErrors. */
  private async call<T>(what: string, run: (signal: AbortSignal) => Promise<T>, timeoutMs = this.timeoutMs, where = this.where): Promise<T> {
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
    // etcd answered: a retry with the same credentials gets the same answer
    if (err instanceof EtcdPermissionDeniedError || err instanceof EtcdAuthenticationFailedError) {
      return new KeelError('KEEL_ETCD_FORBIDDEN', `etcd refused the ${what} at ${this.where}: ${describeError(err)}`, { cause: err });
    }
    if (err instanceof EtcdLeaseInvalidError) {
      return new KeelError('KEEL_CONFLICT', `the lease of the ${what} no longer exists (expired or revoked)`, { hint: 'grant a new lease and write the key again', cause: err });
    }
    return new KeelError('KEEL_ETCD_UNREACHABLE', `the ${what} failed at ${this.where}: ${describeError(err)}`, { cause: err });
  }

  async read(what: string, ranges: KvRange[]): Promise<{ revision: string; entries: KvEntry[][] }> {
    // several ranges in one transaction: one revision
    const res = await this.memberByMember(what, (client) => client.kv.txn({ compare: [], success: ranges.map(toRangeOp), failure: [] }));
    const entries = res.responses.map((r) =>
      (r.response_range?.kvs ?? []).map((kv) => ({
        key: kv.key.toString('utf8'),
        value: kv.value.toString('utf8'),
        modRevision: String(kv.mod_revision),
        lease: String(kv.lease ?? '0'),
      })),
    );
    return { revision: String(res.header.revision), entries };
  }

  async txn(what: string, compares: KvCompare[], writes: KvWrite[]): Promise<boolean> {
    const res = await this.call(what, () => this.client.kv.txn({ compare: compares.map(toCompare), success: writes.map(toOp), failure: [] }));
    return res.succeeded;
  }

  async grant(ttlSeconds: number): Promise<string> {
    const res = await this.call('lease grant', () => this.client.leaseClient.leaseGrant({ TTL: ttlSeconds }));
    if (res.error) throw new KeelError('KEEL_ETCD_UNREACHABLE', `etcd refused a lease: ${res.error}`);
    return String(res.ID);
  }

  keepAlive(leaseId: string): Promise<boolean> {
    return this.memberByMember('lease keep-alive', (client, signal) => keepAliveOnce(client, leaseId, signal));
  }

  async revoke(leaseId: string): Promise<void> {
    await this.call('lease revoke', async () => {
      try {
        await this.client.leaseClient.leaseRevoke({ ID: leaseId });
      } catch (err) {
        // already gone is what the caller wanted
        if (!(err instanceof EtcdLeaseInvalidError)) throw err;
      }
    });
  }

  async watch(what: string, prefix: string, handlers: KvWatchHandlers): Promise<() => Promise<void>> {
    let stopped = false;
    let current: Watcher | null = null;
    const guarded = (run: () => void): void => {
      if (stopped) return;
      try {
        run();
      } catch (err) {
        this.log.error({ err: describeError(err) }, `etcd ${what} callback threw`);
      }
    };
    const resync = (): void => guarded(handlers.onResync);

    const start = async (): Promise<void> => {
      const watcher = this.client.watch().prefix(prefix).watcher();
      current = watcher;
      let lostConnection = false;
      watcher.on('put', (kv) => guarded(() => handlers.onChange({ key: kv.key.toString('utf8'), value: kv.value.toString('utf8'), modRevision: String(kv.mod_revision), lease: String(kv.lease ?? '0') })));
      watcher.on('delete', (kv) => guarded(() => handlers.onChange({ key: kv.key.toString('utf8'), value: null, modRevision: String(kv.mod_revision) })));
      watcher.on('disconnected', (err) => {
        // etcd3 retries every second while etcd is down: say so once, not every second
        if (!lostConnection) this.log.warn({ err: describeError(err) }, `etcd ${what} disconnected; reconnecting`);
        lostConnection = true;
      });
      // changes made while disconnected may be lost to us: the caller reads again
      watcher.on('connected', () => {
        if (!lostConnection) return;
        lostConnection = false;
        this.log.info(`etcd ${what} reconnected`);
        resync();
      });
      watcher.on('error', (err) => {
        // etcd cancelled the watch (e.g. its resume revision was compacted): start a fresh one
        this.log.warn({ err: describeError(err) }, `etcd cancelled the ${what}; starting a new one`);
        resync();
        setTimeout(() => {
          // the new watch starts at the current revision: changes since the old one died need a read
          if (!stopped) start().then(resync, (e: unknown) => this.log.warn({ err: describeError(e) }, `could not restart the etcd ${what}`));
        }, 1000).unref();
      });
      await new Promise<void>((resolve, reject) => {
        watcher.once('connected', () => resolve());
        watcher.once('error', reject);
      });
    };

    // on a new client (renewed credentials): the new watch first, then the old one cancelled, then a read
    const restart = async (): Promise<void> => {
      const old = current;
      try {
        await this.call(`${what} restart`, start);
      } catch (err) {
        this.log.warn({ err: describeError(err) }, `could not restart the etcd ${what} on renewed credentials; the old one goes on`);
        return;
      }
      if (old !== null) void old.cancel().catch(() => undefined);
      resync();
    };

    const stop = async (): Promise<void> => {
      stopped = true;
      this.stops.delete(stop);
      this.restarts.delete(restart);
      const watcher = current;
      if (!watcher) return;
      await this.call(`${what} cancel`, () => watcher.cancel()).catch((err: unknown) => this.log.debug({ err: describeError(err) }, `etcd ${what} cancel did not complete`));
    };

    try {
      await this.call(`${what} creation`, start);
    } catch (err) {
      // not awaited: the caller has waited requestTimeoutMs already
      void stop();
      throw err;
    }
    this.stops.add(stop);
    this.restarts.add(restart);
    return stop;
  }

  /**
   * Reads the certificate files again (renewed in place by `keel certs rotate`) into a new client; calls
   * from now on and every live watch (started again, then resynced) use it. A pair that cannot be read
   * throws and leaves the current client in use. The old client closes once calls made on it are over.
   */
  async reloadCredentials(): Promise<void> {
    const next = createEtcdClient(this.endpoints, this.timeoutMs, this.credentials);
    const old = this.client;
    this.client = next;
    const oldMembers = this.members.renew(this.credentials);
    await Promise.all([...this.restarts].map((restart) => restart()));
    setTimeout(() => {
      old.close();
      for (const client of oldMembers) client.close();
    }, 2 * this.timeoutMs).unref();
  }

  async close(): Promise<void> {
    await Promise.all([...this.stops].map((stop) => stop()));
    this.members.close();
    this.client.close();
  }
}
