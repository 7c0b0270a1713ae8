/**
 * A full garbage collection once the agent has been quiet for 3 s after a
 * burst of work (a promotion, a rewind, a start), then every 10 s while it
 * stays steady. An agent allocates too little for V8 to collect its old
 * generation by itself, so the bytecode and garbage of the last burst, and the
 * socket buffers its garbage holds outside V8's heap, stayed resident; a
 * collection takes about 20 ms (README, Agent memory). Needs `--expose-gc`
 * (src/providers/agent-process.ts); without it, nothing.
 */
export class IdleCollector {
  private lastWorkMs: number;
  private lastCollectedMs: number | null = null;

  constructor(
    private readonly collect: (() => void) | undefined,
    private readonly now: () => number,
    /** quiet this long after the last work before collecting: a switchover's jobs come within a second or two of each other */
    private readonly quietMs = 3_000,
    /**
     * and again at most this often while steady: the garbage of steady work holds buffers outside V8's heap
     * too; every 10 s rather than 30 s kept an agent under pgbench 2-3 MB lower for no CPU one could measure; every 5 s
     * changed nothing one could measure
     */
    private readonly everyMs = 10_000,
  ) {
    // start-up is work too
    this.lastWorkMs = now();
  }

  /** Work happened (a job started or ended): collect again once it has been quiet. */
  worked(): void {
    this.lastWorkMs = this.now();
    this.lastCollectedMs = null;
  }

  /**
   * Called when the agent is steady (no job). True when it collected. The
   * first collection after work runs twice: single-threaded, V8 sweeps the
   * pages a collection emptied afterwards, on the main thread, and gives them
   * back to the system only at the next collection, so the garbage of a
   * burst otherwise stayed resident until the steady one 10 s later.
   */
  maybeCollect(): boolean {
    const now = this.now();
    if (this.collect === undefined || now - this.lastWorkMs < this.quietMs) return false;
    if (this.lastCollectedMs !== null && now - this.lastCollectedMs < this.everyMs) return false;
    const afterWork = this.lastCollectedMs === null;
    this.lastCollectedMs = now;
    this.collect();
    if (afterWork) this.collect();
    return true;
  }
}

/** The global gc() of `--expose-gc`, if the process has it. */
export function exposedGc(): (() => void) | undefined {
  const gc = (globalThis as { gc?: unknown }).gc;
  return typeof gc === 'function' ? () => (gc as () => void)() : undefined;
}
