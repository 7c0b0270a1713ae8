/**
 * A reader runs one query after another on one connection, as a pooled web
 * worker would, and reconnects after any failure: that reconnect is what an
 * application sees of a failover. What it reads, and what it makes of the
 * answer, is the caller's.
 */
import type pg from 'pg';
import { connectionLoop } from './connect.js';

export interface ReaderOptions {
  connection: pg.ClientConfig;
  /** one read; a throw counts as a failure */
  read: (client: pg.Client) => Promise<void>;
  /** a read, or a connection, that failed */
  onFailure: (err: unknown) => void;
  /** pause after a successful read */
  thinkMs: number;
  /** pause after a failure */
  retryMs: number;
}

export class Reader {
  private stopping = false;
  private loop: Promise<void> | null = null;

  constructor(private readonly o: ReaderOptions) {}

  start(): void {
    this.loop ??= connectionLoop({
      connection: this.o.connection,
      stopped: () => this.stopping,
      onConnectFailure: this.o.onFailure,
      retryMs: this.o.retryMs,
      step: async (client) => {
        try {
          await this.o.read(client);
          return { keep: true, pauseMs: this.o.thinkMs };
        } catch (err) {
          this.o.onFailure(err);
          return { keep: false, pauseMs: this.o.retryMs };
        }
      },
    });
  }

  /** Stops the loop; a query in flight ends within the connection's own timeouts. */
  async stop(): Promise<void> {
    this.stopping = true;
    await this.loop;
  }
}
