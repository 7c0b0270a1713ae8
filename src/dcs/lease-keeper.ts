/**
 * Keeps one etcd lease alive on its own timer, apart from any loop, so a slow
 * action never delays a renewal. Used by the agent (its member and leader
 * keys) and by the controller (its controller key); the timing rules are the
 * pure ones of model/lease.ts.
 */
import {
  grantedLease,
  leaseDeadlineMs,
  leaseTrusted,
  lostLease,
  moveAbandoned,
  moveCommitted,
  moveStarted,
  renewedLease,
  renewIntervalMs,
  renewRetryMs,
  type Lease,
} from '../model/lease.js';
import { describeError } from '../errors.js';
import type { Clock } from '../util/clock.js';
import type { Logger } from '../util/log.js';
import type { MemberValue } from '../model/values.js';
import type { Dcs } from './types.js';

export interface LeaseKeeperOptions {
  dcs: Dcs;
  clock: Clock;
  logger: Logger;
  /** the margin for a lease of this granted ttl (model/lease.ts leaseMarginMs); read at each grant and renewal */
  marginMs: (ttlSeconds: number) => number;
  /** called when etcd says the lease no longer exists */
  onLost: () => void;
}

/** The keys a lease move takes along (see Dcs.moveLease). */
export interface MoveKeys {
  name: string;
  /** the member value to put on the new lease; null leaves the member key to the next put */
  member: MemberValue | null;
  leader: boolean;
}

export class LeaseKeeper {
  private lease: Lease | null = null;
  /** listeners told after every grant, renewal, move and loss (the fencing guard is fed from here) */
  private readonly listeners: (() => void)[] = [];
  private timer: NodeJS.Timeout | null = null;
  private retryTimer: NodeJS.Timeout | null = null;
  private renewing = false;
  /** writes bound to the lease and moves run one at a time, so that no write lands on a lease being left */
  private serial: Promise<unknown> = Promise.resolve();
  /** for metrics */
  renewals = 0;
  renewalFailures = 0;

  constructor(private readonly o: LeaseKeeperOptions) {}

  /** The held lease's id; null before the first grant and once etcd said it is gone. */
  get id(): string | null {
    return this.lease?.id ?? null;
  }

  /** When the grant or last acknowledged keep-alive of the held lease was SENT; null before the first grant. */
  get lastRenewalMs(): number | null {
    return this.lease?.lastRenewalMs ?? null;
  }

  /** The lease as a value (for snapshots); null before the first grant. */
  current(): Lease | null {
    return this.lease;
  }

  /**
   * The moment from which the holder must no longer act or accept writes:
   * last renewal sent + granted ttl - margin (during a lease move, the earlier
   * of both leases'). Minus infinity before the first grant.
   */
  deadlineMs(): number {
    return leaseDeadlineMs(this.lease);
  }

  /** The lease is held and its deadline has not come. */
  trusted(): boolean {
    return leaseTrusted(this.lease, this.o.clock.now());
  }

  /** Called after each grant, successful renewal, move and loss of the lease. */
  onChange(listener: () => void): void {
    this.listeners.push(listener);
  }

  private changed(): void {
    for (const listener of this.listeners) listener();
  }

  async grant(ttlSeconds: number): Promise<void> {
    const sentAtMs = this.o.clock.now();
    const id = await this.o.dcs.grantLease(ttlSeconds);
    this.lease = grantedLease(id, ttlSeconds, sentAtMs, this.o.marginMs(ttlSeconds));
    this.startTimer(ttlSeconds);
    this.o.logger.info({ ttlSeconds }, 'lease granted');
    this.changed();
  }

  /**
   * Moves the holder's keys to a new lease granted with `ttlSeconds`, in one
   * transaction, then revokes the old lease. Until the transaction is known to
   * have committed, the keys may be on either lease: the earlier deadline
   * rules. A refused move leaves everything on the old lease and answers
   * false; an unknown outcome throws and keeps the new lease, and the next
   * move settles it with the same lease.
   */
  move(ttlSeconds: number, keys: MoveKeys): Promise<boolean> {
    return this.serially(async () => {
      const from = this.lease;
      if (from === null || from.id === null) return false;
      let to = from.moving;
      if (to === undefined) {
        const sentAtMs = this.o.clock.now();
        const id = await this.o.dcs.grantLease(ttlSeconds);
        to = { id, ttlSeconds, lastRenewalMs: sentAtMs };
        if (this.lease?.id !== from.id) {
          // the old lease went while the new one was granted: nothing to move
          await this.revokeQuietly(id);
          return false;
        }
        this.lease = moveStarted(this.lease, to);
        this.changed();
      }
      const moved = await this.o.dcs.moveLease({ name: keys.name, fromLeaseId: from.id, toLeaseId: to.id, member: keys.member, leader: keys.leader });
      const now = this.lease;
      if (now === null) return false;
      if (!moved) {
        this.lease = moveAbandoned(now);
        this.changed();
        await this.revokeQuietly(to.id);
        return false;
      }
      this.lease = moveCommitted(now.moving === undefined ? moveStarted(now, to) : now, this.o.marginMs(to.ttlSeconds));
      this.startTimer(to.ttlSeconds);
      this.o.logger.info({ fromTtlSeconds: from.ttlSeconds, ttlSeconds: to.ttlSeconds }, 'keys moved to a lease with the new ttl');
      this.changed();
      await this.revokeQuietly(from.id);
      return true;
    });
  }

  /**
   * Runs a write bound to the held lease, never while a move is under way.
   * Resolves null without writing when no lease is held.
   */
  withLease<T>(write: (leaseId: string) => Promise<T>): Promise<T | null> {
    return this.serially(async () => (this.lease?.id ? write(this.lease.id) : null));
  }

  private serially<T>(run: () => Promise<T>): Promise<T> {
    const next = this.serial.then(run, run);
    this.serial = next.catch(() => undefined);
    return next;
  }

  private async renew(): Promise<void> {
    const lease = this.lease;
    if (lease === null || lease.id === null || this.renewing) return;
    this.renewing = true;
    const ids = lease.moving === undefined ? [lease.id] : [lease.id, lease.moving.id];
    let failed = false;
    try {
      for (const id of ids) {
        const sentAtMs = this.o.clock.now();
        let alive: boolean;
        try {
          alive = await this.o.dcs.keepAlive(id);
        } catch (err) {
          failed = true;
          this.renewalFailures += 1;
          this.o.logger.warn({ err: describeError(err) }, 'lease renewal failed');
          continue;
        }
        const now = this.lease;
        if (now === null || (now.id !== id && now.moving?.id !== id)) continue;
        if (alive) {
          this.lease = renewedLease(now, id, sentAtMs, now.id === id ? this.o.marginMs(now.ttlSeconds) : now.marginMs);
          this.renewals += 1;
          this.changed();
        } else {
          // The keys may be bound to the lease being moved to as well: its loss is a loss too.
          this.o.logger.warn({ moving: now.id !== id }, 'etcd says the lease is gone');
          this.lease = lostLease(now);
          this.stopTimer();
          this.o.onLost();
          this.changed();
          return;
        }
      }
    } finally {
      this.renewing = false;
    }
    // the deadline runs from the last renewal: try again soon, not a whole interval later
    if (failed && (this.lease?.id ?? null) !== null) this.scheduleRetry();
  }

  /** Ends the lease now (clean shutdown): every key bound to it goes at once. */
  async revoke(): Promise<void> {
    const lease = this.lease;
    this.stopTimer();
    if (lease === null) return;
    this.lease = lostLease(lease);
    if (lease.moving !== undefined) await this.revokeQuietly(lease.moving.id);
    if (lease.id !== null) await this.o.dcs.revokeLease(lease.id);
  }

  private async revokeQuietly(id: string): Promise<void> {
    // a lease left behind expires on its own with nothing bound to it
    await this.o.dcs.revokeLease(id).catch((err: unknown) => this.o.logger.warn({ err: describeError(err) }, 'could not revoke a lease no longer used'));
  }

  private startTimer(ttlSeconds: number): void {
    this.stopTimer();
    this.timer = setInterval(() => void this.renew(), renewIntervalMs(ttlSeconds));
  }

  private scheduleRetry(): void {
    if (this.retryTimer !== null) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      void this.renew();
    }, renewRetryMs);
  }

  stopTimer(): void {
    if (this.timer !== null) clearInterval(this.timer);
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.timer = null;
    this.retryTimer = null;
  }
}
