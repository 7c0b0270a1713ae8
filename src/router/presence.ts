/**
 * The router's own key, `routers/<id>`, bound to a lease it keeps alive. It
 * says which switchover the router already holds new rw connections for, so a
 * leader handing over shuts down as soon as every router holds instead of
 * after a fixed wait (agent/actions.ts, drainClients). Best effort: a router
 * that cannot write (etcd away, a role without write access to `routers/`)
 * only costs the leader that wait, never a connection.
 */
import { hostname } from 'node:os';
import type { Dcs } from '../dcs/types.js';
import { describeError } from '../errors.js';
import type { Clock } from '../util/clock.js';
import type { Logger } from '../util/log.js';
import { SerialRuns } from '../util/serial.js';

export type PresenceDcs = Pick<Dcs, 'grantLease' | 'keepAlive' | 'revokeLease' | 'putRouter'>;

/** A router's default id: its host and rw port, in the characters a key part allows. */
export function defaultRouterId(rwPort: number, host = hostname()): string {
  const safeHost = host.replace(/[^A-Za-z0-9_.-]/g, '_').slice(0, 100) || 'router';
  return `${safeHost}:${rwPort}`;
}

export class RouterPresence {
  private leaseId: string | null = null;
  private holding: number | null = null;
  /** what the key says now; undefined: not written on the current lease */
  private written: number | null | undefined = undefined;
  private stopped = false;
  private timer: NodeJS.Timeout | null = null;
  private failureLogged = false;
  private readonly writes = new SerialRuns(() => this.sync(), () => this.stopped);

  constructor(
    private readonly dcs: PresenceDcs,
    readonly id: string,
    private readonly clock: Clock,
    private readonly logger: Logger,
    private readonly ttlSeconds = 10,
  ) {}

  /** Writes the key now and keeps its lease alive every third of the ttl. */
  start(): Promise<void> {
    this.timer = setInterval(() => void this.keepAlive(), (this.ttlSeconds * 1000) / 3);
    return this.writes.run();
  }

  /** The switchover (its requestedAtMs) the router now holds for, or null; written at once when it changed. */
  report(holding: number | null): Promise<void> {
    this.holding = holding;
    return this.writes.run();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== null) clearInterval(this.timer);
    await this.writes.inFlight?.catch(() => undefined);
    // the key goes with the lease at once, so no leader waits for a router that is gone
    if (this.leaseId !== null) await this.dcs.revokeLease(this.leaseId).catch(() => undefined);
    this.leaseId = null;
  }

  private async keepAlive(): Promise<void> {
    if (this.stopped || this.leaseId === null) {
      void this.writes.run();
      return;
    }
    const alive = await this.dcs.keepAlive(this.leaseId).catch(() => true);
    if (!alive) {
      // the lease ran out (etcd was away longer than the ttl): a new one, and the key again
      this.leaseId = null;
      this.written = undefined;
    }
    // also retries a write that failed
    if (this.written !== this.holding || this.leaseId === null) void this.writes.run();
  }

  private async sync(): Promise<void> {
    const holding = this.holding;
    if (this.leaseId !== null && this.written === holding) return;
    try {
      if (this.leaseId === null) {
        this.leaseId = await this.dcs.grantLease(this.ttlSeconds);
        this.written = undefined;
      }
      await this.dcs.putRouter({ v: 1, id: this.id, holding, atMs: this.clock.now() }, this.leaseId);
      this.written = holding;
      if (this.failureLogged) this.logger.info({ id: this.id }, 'router key written again');
      this.failureLogged = false;
    } catch (err) {
      if (!this.failureLogged) {
        this.logger.warn({ err: describeError(err), id: this.id }, 'cannot write the router key: leaders handing over wait their full grace for this router');
      }
      this.failureLogged = true;
    }
  }
}
