/**
 * The fencing guard of one node: a small process, started before PostgreSQL
 * and the agent, that stops PostgreSQL when the agent stops feeding it lease
 * deadlines (frozen, killed, out of memory, stuck). It listens on a Unix
 * socket (mode 0600); the agent sends the monotonic deadline after every
 * grant and renewal. Once a deadline passes unfed while the data directory
 * may accept writes (no standby.signal), the guard sends SIGQUIT to the
 * verified postmaster, SIGKILL after a second, logs one line, and stays
 * tripped until a feed brings a later deadline.
 */
import { existsSync, lstatSync, chmodSync, unlinkSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { socketAnswers } from '../util/unix-socket.js';
import { join } from 'node:path';
import { KeelError } from '../errors.js';
import { monoNowMs } from './clock.js';
import { applyFeed, guardVerdict, watchdogKeepAlive, type FedState } from './decision.js';
import type { GuardLogger } from './log.js';
import { findPostmaster, realPathOr, stopPostmaster, type PostmasterCheck } from '../postgres/postmaster.js';
import { LineSplitter, parseAgentMessage, serializeMessage, type AgentMessage, type StateMessage } from './protocol.js';
import { HardwareWatchdog } from './watchdog.js';

export interface GuardOptions {
  socketPath: string;
  dataDir: string;
  /** PostgreSQL's bin directory: the postmaster must run its `postgres` */
  binDir: string;
  hardwareWatchdog: string | null;
  logger: GuardLogger;
  /** how often a lapsed deadline is checked again (a standby promoted, a postmaster started, without a new feed) */
  lapsedCheckIntervalMs?: number;
  keepAliveIntervalMs?: number;
}

/** An armed guard wakes at its deadline, and at least this often. */
const maxArmedSleepMs = 1000;

export class Guard {
  private state: FedState = { deadlineMonoMs: null, tripped: false };
  private fedByPid: number | null = null;
  private fences = 0;
  private fencing = false;
  private stopped = false;
  /** one log line per lapsed deadline and per refused PID, not one per check */
  private lapseLoggedFor: number | null = null;
  private refusedPid: number | null = null;
  private server: Server | null = null;
  private readonly connections = new Set<Socket>();
  private readonly timers: NodeJS.Timeout[] = [];
  private checkTimer: NodeJS.Timeout | null = null;
  private readonly dataDir: string;
  private readonly postgresBinary: string;
  private readonly watchdog: HardwareWatchdog | null;
  private readonly logger: GuardLogger;

  constructor(private readonly options: GuardOptions) {
    this.dataDir = realPathOr(options.dataDir);
    this.postgresBinary = realPathOr(join(options.binDir, 'postgres'));
    this.logger = options.logger;
    this.watchdog = options.hardwareWatchdog === null ? null : new HardwareWatchdog(options.hardwareWatchdog, options.logger);
  }

  async start(): Promise<void> {
    await this.claimSocket();
    const server = createServer((socket) => this.serve(socket));
    const oldMask = process.umask(0o177);
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(this.options.socketPath, () => resolve());
      });
    } catch (err) {
      throw new KeelError('KEEL_DIR_UNUSABLE', `the guard cannot listen on ${this.options.socketPath}: ${(err as Error).message}`, {
        hint: 'guard.socket must be a path in a directory that exists and that this user may write to',
      });
    } finally {
      process.umask(oldMask);
    }
    chmodSync(this.options.socketPath, 0o600);
    server.on('error', (err) => this.logger.error({ err: err.message }, 'guard socket error'));
    this.server = server;
    if (this.watchdog !== null) {
      this.timers.push(setInterval(() => this.keepAlive(), this.options.keepAliveIntervalMs ?? 1000));
    }
    this.logger.info({ socket: this.options.socketPath, dataDir: this.dataDir, hardwareWatchdog: this.options.hardwareWatchdog }, 'guard listening; not fenced until fed');
  }

  /** A socket file left by a guard that died is removed; one a live guard answers on is not taken over. */
  private async claimSocket(): Promise<void> {
    const path = this.options.socketPath;
    if (!existsSync(path)) return;
    if (!lstatSync(path).isSocket()) {
      throw new KeelError('KEEL_DIR_UNUSABLE', `${path} exists and is not a socket`, { hint: 'remove it or point guard.socket elsewhere' });
    }
    if (await socketAnswers(path)) {
      throw new KeelError('KEEL_ALREADY_RUNNING', `a guard already listens on ${path}`, { hint: 'stop that guard first (its PID is in guard.pid beside node.yml)' });
    }
    unlinkSync(path);
    this.logger.info({ socket: path }, 'removed a stale guard socket');
  }

  private serve(socket: Socket): void {
    this.connections.add(socket);
    socket.setEncoding('utf8');
    const splitter = new LineSplitter();
    socket.on('data', (chunk: string) => {
      for (const line of splitter.push(chunk)) {
        const parsed = parseAgentMessage(line);
        if (!parsed.ok) {
          this.logger.warn({ error: parsed.error }, 'refused a malformed guard message; closing that connection');
          socket.end(serializeMessage({ v: 1, type: 'error', message: parsed.error.slice(0, 512) }));
          return;
        }
        this.handle(parsed.message);
        if (!socket.destroyed) socket.write(serializeMessage(this.stateMessage()));
      }
      if (splitter.overflow) {
        this.logger.warn({}, 'refused a guard message longer than a line may be; closing that connection');
        socket.end(serializeMessage({ v: 1, type: 'error', message: 'line too long' }));
      }
    });
    socket.on('error', () => undefined);
    socket.on('close', () => this.connections.delete(socket));
  }

  private handle(message: AgentMessage): void {
    if (message.type === 'hello') return;
    const before = this.state;
    this.state = applyFeed(this.state, message.deadlineMonoMs, monoNowMs());
    if (this.fedByPid === null) this.logger.info({ agentPid: message.agentPid }, 'first feed: the guard is armed');
    else if (this.fedByPid !== message.agentPid) this.logger.info({ agentPid: message.agentPid, previousAgentPid: this.fedByPid }, 'a new agent took the guard over');
    if (before.tripped && !this.state.tripped) this.logger.info({ agentPid: message.agentPid }, 'fed a later deadline: no longer tripped');
    this.fedByPid = message.agentPid;
    if (this.state.deadlineMonoMs !== before.deadlineMonoMs) this.lapseLoggedFor = null;
    if (before.deadlineMonoMs === null) this.keepAlive();
    // a deadline already past is enforced now, not at the next check
    this.check();
    this.scheduleCheck();
  }

  /**
   * Unfed, nothing can make the guard act until a feed comes; armed, nothing
   * but time passing: it sleeps until the deadline. Lapsed, it looks again
   * often, since a postmaster may start or a standby be promoted meanwhile.
   */
  private scheduleCheck(): void {
    if (this.checkTimer !== null) clearTimeout(this.checkTimer);
    this.checkTimer = null;
    const deadline = this.state.deadlineMonoMs;
    if (this.stopped || deadline === null) return;
    const untilDeadlineMs = deadline - monoNowMs();
    const delayMs = untilDeadlineMs > 0 ? Math.min(Math.ceil(untilDeadlineMs), maxArmedSleepMs) : (this.options.lapsedCheckIntervalMs ?? 100);
    this.checkTimer = setTimeout(() => {
      this.checkTimer = null;
      this.check();
      this.scheduleCheck();
    }, delayMs);
  }

  stateMessage(): StateMessage {
    return {
      v: 1,
      type: 'state',
      guardPid: process.pid,
      dataDir: this.dataDir,
      monoNowMs: monoNowMs(),
      deadlineMonoMs: this.state.deadlineMonoMs,
      fedByPid: this.fedByPid,
      tripped: this.state.tripped,
      fences: this.fences,
    };
  }

  private keepAlive(): void {
    if (this.watchdog !== null && !this.stopped && watchdogKeepAlive(this.state)) this.watchdog.keepAlive();
  }

  private check(): void {
    if (this.fencing || this.stopped) return;
    const nowMonoMs = monoNowMs();
    const deadline = this.state.deadlineMonoMs;
    let standby = false;
    let postmaster: PostmasterCheck = { kind: 'none' };
    if (deadline !== null && nowMonoMs >= deadline) {
      standby = existsSync(join(this.dataDir, 'standby.signal'));
      if (!standby) postmaster = findPostmaster(this.dataDir, this.postgresBinary);
    }
    if (postmaster.kind === 'refused' && this.refusedPid !== postmaster.pid) {
      this.refusedPid = postmaster.pid;
      this.logger.warn({ pid: postmaster.pid, why: postmaster.why }, 'postmaster.pid names another process: never signalled');
    }
    const running = postmaster.kind === 'verified' || postmaster.kind === 'unverifiable';
    const verdict = guardVerdict({ deadlineMonoMs: deadline, nowMonoMs, standby, postmasterRunning: running, tripped: this.state.tripped });
    if (verdict.kind === 'lapsed' && this.lapseLoggedFor !== deadline) {
      this.lapseLoggedFor = deadline;
      const what = verdict.why === 'standby' ? 'PostgreSQL is a standby (standby.signal)' : 'no postmaster runs';
      this.logger.info({ fedByPid: this.fedByPid }, `the lease deadline passed without a feed; ${what}: nothing to stop`);
    }
    if (verdict.kind !== 'fence') return;
    this.state = { ...this.state, tripped: true };
    const lateMs = Math.round(nowMonoMs - deadline!);
    if (postmaster.kind === 'unverifiable') {
      if (verdict.first) this.logger.error({ pid: postmaster.pid, why: postmaster.why, lateMs }, 'tripped: the lease deadline passed, but the postmaster cannot be verified and is not signalled');
      return;
    }
    if (postmaster.kind !== 'verified') return;
    this.fencing = true;
    const target = postmaster;
    const startedMonoMs = monoNowMs();
    void stopPostmaster(target)
      .then((outcome) => {
        this.fences += 1;
        const fields = { pid: target.pid, outcome, lateMs, stopMs: Math.round(monoNowMs() - startedMonoMs), fedByPid: this.fedByPid };
        const msg = verdict.first
          ? 'tripped: the lease deadline passed without a feed; stopped PostgreSQL (immediate shutdown)'
          : 'tripped: stopped a postmaster started without a new feed';
        if (outcome === 'survived') this.logger.error(fields, `${msg}, but the postmaster survived SIGKILL`);
        else this.logger.warn(fields, msg);
      })
      .catch((err: unknown) => this.logger.error({ pid: target.pid, err: (err as Error).message }, 'stopping PostgreSQL failed'))
      .finally(() => {
        this.fencing = false;
      });
  }

  /** Clean exit: no more checks, the socket removed, the hardware watchdog disarmed. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const timer of this.timers) clearInterval(timer);
    if (this.checkTimer !== null) clearTimeout(this.checkTimer);
    for (const socket of this.connections) socket.destroy();
    if (this.server !== null) await new Promise<void>((resolve) => this.server!.close(() => resolve()));
    this.watchdog?.close();
  }
}
