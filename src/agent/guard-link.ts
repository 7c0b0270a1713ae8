/**
 * The agent's end of the fencing guard's socket (src/guard): connects,
 * reconnects with backoff, and sends the lease deadline as a CLOCK_MONOTONIC
 * time at connect and after every grant, renewal and loss of the lease. An
 * agent that restarts within the deadline takes its guard over by feeding it.
 *
 * The link counts as connected only while the guard answers: an open socket
 * to a guard that no longer replies (frozen) guards nothing.
 */
import { realpathSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { describeError } from '../errors.js';
import { monoNowMs, toMonotonicDeadline } from '../guard/clock.js';
import { LineSplitter, parseGuardMessage, serializeMessage, type AgentMessage, type StateMessage } from '../guard/protocol.js';
import { leaseDeadlineMs, type Lease } from '../model/lease.js';
import type { Clock } from '../util/clock.js';
import type { Logger } from '../util/log.js';

/** What the snapshot says of the guard: none configured, or whether the agent is connected to it now. */
export type GuardStatus = 'connected' | 'disconnected' | 'none';

/** An answer slower than this and the guard counts as gone. */
const ackTimeoutMs = 1000;
const minBackoffMs = 100;
const maxBackoffMs = 2000;

export interface GuardLinkOptions {
  socketPath: string;
  /** this node's data directory: a guard that watches another one is refused */
  dataDir: string;
  /** the wall-clock moment after which PostgreSQL must no longer accept writes; null before the first lease */
  deadlineMs: () => number | null;
  leaseId: () => string | null;
  clock: Clock;
  logger: Logger;
  /** called when the link comes up or goes down, so the loop decides again at once */
  onStatusChange: () => void;
}

/**
 * The wall-clock deadline the guard is fed: the lease's own (safety rule 1),
 * or now once etcd said the lease is gone; null before the first grant, when
 * there is nothing to enforce yet.
 */
export function guardDeadlineMs(lease: Lease | null, nowMs: number): number | null {
  if (lease === null) return null;
  const deadlineMs = leaseDeadlineMs(lease);
  return lease.id === null ? Math.min(deadlineMs, nowMs) : deadlineMs;
}

function realPath(path: string): string {
  try {
    return realpathSync(path);
  } catch {
    return path;
  }
}

export class GuardLink {
  private socket: Socket | null = null;
  /** the guard answered and watches our data directory */
  private verified = false;
  /** messages sent and not answered yet, and since when the oldest waits */
  private unanswered = 0;
  private waitingSinceMonoMs: number | null = null;
  private backoffMs = minBackoffMs;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private stopped = false;
  private reported: 'connected' | 'disconnected' = 'disconnected';
  private troubleLogged = false;
  /** the guard's last answer */
  lastState: StateMessage | null = null;

  constructor(private readonly o: GuardLinkOptions) {}

  start(): void {
    this.connect();
  }

  stop(): void {
    this.stopped = true;
    if (this.reconnectTimer !== null) clearTimeout(this.reconnectTimer);
    this.socket?.destroy();
    this.socket = null;
  }

  status(): 'connected' | 'disconnected' {
    if (this.socket === null || !this.verified) return 'disconnected';
    if (this.waitingSinceMonoMs !== null && monoNowMs() - this.waitingSinceMonoMs > ackTimeoutMs) return 'disconnected';
    return 'connected';
  }

  /** Sends the current deadline now (after a lease change); a no-op while not connected. */
  feed(): void {
    const socket = this.socket;
    if (socket === null || socket.connecting || socket.destroyed) return;
    this.send(socket);
  }

  private connect(): void {
    if (this.stopped) return;
    const socket = connect(this.o.socketPath);
    this.socket = socket;
    this.verified = false;
    this.unanswered = 0;
    this.waitingSinceMonoMs = null;
    socket.setEncoding('utf8');
    const splitter = new LineSplitter();
    socket.on('connect', () => this.send(socket));
    socket.on('data', (chunk: string) => {
      for (const line of splitter.push(chunk)) this.receive(socket, line);
      if (splitter.overflow) this.drop(socket, 'the guard sent a line longer than a message may be');
    });
    socket.on('error', (err) => this.trouble(`cannot reach the fencing guard at ${this.o.socketPath}: ${describeError(err)}`));
    socket.on('close', () => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.verified = false;
      this.noticeStatus();
      if (this.stopped) return;
      this.reconnectTimer = setTimeout(() => {
        this.reconnectTimer = null;
        this.connect();
      }, this.backoffMs);
      this.backoffMs = Math.min(this.backoffMs * 2, maxBackoffMs);
    });
  }

  private send(socket: Socket): void {
    const deadlineMs = this.o.deadlineMs();
    const message: AgentMessage =
      deadlineMs === null
        ? { v: 1, type: 'hello', agentPid: process.pid }
        : {
            v: 1,
            type: 'feed',
            agentPid: process.pid,
            leaseId: this.o.leaseId(),
            deadlineMonoMs: toMonotonicDeadline(deadlineMs, this.o.clock.now(), monoNowMs()),
          };
    socket.write(serializeMessage(message));
    this.unanswered += 1;
    this.waitingSinceMonoMs ??= monoNowMs();
  }

  private receive(socket: Socket, line: string): void {
    const parsed = parseGuardMessage(line);
    if (!parsed.ok) return this.drop(socket, `the fencing guard sent a message Keel does not understand (${parsed.error})`);
    const message = parsed.message;
    if (message.type === 'error') return this.drop(socket, `the fencing guard refused a message: ${message.message}`);
    this.unanswered = Math.max(0, this.unanswered - 1);
    this.waitingSinceMonoMs = this.unanswered === 0 ? null : monoNowMs();
    const mine = realPath(this.o.dataDir);
    if (message.dataDir !== mine) {
      this.backoffMs = maxBackoffMs;
      return this.drop(socket, `the guard at ${this.o.socketPath} watches ${message.dataDir}, not this node's ${mine}`);
    }
    this.lastState = message;
    this.backoffMs = minBackoffMs;
    if (!this.verified) {
      this.verified = true;
      this.troubleLogged = false;
      this.o.logger.info({ socket: this.o.socketPath, guardPid: message.guardPid, tripped: message.tripped }, 'connected to the fencing guard');
    }
    this.noticeStatus();
  }

  private drop(socket: Socket, why: string): void {
    this.trouble(why);
    socket.destroy();
  }

  /** Logged once per outage, not once per retry. */
  private trouble(why: string): void {
    if (this.troubleLogged || this.stopped) return;
    this.troubleLogged = true;
    this.o.logger.warn({ socket: this.o.socketPath }, why);
  }

  private noticeStatus(): void {
    const now = this.status();
    if (now === this.reported) return;
    this.reported = now;
    if (now === 'disconnected' && !this.stopped) this.o.logger.warn({ socket: this.o.socketPath }, 'lost the fencing guard: not taking the leader key nor starting a primary until it is back');
    this.o.onStatusChange();
  }
}
