import type { Dcs } from '../dcs/types.js';
import { describeError } from '../errors.js';
import type { Clock } from '../util/clock.js';
import type { Logger } from '../util/log.js';

/** After a failed renewal, the next try comes this soon rather than one interval later. */
const retryAfterFailureMs = 300;

/**
 * Keeps this agent's etcd lease alive on its own timer, apart from the loop,
 * so a slow action never delays a renewal. Renewal times are recorded when a
 * keep-alive is SENT: the server's expiry can only be later than that.
 */
export class LeaseKeeper {
  id: string | null = null;
  lastRenewalMs: number | null = null;
  /** listeners told after every grant, renewal and loss (the fencing guard is fed from here) */
  private readonly listeners: (() => void)[] = [];
  private timer: NodeJS.Timeout | null = null;
  private retryTimer: NodeJS.Timeout | null = null;
  private renewing = false;
  /** for metrics */
  renewals = 0;
  renewalFailures = 0;

  constructor(
    private readonly dcs: Dcs,
    private readonly clock: Clock,
    private readonly logger: Logger,
    /** called when etcd says the lease no longer exists */
    private readonly onLost: () => void,
  ) {}

  /** Called after each grant, successful renewal and loss of the lease. */
  onChange(listener: () => void): void {
    this.listeners.push(listener);
  }

  private changed(): void {
    for (const listener of this.listeners) listener();
  }

  async grant(ttlSeconds: number): Promise<void> {
    const sentAtMs = this.clock.now();
    const id = await this.dcs.grantLease(ttlSeconds);
    this.id = id;
    this.lastRenewalMs = sentAtMs;
    this.stopTimer();
    this.timer = setInterval(() => void this.renew(), Math.max(200, (ttlSeconds * 1000) / 3));
    this.logger.info({ ttlSeconds }, 'lease granted');
    this.changed();
  }

  private async renew(): Promise<void> {
    if (this.id === null || this.renewing) return;
    this.renewing = true;
    const id = this.id;
    const sentAtMs = this.clock.now();
    try {
      const alive = await this.dcs.keepAlive(id);
      if (this.id !== id) return;
      if (alive) {
        this.lastRenewalMs = sentAtMs;
        this.renewals += 1;
        this.changed();
      } else {
        this.logger.warn('etcd says the lease is gone');
        this.id = null;
        this.stopTimer();
        this.onLost();
        this.changed();
      }
    } catch (err) {
      this.renewalFailures += 1;
      this.logger.warn({ err: describeError(err) }, 'lease renewal failed');
      // the fence deadline runs from the last renewal: try again soon, not a whole interval later
      if (this.id === id) this.scheduleRetry();
    } finally {
      this.renewing = false;
    }
  }

  /** Ends the lease now (clean shutdown): every key bound to it goes at once. */
  async revoke(): Promise<void> {
    const id = this.id;
    this.stopTimer();
    this.id = null;
    if (id !== null) await this.dcs.revokeLease(id);
  }

  private scheduleRetry(): void {
    if (this.retryTimer !== null) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      void this.renew();
    }, retryAfterFailureMs);
  }

  stopTimer(): void {
    if (this.timer !== null) clearInterval(this.timer);
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.timer = null;
    this.retryTimer = null;
  }
}
