/**
 * One `keel` process that the supervisor keeps running as systemd would with
 * Restart=always (the router, the controller): started in its own process
 * group, with its PID in a file so that `keel down` finds it after the
 * supervisor died, adopted when a supervisor that died left it running, and
 * started again a second after it exits until it is stopped.
 */
import { spawn } from 'node:child_process';
import { closeSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import type { Logger } from '../util/log.js';
import { isAlive, readPidFile, terminate } from '../util/process.js';
import { openLogFile } from '../util/log-file.js';

const restartDelayMs = 1000;

export interface SupervisedOptions {
  /** for the log: "router", "controller" */
  what: string;
  program: string;
  args: string[];
  pidFile: string;
  logFile: string;
  logger: Logger;
}

export class Supervised {
  private pid: number | null = null;
  private wanted = false;

  constructor(private readonly o: SupervisedOptions) {}

  async start(): Promise<void> {
    this.wanted = true;
    const leftover = readPidFile(this.o.pidFile);
    if (leftover !== null && isAlive(leftover)) {
      this.pid = leftover;
      return;
    }
    // 0640: logs may hold addresses and names, never for every local user
    const log = openLogFile(this.o.logFile);
    // own process group: Ctrl-C reaches the supervisor, which stops everything in order
    const child = spawn(this.o.program, this.o.args, { detached: true, stdio: ['ignore', log, log] });
    closeSync(log);
    child.unref();
    child.once('exit', (code, signal) => {
      this.pid = null;
      if (!this.wanted) return;
      this.o.logger.warn({ code, signal }, `${this.o.what} exited; starting it again in ${restartDelayMs} ms`);
      setTimeout(() => void (this.wanted ? this.start() : undefined), restartDelayMs).unref();
    });
    this.pid = child.pid ?? null;
    if (this.pid !== null) await writeFile(this.o.pidFile, `${this.pid}\n`);
    this.o.logger.info({ pid: this.pid }, `${this.o.what} started`);
  }

  /** Stops it for good (also one a supervisor that died started), and forgets its PID file. */
  async stop(graceMs = 10_000): Promise<void> {
    this.wanted = false;
    const pid = this.pid ?? readPidFile(this.o.pidFile);
    if (pid !== null) await terminate(pid, graceMs);
    await rm(this.o.pidFile, { force: true });
  }
}
