/**
 * Counters and latency histograms for the demo's workload. Pure: time comes in
 * as `nowMs`. Latencies go into logarithmic buckets (4 % wide), so a run of
 * hours keeps a fixed amount of memory and p99 stays accurate to a few percent.
 */

const smallestMs = 0.01;
const growth = 1.04;
const bucketCount = Math.ceil(Math.log(600_000 / smallestMs) / Math.log(growth)) + 1;

export class Histogram {
  readonly counts = new Uint32Array(bucketCount);
  count = 0;

  add(ms: number): void {
    const index = ms <= smallestMs ? 0 : Math.min(bucketCount - 1, Math.ceil(Math.log(ms / smallestMs) / Math.log(growth)));
    this.counts[index]! += 1;
    this.count += 1;
  }

  merge(other: Histogram): void {
    for (let i = 0; i < bucketCount; i++) this.counts[i]! += other.counts[i]!;
    this.count += other.count;
  }

  /** The upper edge of the bucket holding the q-th quantile (0 < q <= 1); null when empty. */
  percentile(q: number): number | null {
    if (this.count === 0) return null;
    const rank = Math.max(1, Math.ceil(q * this.count));
    let seen = 0;
    for (let i = 0; i < bucketCount; i++) {
      seen += this.counts[i]!;
      if (seen >= rank) return smallestMs * growth ** i;
    }
    return smallestMs * growth ** (bucketCount - 1);
  }
}

interface Second {
  second: number;
  ok: number;
  errors: number;
  latency: Histogram;
}

/** How many seconds of history the live view can ask for. */
const keptSeconds = 120;

/** One kind of operation (reads, writes): totals, per-second counts and latencies. */
export class OpStats {
  ok = 0;
  errors = 0;
  readonly latency = new Histogram();
  private readonly seconds: Second[] = [];

  private bucket(nowMs: number): Second {
    const second = Math.floor(nowMs / 1000);
    const last = this.seconds[this.seconds.length - 1];
    if (last !== undefined && last.second === second) return last;
    const fresh: Second = { second, ok: 0, errors: 0, latency: new Histogram() };
    this.seconds.push(fresh);
    while (this.seconds.length > keptSeconds) this.seconds.shift();
    return fresh;
  }

  recordOk(latencyMs: number, nowMs: number): void {
    this.ok += 1;
    this.latency.add(latencyMs);
    const b = this.bucket(nowMs);
    b.ok += 1;
    b.latency.add(latencyMs);
  }

  recordError(nowMs: number): void {
    this.errors += 1;
    this.bucket(nowMs).errors += 1;
  }

  /** Successful operations per second over the last `seconds` complete seconds. */
  rate(nowMs: number, seconds = 2): number {
    const current = Math.floor(nowMs / 1000);
    let ok = 0;
    for (const b of this.seconds) if (b.second < current && b.second >= current - seconds) ok += b.ok;
    return ok / seconds;
  }

  /** Errors over the last `seconds` seconds, the current one included. */
  recentErrors(nowMs: number, seconds = 5): number {
    const current = Math.floor(nowMs / 1000);
    return this.seconds.filter((b) => b.second > current - seconds).reduce((n, b) => n + b.errors, 0);
  }

  /** Latency quantile over the last `seconds` seconds: what the system does now, not since the start. */
  recentPercentile(q: number, nowMs: number, seconds = 5): number | null {
    const current = Math.floor(nowMs / 1000);
    const merged = new Histogram();
    for (const b of this.seconds) if (b.second > current - seconds) merged.merge(b.latency);
    return merged.percentile(q);
  }

  /** Successful operations in each of the last `seconds` complete seconds, oldest first. */
  series(nowMs: number, seconds: number): number[] {
    const current = Math.floor(nowMs / 1000);
    const byIndex = new Map(this.seconds.map((b) => [b.second, b.ok]));
    return Array.from({ length: seconds }, (_, i) => byIndex.get(current - seconds + i) ?? 0);
  }
}

/**
 * The longest time without an acknowledged write, across all writers: what a
 * user who tries to save a deal during a failover waits at worst.
 */
export class PauseTracker {
  private lastAckMs: number;
  longestMs = 0;
  /** when the longest pause ended */
  longestEndedAtMs: number | null = null;

  constructor(startMs: number) {
    this.lastAckMs = startMs;
  }

  ack(nowMs: number): void {
    const gap = nowMs - this.lastAckMs;
    if (gap > this.longestMs) {
      this.longestMs = gap;
      this.longestEndedAtMs = nowMs;
    }
    this.lastAckMs = nowMs;
  }

  /** The pause going on right now (0 when writes flow). */
  current(nowMs: number): number {
    return nowMs - this.lastAckMs;
  }
}
