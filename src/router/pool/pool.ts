/**
 * The pooled rw endpoint: PgBouncer in transaction mode, following the rw
 * route. While the router holds rw (a switchover pending, no leader, etcd
 * unreadable) the pool is PAUSEd: transactions in flight finish, PgBouncer lets
 * go of its server connections and new queries wait in it. Once rw names the
 * new leader, pgbouncer.ini is rewritten, RELOADed and RESUMEd, so a client
 * that keeps its connection to the pool sees a pause, never an error. When the
 * switchover names its target, the pool is pointed at it as soon as it is
 * paused (a paused PgBouncer opens no server connection): once the target is
 * promoted, only the RESUME is left.
 */
import { describeError } from '../../errors.js';
import type { Logger } from '../../util/log.js';
import { SerialRuns } from '../../util/serial.js';
import { sameBackend, type Backend, type Routes } from '../route.js';
import type { Pgbouncer } from './pgbouncer.js';

/** What the pool needs from PgBouncer (a fake in unit tests). */
export type PoolProcess = Pick<Pgbouncer, 'writeIni' | 'admin'>;

export interface PoolTimings {
  /** how long a PAUSE may wait for transactions in flight; past it the pool moves anyway (the old leader ends them) */
  pauseTimeoutMs: number;
  /** every other admin command */
  commandTimeoutMs: number;
  /** after a failed step, the next try */
  retryMs: number;
}

export const defaultPoolTimings: PoolTimings = { pauseTimeoutMs: 5000, commandTimeoutMs: 3000, retryMs: 500 };

/** PgBouncer's refusal of a PAUSE or RESUME it is already in (a step cut short before): done all the same. */
const already =
  (answer: RegExp) =>
  (err: unknown): 'done' => {
    if (err instanceof Error && answer.test(err.message)) return 'done';
    throw err;
  };

export interface PoolStatus {
  target: string | null;
  paused: boolean;
  moves: number;
  pauses: number;
  pauseTimeouts: number;
}

export class PooledEndpoint {
  private wanted: { target: Backend | null; hold: boolean; next: Backend | null } = { target: null, hold: true, next: null };
  /** the rw target pgbouncer.ini names now (null: none yet) */
  private configured: Backend | null = null;
  /** PgBouncer starts without a database: nothing to pause until the first leader */
  private paused = false;
  private stopped = false;
  private retryTimer: NodeJS.Timeout | null = null;
  private readonly runs = new SerialRuns(() => this.reconcile(), () => this.stopped);
  private readonly counts = { moves: 0, pauses: 0, pauseTimeouts: 0 };
  /** failed steps in a row, for the retry's back-off */
  private failures = 0;
  /** follow() calls waiting for a PAUSE */
  private onPaused: (() => void)[] = [];

  constructor(
    private readonly bouncer: PoolProcess,
    private readonly logger: Logger,
    private readonly timings: PoolTimings = defaultPoolTimings,
  ) {}

  /**
   * Takes the newest routes; the pool catches up in the background, one step
   * at a time. Resolves once it has caught up, or for a hold once PgBouncer is
   * paused (the move to a switchover's target may still go on: the router
   * reports its hold without waiting for it).
   */
  follow(routes: Routes): Promise<void> {
    this.wanted = { target: routes.rw, hold: routes.holdRw, next: routes.rwNext };
    const run = this.runs.run();
    if (!routes.holdRw) return run;
    return Promise.race([run, new Promise<void>((resolve) => (this.paused ? resolve() : this.onPaused.push(resolve)))]);
  }

  /** Resolves once the steps in flight are done. */
  async caughtUp(): Promise<void> {
    await this.runs.inFlight;
  }

  status(): PoolStatus {
    return { target: this.configured === null ? null : `${this.configured.name} ${this.configured.host}:${this.configured.port}`, paused: this.paused, ...this.counts };
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    await this.runs.inFlight?.catch(() => undefined);
  }

  private async reconcile(): Promise<void> {
    try {
      await this.step();
      this.failures = 0;
    } catch (err) {
      // doubling up to 5 s: a PgBouncer that keeps refusing does not flood the log
      const retryInMs = Math.min(this.timings.retryMs * 2 ** this.failures, 5000);
      this.failures++;
      this.logger.error({ err: describeError(err), retryInMs }, 'the pool could not follow the rw route; retrying');
      if (this.retryTimer === null && !this.stopped) {
        this.retryTimer = setTimeout(() => {
          this.retryTimer = null;
          void this.runs.run();
        }, retryInMs);
      }
    }
  }

  /** PAUSE, then move, then RESUME, each only when needed; a newer route met midway is taken on the next run. */
  private async step(): Promise<void> {
    const { target, hold, next } = this.wanted;
    // before the first leader there is nothing to pause; with one known, a pause finds no server connection
    if (hold && !this.paused && (this.configured !== null || target !== null)) {
      const startedMs = Date.now();
      this.counts.pauses++;
      const outcome = await this.bouncer.admin(['PAUSE'], this.timings.pauseTimeoutMs).catch(already(/already suspended\/paused/));
      // a PAUSE cut short still holds new queries; transactions left on the old leader end with it
      if (outcome === 'timeout') this.counts.pauseTimeouts++;
      this.paused = true;
      this.logger.info({ outcome, tookMs: Date.now() - startedMs, from: this.configured?.name ?? null }, 'pool paused: queries wait for the rw route');
      for (const resolve of this.onPaused.splice(0)) resolve();
    }
    // a hold that came meanwhile pauses first (follow() asked for the run after this one)
    if (this.wanted.hold && !hold) return;
    const resume = !hold && this.paused && target !== null;
    // paused for a switchover that names its target: point at the target now, leaving only the RESUME for later
    const goal = hold && this.paused && next !== null ? next : target;
    if (goal !== null && !sameBackend(goal, this.configured)) {
      await this.bouncer.writeIni(goal);
      // RECONNECT: server connections to the old target close as soon as they are released (none while paused);
      // and RESUME in the same round when the hold is over
      const commands = [...(this.configured === null ? ['RELOAD'] : ['RELOAD', 'RECONNECT']), ...(resume ? ['RESUME'] : [])];
      await this.bouncer
        .admin(commands, this.timings.commandTimeoutMs)
        .catch(resume ? already(/not paused\/suspended/) : undefined)
        .then((o) => this.failOnTimeout(o, commands));
      this.logger.info({ from: this.configured?.name ?? null, to: goal.name, paused: !resume && this.paused }, `pool -> ${goal.name} (${goal.host}:${goal.port})`);
      this.configured = goal;
      this.counts.moves++;
    } else if (resume) {
      await this.bouncer.admin(['RESUME'], this.timings.commandTimeoutMs).catch(already(/not paused\/suspended/)).then((o) => this.failOnTimeout(o, ['RESUME']));
    }
    if (resume) {
      this.paused = false;
      this.logger.info({ to: target.name }, 'pool resumed');
    }
  }

  private failOnTimeout(outcome: 'done' | 'timeout', commands: string[]): void {
    if (outcome === 'timeout') throw new Error(`PgBouncer did not answer ${commands.join('; ')} within ${this.timings.commandTimeoutMs} ms`);
  }
}
