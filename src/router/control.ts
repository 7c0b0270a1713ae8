/**
 * The router's control plane: follows the cluster through an etcd watch,
 * recomputes the routes on every change and hands them to the engine. The
 * changes themselves make the view (dcs/kept-keys.ts): no read of etcd
 * between a change and its route. A slow re-read catches anything a broken
 * watch missed; it also notices when etcd stops answering, and after ttl
 * without a successful read the router fails closed (no rw backend) until
 * etcd answers again.
 */
import type { Dcs, KeptCluster } from '../dcs/types.js';
import type { ClusterView } from '../model/values.js';
import { describeError } from '../errors.js';
import type { Clock } from '../util/clock.js';
import type { Logger } from '../util/log.js';
import { SerialRuns } from '../util/serial.js';
import { computeRoutes, defaultRouteOptions, failClosed, noRoutes, sameRoutes, type RouteOptions, type Routes } from './route.js';

/** The two things the router needs from the store: one consistent read and a watch. */
export type RouterDcs = Pick<Dcs, 'readCluster' | 'keepCluster'>;

export interface RouteSink {
  apply(routes: Routes): Promise<void>;
}

export interface ControlOptions {
  route: Partial<RouteOptions>;
  /** the safety re-read; changes themselves arrive through the watch */
  rereadMs: number;
  /** how often the age of the last good read is checked against ttl */
  freshnessCheckMs: number;
  /** told each time the engine applied new routes (the router's key reports the hold) */
  onApplied?: (routes: Routes) => void;
}

export const defaultControlOptions: ControlOptions = { route: {}, rereadMs: 2000, freshnessCheckMs: 250 };

export class RouterControl {
  /** the routes the engine was last told */
  current: Routes = noRoutes;
  private readonly routeOptions: RouteOptions;
  private ttlSeconds: number;
  private lastGoodReadMs: number;
  private closedBecauseStale = false;
  /** the reads in flight, ending once no further read was asked for */
  private readonly reads = new SerialRuns(() => this.readOnce(), () => this.stopped);
  private stopped = false;
  private kept: KeptCluster | null = null;
  private timers: NodeJS.Timeout[] = [];
  /** applies run one at a time, in order; only the newest pending one matters */
  private applying: Promise<void> = Promise.resolve();
  /** bumped on every change of routes: an apply queued behind a newer one is skipped */
  private generation = 0;
  private etcdErrorLogged = false;

  constructor(
    private readonly dcs: RouterDcs,
    private readonly engine: RouteSink,
    private readonly clock: Clock,
    private readonly logger: Logger,
    private readonly options: ControlOptions = defaultControlOptions,
  ) {
    this.routeOptions = { ...defaultRouteOptions, ...options.route };
    this.ttlSeconds = this.routeOptions.ttlSeconds;
    // a router that starts without etcd waits one ttl before it says so, like one that lost it
    this.lastGoodReadMs = clock.now();
  }

  /** when etcd was last read in time (the clock's milliseconds) */
  get lastReadAtMs(): number {
    return this.lastGoodReadMs;
  }

  /** true while no read succeeded for longer than ttl: every rw connection is refused */
  get failingClosed(): boolean {
    return this.closedBecauseStale;
  }

  async start(): Promise<void> {
    void this.keepWatching();
    this.timers.push(setInterval(() => this.refresh(), this.options.rereadMs));
    this.timers.push(setInterval(() => this.checkFreshness(), this.options.freshnessCheckMs));
    await this.refresh();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const timer of this.timers) clearInterval(timer);
    this.timers = [];
    if (this.kept) await this.kept.stop().catch(() => undefined);
    await this.applying;
  }

  private async keepWatching(): Promise<void> {
    let backoffMs = 500;
    while (!this.stopped && this.kept === null) {
      try {
        this.kept = await this.dcs.keepCluster({ onView: (view) => this.follow(view), onResync: () => void this.refresh() });
        // changes between the first read and the watch going live would be missed otherwise
        void this.refresh();
      } catch (err) {
        this.logger.warn({ err: describeError(err), retryInMs: backoffMs }, 'cannot watch etcd yet; retrying');
        await new Promise((resolve) => setTimeout(resolve, backoffMs));
        backoffMs = Math.min(backoffMs * 2, 10_000);
      }
    }
  }

  /**
   * Reads etcd once (or once more after the read in flight) and applies the
   * routes; resolves when a read that started after this call is done.
   */
  refresh(): Promise<void> {
    return this.reads.run();
  }

  private async readOnce(): Promise<void> {
    const startedMs = this.clock.now();
    let routes: Routes;
    let revision: string;
    try {
      // until the watch is live, a plain read: nothing to keep the view current yet
      const view = this.kept === null ? await this.dcs.readCluster() : await this.kept.read();
      // a read that took longer than ttl describes a cluster that may have moved on
      if (this.clock.now() - startedMs > this.ttlSeconds * 1000) return;
      this.lastGoodReadMs = startedMs;
      routes = this.routesOf(view);
      revision = view.revision;
    } catch (err) {
      if (!this.etcdErrorLogged) this.logger.warn({ err: describeError(err) }, 'cannot read etcd');
      this.etcdErrorLogged = true;
      this.checkFreshness();
      return;
    }
    if (this.etcdErrorLogged || this.closedBecauseStale) this.logger.info('etcd readable again');
    this.etcdErrorLogged = false;
    this.closedBecauseStale = false;
    this.setRoutes(routes, { revision });
  }

  /**
   * A change the watch brought, with the view it makes. Reads alone say that
   * etcd answers: a router failing closed stays closed until one does.
   */
  private follow(view: ClusterView): void {
    if (this.stopped || this.closedBecauseStale) return;
    this.setRoutes(this.routesOf(view), { revision: view.revision });
  }

  /** The routes `view` asks for; its config's ttl is the one from now on. */
  private routesOf(view: ClusterView): Routes {
    if (view.config !== null) this.ttlSeconds = view.config.value.ttl;
    return computeRoutes(view, this.clock.now(), { ...this.routeOptions, ttlSeconds: this.ttlSeconds });
  }

  /** Fails closed once no read has succeeded for longer than ttl. */
  checkFreshness(): void {
    if (this.stopped || this.closedBecauseStale) return;
    const ageMs = this.clock.now() - this.lastGoodReadMs;
    if (ageMs <= this.ttlSeconds * 1000) return;
    this.closedBecauseStale = true;
    const why = `etcd not read for ${(ageMs / 1000).toFixed(1)} s (ttl ${this.ttlSeconds} s)`;
    this.logger.error({ ageMs, ttlSeconds: this.ttlSeconds }, `${why}: failing closed`);
    this.setRoutes(failClosed(this.current, why), { revision: null });
  }

  private setRoutes(routes: Routes, context: { revision: string | null }): void {
    if (sameRoutes(routes, this.current)) {
      this.current = { ...this.current, reason: routes.reason };
      return;
    }
    this.current = routes;
    const generation = ++this.generation;
    const decidedAtMs = this.clock.now();
    this.applying = this.applying.then(async () => {
      // a newer decision already superseded this one
      if (generation !== this.generation || this.stopped) return;
      try {
        await this.engine.apply(routes);
        this.options.onApplied?.(routes);
        this.logger.info(
          {
            rw: routes.rw?.name ?? null,
            holdRw: routes.holdRw,
            ro: routes.ro.map((b) => b.name),
            roDraining: routes.roDraining.map((b) => b.name),
            revision: context.revision,
            appliedInMs: this.clock.now() - decidedAtMs,
          },
          `routes: ${routes.reason}`,
        );
      } catch (err) {
        this.logger.error({ err: describeError(err) }, 'the engine could not apply the routes; retrying on the next read');
        // forget them so the next read applies again
        if (generation === this.generation) this.current = noRoutes;
      }
    });
  }
}
