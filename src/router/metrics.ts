/**
 * The router's /metrics and /status: connections per endpoint and member,
 * holds, refusals and bytes from the engine's counters, and the routes the
 * control plane applied. Read at scrape time; one engine read serves every
 * metric of a scrape.
 */
import { Counter, Gauge, Registry } from 'prom-client';
import { collectProcessMetrics } from '../util/metrics.js';
import type { Routes } from './route.js';
import type { EndpointStats, RouterEngine } from './engines/types.js';

/** What the metrics read of the control plane (RouterControl has it). */
export interface RoutesView {
  readonly current: Routes;
  readonly lastReadAtMs: number;
  readonly failingClosed: boolean;
}

export type RouterStats = Record<'rw' | 'ro', EndpointStats>;

/** The router's state as GET /status answers it (the dashboard reads it). */
export interface RouterStatus {
  /** the engine that serves rw and ro, and why it was chosen (--engine auto) */
  engine: string;
  engineWhy: string;
  routes: { rw: string | null; holdRw: boolean; ro: string[]; roDraining: string[]; reason: string };
  failingClosed: boolean;
  lastReadAtMs: number;
  endpoints: RouterStats;
}

const endpoints = ['rw', 'ro'] as const;
/** A scrape reads the engine once: HAProxy answers over a socket. */
const statsReuseMs = 250;

export class RouterMetrics {
  readonly registry = new Registry();
  private cached: { atMs: number; stats: Promise<RouterStats> } | null = null;

  constructor(
    private readonly engine: Pick<RouterEngine, 'name' | 'stats'>,
    private readonly routes: RoutesView,
    cluster: string,
    private readonly engineWhy = '',
  ) {
    this.registry.setDefaultLabels({ cluster });
    collectProcessMetrics(this.registry);
    this.define();
  }

  private stats(): Promise<RouterStats> {
    const now = Date.now();
    if (this.cached === null || now - this.cached.atMs > statsReuseMs) this.cached = { atMs: now, stats: this.engine.stats() };
    return this.cached.stats;
  }

  async status(): Promise<RouterStatus> {
    const r = this.routes.current;
    return {
      engine: this.engine.name,
      engineWhy: this.engineWhy,
      routes: { rw: r.rw?.name ?? null, holdRw: r.holdRw, ro: r.ro.map((b) => b.name), roDraining: r.roDraining.map((b) => b.name), reason: r.reason },
      failingClosed: this.routes.failingClosed,
      lastReadAtMs: this.routes.lastReadAtMs,
      endpoints: await this.stats(),
    };
  }

  private define(): void {
    const registers = [this.registry];
    const stats = () => this.stats();
    new Gauge({
      name: 'keel_router_connections',
      help: 'client connections forwarded now, by endpoint and member',
      labelNames: ['endpoint', 'member'],
      registers,
      async collect() {
        const s = await stats();
        this.reset();
        for (const endpoint of endpoints) for (const [member, n] of Object.entries(s[endpoint].connections)) this.set({ endpoint, member }, n);
      },
    });
    new Gauge({
      name: 'keel_router_waiting_connections',
      help: 'connections accepted and not forwarded yet: held for a backend, or still sending their first message',
      labelNames: ['endpoint'],
      registers,
      async collect() {
        const s = await stats();
        for (const endpoint of endpoints) this.set({ endpoint }, s[endpoint].waiting);
      },
    });
    const counter = (name: string, help: string, read: (e: EndpointStats) => number | undefined) =>
      new Counter({
        name,
        help,
        labelNames: ['endpoint'],
        registers,
        async collect() {
          const s = await stats();
          this.reset();
          for (const endpoint of endpoints) {
            const value = read(s[endpoint]);
            if (value !== undefined) this.inc({ endpoint }, value);
          }
        },
      });
    counter('keel_router_accepted_connections_total', 'client connections accepted', (e) => e.acceptedTotal);
    counter('keel_router_holds_total', 'connections that had to wait for a backend (no leader, a switchover, no replica)', (e) => e.heldTotal);
    counter('keel_router_hold_timeouts_total', 'waits that ended without a backend (the client was told and closed)', (e) => e.holdTimeoutsTotal);
    counter('keel_router_refused_connections_total', 'connections closed at once because the endpoint held --max-connections', (e) => e.refusedTotal);
    counter('keel_router_first_bytes_timeouts_total', 'connections closed because their first message did not come within --first-bytes-timeout; builtin engine only', (e) => e.firstBytesTimeoutsTotal);
    counter('keel_router_received_bytes_total', 'bytes received from clients', (e) => e.receivedBytesTotal);
    counter('keel_router_sent_bytes_total', 'bytes sent to clients', (e) => e.sentBytesTotal);
    const routes = this.routes;
    new Gauge({
      name: 'keel_router_backend',
      help: '1 for each member an endpoint sends new connections to (rw: the leader; ro: the replicas within the lag bound)',
      labelNames: ['endpoint', 'member'],
      registers,
      collect() {
        this.reset();
        const r = routes.current;
        if (r.rw !== null && !r.holdRw) this.set({ endpoint: 'rw', member: r.rw.name }, 1);
        for (const b of r.ro) this.set({ endpoint: 'ro', member: b.name }, 1);
      },
    });
    new Gauge({
      name: 'keel_router_rw_held',
      help: '1 while new rw connections wait (a switchover, or no leader)',
      registers,
      collect() {
        this.set(routes.current.holdRw ? 1 : 0);
      },
    });
    new Gauge({
      name: 'keel_router_failing_closed',
      help: '1 while etcd has not been read for longer than ttl and the router refuses rw',
      registers,
      collect() {
        this.set(routes.failingClosed ? 1 : 0);
      },
    });
    new Gauge({
      name: 'keel_router_etcd_last_read_timestamp_seconds',
      help: 'when the router last read the cluster from etcd (Unix time)',
      registers,
      collect() {
        this.set(routes.lastReadAtMs / 1000);
      },
    });
  }
}
