/**
 * One etcd read shared by every GET that comes within a short while of it:
 * a flood of GET /cluster becomes at most one etcd read per maxAgeMs, and
 * callers that arrive while a read is under way wait for that read instead of
 * starting their own. A failed read is not kept.
 */
import type { Clock } from '../util/clock.js';

/** How long a read of the cluster serves GETs: well under a loop (1 s), so an answer is never older than what the agents act on. */
export const defaultReadCacheMs = 250;

export class SharedRead<T> {
  private held: { startedAtMs: number; value: Promise<T> } | null = null;

  constructor(
    private readonly read: () => Promise<T>,
    private readonly clock: Clock,
    private readonly maxAgeMs: number,
  ) {}

  get(): Promise<T> {
    const now = this.clock.now();
    const held = this.held;
    // a clock that went back counts as stale, never as fresh for longer
    if (held !== null && now >= held.startedAtMs && now - held.startedAtMs < this.maxAgeMs) return held.value;
    const entry = { startedAtMs: now, value: this.read() };
    this.held = entry;
    entry.value.catch(() => {
      if (this.held === entry) this.held = null;
    });
    return entry.value;
  }

  /** After a write through this API: the next GET reads etcd again and shows it. */
  invalidate(): void {
    this.held = null;
  }
}
