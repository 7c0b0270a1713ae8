/**
 * The dashboard's time series: one sample a second of the write rate (WAL
 * bytes a second on the leader), the read rates (transactions a second on
 * the leader and on the replicas), the largest replication lag, and a mark
 * at each change of leader. Pure: the feed hands in each view it reads and
 * the time.
 */
import { leaderPosition } from '../api/cluster.js';
import { lagBytes } from '../model/lsn.js';
import type { ClusterView } from '../model/values.js';

export interface Sample {
  atMs: number;
  /** WAL the leader wrote, bytes a second (null without a leader or before two of its positions) */
  walBytesPerSecond: number | null;
  /** transactions a second on the leader (writes and reads) and on all replicas together (reads) */
  leaderTps: number | null;
  replicaTps: number | null;
  /** the replica furthest behind, in bytes */
  maxLagBytes: number | null;
  leader: string | null;
}

export interface Mark {
  atMs: number;
  label: string;
}

/** Ten minutes of one-second samples. */
export const defaultCapacity = 600;

export class Series {
  readonly samples: Sample[] = [];
  readonly marks: Mark[] = [];
  /** the leader's last published position and when it published it */
  private position: { leader: string; lsn: number; atMs: number } | null = null;
  private rate: number | null = null;
  private started = false;

  constructor(private readonly capacity = defaultCapacity) {}

  /** Takes the sample for `nowMs` from the newest view; returns it and the mark it made, if any. */
  add(view: ClusterView, nowMs: number): { sample: Sample; mark: Mark | null } {
    const leaderName = view.leader?.value.name ?? null;
    if (!this.started) this.markHistory(view, nowMs);
    this.started = true;
    const leader = view.members.find((m) => m.name === leaderName) ?? null;
    this.trackRate(leader === null || leader.walLsn === null ? null : { leader: leader.name, lsn: leader.walLsn, atMs: leader.updatedAtMs });
    const replicas = view.members.filter((m) => m.name !== leaderName && m.role === 'replica');
    const position = leaderPosition(view);
    const lags = replicas.map((m) => lagBytes(position, m)).filter((x): x is number => x !== null);
    const tps = replicas.map((m) => m.metrics?.roQueriesPerSecond).filter((x): x is number => typeof x === 'number');
    const sample: Sample = {
      atMs: nowMs,
      walBytesPerSecond: this.rate,
      leaderTps: leader?.metrics?.roQueriesPerSecond ?? null,
      replicaTps: tps.length === 0 ? null : tps.reduce((a, b) => a + b, 0),
      maxLagBytes: lags.length === 0 ? null : Math.max(...lags),
      leader: leaderName,
    };
    const previous = this.samples.at(-1);
    const mark = previous !== undefined && previous.leader !== leaderName ? { atMs: nowMs, label: leaderName === null ? 'no leader' : `${leaderName} leads` } : null;
    this.samples.push(sample);
    if (mark !== null) this.marks.push(mark);
    this.trim(nowMs);
    return { sample, mark };
  }

  /** A rate needs two positions of the same leader at two publishing times; until a new one comes, the last rate holds. */
  private trackRate(next: { leader: string; lsn: number; atMs: number } | null): void {
    if (next === null) {
      this.position = null;
      this.rate = null;
      return;
    }
    const last = this.position;
    if (last === null || last.leader !== next.leader || next.lsn < last.lsn) {
      this.position = next;
      this.rate = null;
      return;
    }
    if (next.atMs <= last.atMs) return;
    this.rate = ((next.lsn - last.lsn) * 1000) / (next.atMs - last.atMs);
    this.position = next;
  }

  /** Timeline switches the cluster recorded within the window, for a dashboard that starts after them. */
  private markHistory(view: ClusterView, nowMs: number): void {
    for (const entry of view.history?.value.entries ?? []) {
      if (entry.atMs >= nowMs - this.capacity * 1000) this.marks.push({ atMs: entry.atMs, label: `${entry.leader} leads (timeline ${entry.timeline})` });
    }
  }

  private trim(nowMs: number): void {
    if (this.samples.length > this.capacity) this.samples.splice(0, this.samples.length - this.capacity);
    const oldest = this.samples[0]?.atMs ?? nowMs;
    while (this.marks.length > 0 && this.marks[0]!.atMs < oldest - 1000) this.marks.shift();
  }
}
