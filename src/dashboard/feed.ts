/**
 * The dashboard's one view of the cluster, kept current for every open page:
 * an etcd watch on the cluster's prefix wakes a read (at most one in flight,
 * reads at least minReadGapMs apart), a watch on `events/` passes each event
 * on as it is written, a timer takes the one-second samples, and the router's
 * /status and the backup hook are read on slower timers. Pages get what
 * changed through subscribe(); nothing in a page polls.
 */
import type { Dcs } from '../dcs/types.js';
import { describeError } from '../errors.js';
import type { ClusterView, ControllerValue, EventValue, SpecValue } from '../model/values.js';
import type { Clock } from '../util/clock.js';
import type { Logger } from '../util/log.js';
import { SerialRuns } from '../util/serial.js';
import { buildState, departedMembers, memberCards, type BackupSection, type BackupSource, type DashboardState, type MemberCard, type RouterPanel } from './model.js';
import { readRouterStatus } from './router-client.js';
import { Series, type Mark, type Sample } from './series.js';

export type FeedDcs = Pick<Dcs, 'readCluster' | 'readController' | 'readSpec' | 'watch' | 'watchEvents' | 'listEvents'>;

export interface FeedOptions {
  dcs: FeedDcs;
  cluster: string;
  clock: Clock;
  logger: Logger;
  /** the router whose /status shows its connections; null: no router panel */
  router: { url: string; ca: Buffer | null } | null;
  backups: BackupSource | null;
  timing?: Partial<FeedTiming>;
}

export interface FeedTiming {
  minReadGapMs: number;
  /** a read even without a watch event: catches what a broken watch missed */
  rereadMs: number;
  sampleMs: number;
  routerMs: number;
  backupMs: number;
  /** the state goes out at least this often, so that ages on the page move */
  republishMs: number;
}

const defaultTiming: FeedTiming = { minReadGapMs: 150, rereadMs: 5000, sampleMs: 1000, routerMs: 2000, backupMs: 10_000, republishMs: 5000 };
const keptEvents = 100;

export type FeedMessage = { type: 'state'; state: DashboardState } | { type: 'sample'; sample: Sample; mark: Mark | null } | { type: 'event'; event: EventValue };

/** Everything a page needs when it connects. */
export interface FeedSnapshot {
  state: DashboardState | null;
  samples: Sample[];
  marks: Mark[];
  events: EventValue[];
}

const identity = (e: EventValue): string => `${e.atMs}|${e.source}|${e.kind}|${e.message}`;

export class ClusterFeed {
  private readonly timing: FeedTiming;
  private readonly listeners = new Set<(message: FeedMessage) => void>();
  private readonly series = new Series();
  private readonly events: EventValue[] = [];
  private view: ClusterView | null = null;
  private controller: ControllerValue | null = null;
  private spec: SpecValue | null = null;
  private router: RouterPanel | null;
  private backups: BackupSection | null = null;
  private etcdError: string | null = null;
  private state: DashboardState | null = null;
  /** every card last shown, those of departed members included */
  private shown: MemberCard[] = [];
  private published = { signature: '', atMs: 0 };
  private readonly reads = new SerialRuns(() => this.readSoon(), () => this.stopped);
  private lastReadMs = 0;
  private stopped = false;
  private timers: NodeJS.Timeout[] = [];
  private stops: Array<() => Promise<void>> = [];

  constructor(private readonly o: FeedOptions) {
    this.timing = { ...defaultTiming, ...o.timing };
    this.router = o.router === null ? null : { url: o.router.url, status: null, error: 'not read yet' };
  }

  snapshot(): FeedSnapshot {
    return { state: this.state, samples: [...this.series.samples], marks: [...this.series.marks], events: [...this.events] };
  }

  subscribe(listener: (message: FeedMessage) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async start(): Promise<void> {
    void this.keepWatching();
    this.timers.push(setInterval(() => void this.refresh(), this.timing.rereadMs));
    this.timers.push(setInterval(() => this.sample(), this.timing.sampleMs));
    if (this.o.router !== null) this.timers.push(setInterval(() => void this.readRouter(), this.timing.routerMs));
    if (this.o.backups !== null) this.timers.push(setInterval(() => void this.readBackups(), this.timing.backupMs));
    await Promise.all([this.refresh(), this.readRouter(), this.readBackups()]);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const timer of this.timers) clearInterval(timer);
    this.timers = [];
    await Promise.all(this.stops.map((stop) => stop().catch(() => undefined)));
    this.stops = [];
    await this.reads.inFlight;
  }

  private emit(message: FeedMessage): void {
    for (const listener of this.listeners) listener(message);
  }

  /** The cluster's prefix and its events, each watched until stop(); a watch that cannot start yet is tried again. */
  private async keepWatching(): Promise<void> {
    let backoffMs = 500;
    for (let watching = false; !this.stopped && !watching; ) {
      try {
        this.stops.push(await this.o.dcs.watch(() => void this.refresh()));
        const early: EventValue[] = [];
        let live = false;
        this.stops.push(await this.o.dcs.watchEvents((event) => (live ? this.addEvent(event) : early.push(event))));
        // the watch starts before the listing, so that nothing falls between the two
        const listed = await this.o.dcs.listEvents(50);
        const seen = new Set(this.events.map(identity));
        for (const event of [...listed, ...early]) if (!seen.has(identity(event))) this.events.push(event), seen.add(identity(event));
        this.events.sort((a, b) => a.atMs - b.atMs);
        live = true;
        watching = true;
        void this.refresh();
      } catch (err) {
        this.o.logger.warn({ err: describeError(err), retryInMs: backoffMs }, 'cannot watch etcd yet; retrying');
        await Promise.all(this.stops.splice(0).map((stop) => stop().catch(() => undefined)));
        await new Promise((resolve) => setTimeout(resolve, backoffMs));
        backoffMs = Math.min(backoffMs * 2, 10_000);
      }
    }
  }

  private addEvent(event: EventValue): void {
    this.events.push(event);
    if (this.events.length > keptEvents) this.events.splice(0, this.events.length - keptEvents);
    this.emit({ type: 'event', event });
  }

  /** One read now, or one more after the read in flight. */
  refresh(): Promise<void> {
    return this.reads.run();
  }

  /** Reads keep minReadGapMs apart: every member's write wakes the watch. */
  private async readSoon(): Promise<void> {
    const waitMs = this.lastReadMs + this.timing.minReadGapMs - this.o.clock.now();
    if (waitMs > 0) await new Promise((resolve) => setTimeout(resolve, waitMs));
    this.lastReadMs = this.o.clock.now();
    await this.readOnce();
  }

  private async readOnce(): Promise<void> {
    try {
      const [view, controller, spec] = await Promise.all([this.o.dcs.readCluster(), this.o.dcs.readController(), this.o.dcs.readSpec()]);
      // a new leader moves the router's rw at once: show that without waiting for its next read
      if (this.view !== null && view.leader?.value.name !== this.view.leader?.value.name) setTimeout(() => void this.readRouter(), 300).unref();
      this.view = view;
      this.controller = controller?.value ?? null;
      this.spec = spec?.value ?? null;
      this.etcdError = null;
    } catch (err) {
      this.etcdError = describeError(err);
    }
    this.publish();
  }

  private async readRouter(): Promise<void> {
    const router = this.o.router;
    if (router === null || this.stopped) return;
    try {
      this.router = { url: router.url, status: await readRouterStatus(router.url, router.ca), error: null };
    } catch (err) {
      this.router = { url: router.url, status: null, error: describeError(err) };
    }
    this.publish();
  }

  private async readBackups(): Promise<void> {
    if (this.o.backups === null || this.stopped) return;
    try {
      this.backups = await this.o.backups();
    } catch (err) {
      this.backups = { summary: `backups cannot be read: ${describeError(err)}`, rows: [] };
    }
    this.publish();
  }

  /** Rebuilds the state and sends it when it changed (ages aside), or when it was last sent republishMs ago. */
  private publish(): void {
    if (this.view === null) return;
    const now = this.o.clock.now();
    const departed = departedMembers(this.shown, memberCards(this.view, now), now);
    this.state = buildState({ cluster: this.o.cluster, view: this.view, controller: this.controller, spec: this.spec, router: this.router, backups: this.backups, etcdError: this.etcdError, departed, nowMs: now });
    this.shown = this.state.zones.flatMap((z) => z.members);
    const signature = JSON.stringify({ ...this.state, atMs: 0, zones: this.state.zones.map((z) => z.members.map((m) => ({ ...m, ageMs: 0 }))) });
    if (signature === this.published.signature && now - this.published.atMs < this.timing.republishMs) return;
    this.published = { signature, atMs: now };
    this.emit({ type: 'state', state: this.state });
  }

  private sample(): void {
    if (this.view === null || this.stopped) return;
    const { sample, mark } = this.series.add(this.view, this.o.clock.now());
    this.emit({ type: 'sample', sample, mark });
  }
}
