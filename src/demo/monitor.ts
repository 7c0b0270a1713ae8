/**
 * Follows the cluster for the live view: members from etcd (on every change,
 * through a watch, and once a second for lag), the agents' own events, and the
 * changes a viewer cares about (see changes.ts).
 */
import type { ClusterView, EventValue } from '../model/values.js';
import type { Dcs } from '../dcs/types.js';
import { describeError } from '../errors.js';
import { lagBytes } from '../model/lsn.js';
import { diffCluster, initialTracking, type DemoEvent, type Failover, type Tone, type Tracked } from './changes.js';

export interface MemberLine {
  name: string;
  role: string;
  state: string;
  timeline: number | null;
  lagBytes: number | null;
  streaming: boolean;
  leader: boolean;
  reason: string;
  agentPid: number | null;
  postmasterPid: number | null;
  /** since the agent last published: a dead agent's key lives on until its lease runs out */
  silentMs: number;
}

const keptEvents = 200;
const pollMs = 1000;
/** at most this often on a burst of watch notifications (every agent writes its key every loop) */
const minReadGapMs = 250;

/** Agent events that only repeat what the member table shows. */
const quietKinds = new Set(['starting']);

const toneOf = (kind: string): Tone => (kind === 'promoted' ? 'good' : kind === 'fenced' || kind === 'failed' ? 'bad' : kind === 'rewinding' || kind === 'stopped' ? 'warn' : 'info');

export function memberLines(view: ClusterView, nowMs: number): MemberLine[] {
  const leaderName = view.leader?.value.name ?? null;
  const leaderLsn = view.members.find((m) => m.name === leaderName)?.walLsn ?? view.status?.value.walLsn ?? null;
  return [...view.members]
    .sort((a, b) => a.name.localeCompare(b.name))
    .map((m) => ({
      name: m.name,
      role: m.name === leaderName ? 'leader' : m.role,
      state: m.state,
      timeline: m.timeline,
      lagBytes: m.name === leaderName ? 0 : m.role === 'replica' && leaderLsn !== null ? lagBytes(leaderLsn, m) : null,
      streaming: m.streaming,
      leader: m.name === leaderName,
      reason: m.reason,
      agentPid: m.agentPid,
      postmasterPid: m.postmasterPid,
      silentMs: Math.max(0, nowMs - m.updatedAtMs),
    }));
}

export class ClusterMonitor {
  members: MemberLine[] = [];
  leader: string | null = null;
  etcdError: string | null = null;
  readonly events: DemoEvent[] = [];
  readonly failovers: Failover[] = [];
  /** called for each new event, for the plain (non-TTY) output */
  onEvent: (e: DemoEvent) => void = () => undefined;
  private tracked: Tracked = initialTracking();
  private first = true;
  private seenAgentEvents = new Set<string>();
  private timer: NodeJS.Timeout | null = null;
  private stopWatch: (() => Promise<void>) | null = null;
  private reading: Promise<void> | null = null;
  private lastReadMs = 0;
  private stopped = false;

  constructor(private readonly dcs: Dcs, private readonly sinceMs: number, private readonly now: () => number = Date.now) {}

  async start(): Promise<void> {
    await this.refresh();
    this.timer = setInterval(() => void this.refresh(), pollMs);
    try {
      this.stopWatch = await this.dcs.watch(() => {
        if (this.now() - this.lastReadMs >= minReadGapMs) void this.refresh();
      });
    } catch (err) {
      // the poll still runs: the view is a second late instead of instant
      this.note('demo', `cannot watch etcd (${describeError(err)}); polling instead`, 'warn');
    }
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    await this.stopWatch?.().catch(() => undefined);
    await this.reading;
  }

  note(source: string, text: string, tone: Tone): void {
    this.push({ atMs: this.now(), source, text, tone });
  }

  /** Reads now (or joins a read in flight). */
  refresh(): Promise<void> {
    if (this.stopped) return Promise.resolve();
    this.reading ??= this.read().finally(() => (this.reading = null));
    return this.reading;
  }

  private async read(): Promise<void> {
    this.lastReadMs = this.now();
    try {
      const [view, agentEvents] = await Promise.all([this.dcs.readCluster(), this.dcs.listEvents(30)]);
      if (this.etcdError !== null) this.note('demo', 'etcd answers again', 'good');
      this.etcdError = null;
      this.apply(view, agentEvents);
    } catch (err) {
      if (this.etcdError === null) this.note('demo', `cannot read etcd: ${describeError(err)}`, 'bad');
      this.etcdError = describeError(err);
    }
  }

  private apply(view: ClusterView, agentEvents: EventValue[]): void {
    const now = this.now();
    // the newest events only: one that scrolled out of them cannot come back
    const listed = new Set<string>();
    for (const e of agentEvents) {
      const key = `${e.atMs}|${e.source}|${e.kind}|${e.message}`;
      listed.add(key);
      if (this.seenAgentEvents.has(key) || e.atMs < this.sinceMs || quietKinds.has(e.kind)) continue;
      this.push({ atMs: e.atMs, source: e.source, text: `${e.kind}: ${e.message}`, tone: toneOf(e.kind) });
    }
    this.seenAgentEvents = listed;
    const { next, events, failover } = diffCluster(this.tracked, view, now, this.first);
    this.first = false;
    this.tracked = next;
    for (const e of events) this.push(e);
    if (failover !== null) this.failovers.push(failover);
    this.members = memberLines(view, now);
    this.leader = next.leader;
  }

  private push(e: DemoEvent): void {
    // agents' events carry their own time and may arrive after ours: keep the list in time order
    let at = this.events.length;
    while (at > 0 && this.events[at - 1]!.atMs > e.atMs) at--;
    this.events.splice(at, 0, e);
    if (this.events.length > keptEvents) this.events.shift();
    this.onEvent(e);
  }
}
