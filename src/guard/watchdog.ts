/**
 * An opt-in hardware watchdog (/dev/watchdog): once opened, the host resets
 * unless something writes to it within the device's timeout. The guard
 * writes while it is fed and has not tripped; a guard that tripped, or froze
 * with its host, stops writing and the machine resets, which no writable
 * primary survives. A clean exit writes the magic 'V' first, which tells the
 * driver the close is deliberate.
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import type { GuardLogger } from './log.js';

export class HardwareWatchdog {
  private fd: number | null = null;
  private failing = false;

  constructor(
    readonly path: string,
    private readonly logger: GuardLogger,
  ) {}

  /** Opens the device on the first keep-alive: an unfed guard must not make the host reset. */
  keepAlive(): void {
    try {
      if (this.fd === null) {
        this.fd = openSync(this.path, 'a');
        this.logger.info({ device: this.path }, 'hardware watchdog armed');
      }
      writeSync(this.fd, '.');
      if (this.failing) this.logger.info({ device: this.path }, 'hardware watchdog writable again');
      this.failing = false;
    } catch (err) {
      if (!this.failing) this.logger.error({ device: this.path, err: (err as Error).message }, 'cannot write to the hardware watchdog');
      this.failing = true;
    }
  }

  /** Magic close: the driver disarms (unless built with nowayout). */
  close(): void {
    if (this.fd === null) return;
    try {
      writeSync(this.fd, 'V');
      closeSync(this.fd);
      this.logger.info({ device: this.path }, 'hardware watchdog disarmed (magic close)');
    } catch (err) {
      this.logger.error({ device: this.path, err: (err as Error).message }, 'could not disarm the hardware watchdog');
    }
    this.fd = null;
  }
}
