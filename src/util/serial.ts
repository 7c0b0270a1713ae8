/**
 * A piece of work run one at a time, and no more often than asked: a call
 * while it runs asks for one more run after it (however many calls came
 * meanwhile) and resolves once that run is done. For reads that a watch
 * wakes: a burst of changes costs at most two reads, and the last one starts
 * after the last change.
 */
export class SerialRuns {
  private running: Promise<void> | null = null;
  private again = false;

  constructor(
    private readonly work: () => Promise<void>,
    /** true once the owner stopped: no run starts, and none is repeated */
    private readonly stopped: () => boolean,
  ) {}

  /** The run in flight, if any (for a stop that waits for it). */
  get inFlight(): Promise<void> | null {
    return this.running;
  }

  run(): Promise<void> {
    if (this.stopped()) return Promise.resolve();
    if (this.running !== null) {
      this.again = true;
      return this.running;
    }
    const loop = async (): Promise<void> => {
      try {
        do {
          this.again = false;
          await this.work();
        } while (this.again && !this.stopped());
      } finally {
        this.running = null;
      }
    };
    this.running = loop();
    return this.running;
  }
}
