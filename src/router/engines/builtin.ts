/**
 * The builtin engine: a TCP proxy in this process. Bytes are never parsed on
 * the hot path (pipe() from the client, the server's replies read into a
 * buffer of the link's own and written on; Nagle off both ways), so anything a
 * client sends, PostgreSQL's protocol or not, is just forwarded. The only bytes it looks at
 * are a connection's first message (to bound how long a client may take to
 * send it, and to tell a cancel request apart) and those of a connection that
 * waited in vain, to answer it in PostgreSQL's own words.
 *
 * Limits: a client that has not sent its whole first message within
 * firstBytesTimeoutMs is closed (an SSLRequest is such a message: it goes on
 * to PostgreSQL unchanged); an endpoint that holds maxConnections closes each
 * new connection at once.
 */
import net, { type Server, type Socket } from 'node:net';
import { KeelError } from '../../errors.js';
import type { Logger } from '../../util/log.js';
import { noRoutes, type Backend, type Routes } from '../route.js';
import { cancelRequestBytes, errorResponse, firstMessageComplete, firstMessageKind, noLeaderError } from './pg-wire.js';
import { describeListen, type EndpointStats, type EngineOptions, type Listen, type RouterEngine } from './types.js';

/** A waiting client that sends more than this is paused (TCP pushes back) until it can be forwarded. */
const maxHeldBytes = 64 * 1024;
/** A cut client gets this long to take the bytes already on their way before its socket is destroyed. */
const clientFlushMs = 1000;
/** What one read from a server takes at most (as much as node's own reads). */
const replyBufferBytes = 64 * 1024;
/** Dead peers on idle connections are found by TCP keep-alive, not by us. */
const keepAliveDelayMs = 30_000;
/** Refusals at the connection cap come in floods: logged at most this often, with the count since. */
const refusalLogEveryMs = 10_000;

interface Link {
  client: Socket;
  server: Socket;
  backend: string;
}

interface Waiter {
  client: Socket;
  chunks: Buffer[];
  bytes: number;
  sinceMs: number;
  timer: NodeJS.Timeout;
  onData: (chunk: Buffer) => void;
  onClose: () => void;
}

type Kind = 'rw' | 'ro';

class Endpoint {
  readonly links = new Set<Link>();
  readonly waiting = new Set<Waiter>();
  /** connections whose whole first message has not come yet */
  readonly sniffing = new Set<Socket>();
  server: Server | null = null;
  /** connections closed at once because the endpoint held maxConnections */
  refused = 0;
  refusedUnlogged = 0;
  refusalLoggedAtMs = 0;
  /** connections closed because their first message did not come within firstBytesTimeoutMs */
  firstBytesTimeouts = 0;
  accepted = 0;
  /** connections that waited for a backend, and those whose wait ended without one */
  held = 0;
  holdTimeouts = 0;
  /** bytes of the connections already closed; open ones are read off their sockets */
  closedReceivedBytes = 0;
  closedSentBytes = 0;
  constructor(readonly kind: Kind) {}

  connectionsTo(backend: string): number {
    let n = 0;
    for (const link of this.links) if (link.backend === backend) n += 1;
    return n;
  }
}

const keyOf = (b: Backend): string => `${b.name}@${b.host}:${b.port}`;
const noop = (): void => undefined;

export class BuiltinEngine implements RouterEngine {
  readonly name = 'builtin';
  private routes: Routes = noRoutes;
  private readonly rw = new Endpoint('rw');
  private readonly ro = new Endpoint('ro');
  private roTurn = 0;
  /** when each backend's connect failure was last logged: a dead leader refuses every client until its key expires */
  private readonly failureLoggedAtMs = new Map<string, number>();

  constructor(
    private readonly options: Omit<EngineOptions, 'rw' | 'ro'> & Record<Kind, Listen>,
    private readonly logger: Logger,
  ) {}

  async start(): Promise<void> {
    await this.listen(this.rw, this.options.rw);
    try {
      await this.listen(this.ro, this.options.ro);
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  private listen(endpoint: Endpoint, address: Listen): Promise<void> {
    const server = net.createServer({ noDelay: true, keepAlive: true, keepAliveInitialDelay: keepAliveDelayMs }, (socket) =>
      this.accept(endpoint, socket),
    );
    endpoint.server = server;
    // node closes a connection beyond the cap as soon as it is accepted, before a byte is read
    server.maxConnections = this.options.maxConnections;
    server.on('drop', () => this.refused(endpoint));
    return new Promise((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) => reject(listenError(err, endpoint.kind, address)));
      server.listen({ ...address, backlog: 1024 }, () => {
        server.removeAllListeners('error');
        // e.g. EMFILE on accept: the server keeps listening, the log says why clients were dropped
        server.on('error', (err) => this.logger.warn({ endpoint: endpoint.kind, err: err.message }, 'accept failed'));
        resolve();
      });
    });
  }

  async stats(): Promise<Record<Kind, EndpointStats>> {
    const of = (e: Endpoint): EndpointStats => {
      const connections: Record<string, number> = {};
      let receivedBytesTotal = e.closedReceivedBytes;
      let sentBytesTotal = e.closedSentBytes;
      for (const link of e.links) {
        const name = link.backend.slice(0, link.backend.indexOf('@'));
        connections[name] = (connections[name] ?? 0) + 1;
        receivedBytesTotal += link.client.bytesRead;
        sentBytesTotal += link.client.bytesWritten;
      }
      return {
        connections,
        waiting: e.waiting.size + e.sniffing.size,
        acceptedTotal: e.accepted,
        heldTotal: e.held,
        holdTimeoutsTotal: e.holdTimeouts,
        refusedTotal: e.refused,
        firstBytesTimeoutsTotal: e.firstBytesTimeouts,
        receivedBytesTotal,
        sentBytesTotal,
      };
    };
    return { rw: of(this.rw), ro: of(this.ro) };
  }

  private refused(endpoint: Endpoint): void {
    endpoint.refused += 1;
    endpoint.refusedUnlogged += 1;
    const now = Date.now();
    if (now - endpoint.refusalLoggedAtMs < refusalLogEveryMs) return;
    this.logger.warn(
      { endpoint: endpoint.kind, refused: endpoint.refusedUnlogged, total: endpoint.refused, maxConnections: this.options.maxConnections },
      `${endpoint.kind}: refused ${endpoint.refusedUnlogged} connection(s): the endpoint holds ${this.options.maxConnections} (--max-connections; logged at most every ${refusalLogEveryMs / 1000} s)`,
    );
    endpoint.refusalLoggedAtMs = now;
    endpoint.refusedUnlogged = 0;
  }

  async apply(routes: Routes): Promise<void> {
    this.routes = routes;
    // Connections to a former leader must not write one more byte there.
    const rwKey = routes.rw === null ? null : keyOf(routes.rw);
    this.cut(this.rw, (backend) => backend !== rwKey);
    // a draining replica gets no new connections, but keeps the ones it has until it goes
    const roKeys = new Set([...routes.ro, ...routes.roDraining].map(keyOf));
    this.cut(this.ro, (backend) => !roKeys.has(backend));
    this.release(this.rw);
    this.release(this.ro);
  }

  private cut(endpoint: Endpoint, gone: (backend: string) => boolean): void {
    const closed = new Map<string, number>();
    for (const link of endpoint.links) {
      if (!gone(link.backend)) continue;
      endpoint.links.delete(link);
      // not one more byte to the old backend; the client still gets what it already sent (e.g. its FATAL), then the close
      link.server.destroy();
      link.client.end();
      setTimeout(() => link.client.destroy(), clientFlushMs).unref();
      closed.set(link.backend, (closed.get(link.backend) ?? 0) + 1);
    }
    for (const [backend, count] of closed) {
      this.logger.info({ endpoint: endpoint.kind, backend, count }, `closed ${count} ${endpoint.kind} connection(s) to ${backend}`);
    }
  }

  private target(endpoint: Endpoint): Backend | null {
    if (endpoint.kind === 'rw') return this.routes.holdRw ? null : this.routes.rw;
    const candidates = this.routes.ro;
    if (candidates.length === 0) return null;
    // least connections; ties go round robin so a fresh set of replicas fills evenly
    this.roTurn = (this.roTurn + 1) % candidates.length;
    let best: Backend | null = null;
    let bestCount = Infinity;
    for (let i = 0; i < candidates.length; i++) {
      const candidate = candidates[(this.roTurn + i) % candidates.length]!;
      const count = this.ro.connectionsTo(keyOf(candidate));
      if (count < bestCount) {
        best = candidate;
        bestCount = count;
      }
    }
    return best;
  }

  private accept(endpoint: Endpoint, client: Socket): void {
    // a client's error always ends in 'close', where the link is cleaned up
    client.on('error', noop);
    endpoint.accepted += 1;
    this.readFirstMessage(endpoint, client);
  }

  private route(endpoint: Endpoint, client: Socket, pending: Buffer[]): void {
    const backend = this.target(endpoint);
    if (backend === null) this.hold(endpoint, client, pending);
    else this.forward(endpoint, client, backend, pending);
  }

  /**
   * Waits for the client's whole first message, at most firstBytesTimeoutMs:
   * a client that connects and sends nothing, or a few bytes and stops, holds
   * a socket for nothing (and, once forwarded, a PostgreSQL backend until its
   * authentication_timeout).
   *
   * A CancelRequest comes on a connection of its own and names a session by
   * PID and secret key, not by server. On rw there is one server; on ro the
   * session may be on any replica, so the request goes to each of them: the
   * one that knows the key cancels, the others ignore it.
   */
  private readFirstMessage(endpoint: Endpoint, client: Socket): void {
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      endpoint.firstBytesTimeouts += 1;
      client.destroy();
    }, this.options.firstBytesTimeoutMs);
    const onClose = (): void => {
      clearTimeout(timer);
      endpoint.sniffing.delete(client);
    };
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk);
      const head = Buffer.concat(chunks);
      if (!firstMessageComplete(head)) return;
      clearTimeout(timer);
      client.pause();
      client.removeListener('data', onData);
      client.removeListener('close', onClose);
      endpoint.sniffing.delete(client);
      if (endpoint.kind === 'ro' && firstMessageKind(head) === 'cancel') {
        this.fanOutCancel(head.subarray(0, cancelRequestBytes));
        client.destroy();
      } else {
        this.route(endpoint, client, chunks);
      }
    };
    endpoint.sniffing.add(client);
    client.on('data', onData);
    client.once('close', onClose);
  }

  private fanOutCancel(request: Buffer): void {
    for (const backend of this.routes.ro) {
      const server = net.connect({ host: backend.host, port: backend.port });
      server.on('error', noop);
      server.setTimeout(this.options.connectTimeoutMs, () => server.destroy());
      server.once('connect', () => server.end(request));
      server.once('close', () => server.destroy());
    }
    this.logger.debug({ backends: this.routes.ro.length }, 'cancel request sent to every ro backend');
  }

  private hold(endpoint: Endpoint, client: Socket, pending: Buffer[]): void {
    const waiter: Waiter = {
      client,
      chunks: [...pending],
      bytes: pending.reduce((n, chunk) => n + chunk.length, 0),
      sinceMs: Date.now(),
      timer: setTimeout(() => this.giveUp(endpoint, waiter), this.options.waitTimeoutMs),
      onData: (chunk) => {
        waiter.chunks.push(chunk);
        waiter.bytes += chunk.length;
        if (waiter.bytes >= maxHeldBytes) client.pause();
      },
      onClose: () => {
        clearTimeout(waiter.timer);
        endpoint.waiting.delete(waiter);
      },
    };
    endpoint.waiting.add(waiter);
    endpoint.held += 1;
    client.on('data', waiter.onData);
    client.once('close', waiter.onClose);
    // a client whose first bytes were looked at is paused
    if (waiter.bytes < maxHeldBytes) client.resume();
  }

  private unhold(endpoint: Endpoint, waiter: Waiter): void {
    clearTimeout(waiter.timer);
    endpoint.waiting.delete(waiter);
    // removing the listener alone would leave the socket flowing and drop bytes
    waiter.client.pause();
    waiter.client.removeListener('data', waiter.onData);
    waiter.client.removeListener('close', waiter.onClose);
  }

  private release(endpoint: Endpoint): void {
    for (const waiter of endpoint.waiting) {
      const backend = this.target(endpoint);
      if (backend === null) return;
      this.unhold(endpoint, waiter);
      this.forward(endpoint, waiter.client, backend, waiter.chunks);
    }
  }

  private giveUp(endpoint: Endpoint, waiter: Waiter): void {
    this.unhold(endpoint, waiter);
    endpoint.holdTimeouts += 1;
    const client = waiter.client;
    const seconds = Math.round((Date.now() - waiter.sinceMs) / 1000);
    // A StartupMessage expects a protocol answer, and so does an SSLRequest: libpq reports an ErrorResponse
    // sent in place of the one-byte TLS answer (PostgreSQL's own way to refuse before TLS). Anyone else just
    // sees the close.
    const kind = firstMessageKind(Buffer.concat(waiter.chunks));
    if (kind !== 'startup' && kind !== 'ssl') {
      client.destroy();
      return;
    }
    const message =
      endpoint.kind === 'rw' ? noLeaderError(seconds) : errorResponse('57P03', `no replica or leader can serve reads (waited ${seconds} s); retry later`);
    client.end(message, () => client.destroy());
  }

  private forward(endpoint: Endpoint, client: Socket, backend: Backend, pending: Buffer[]): void {
    if (client.destroyed) return;
    // The server's replies are read into one buffer of this link and written to the client from there: no
    // allocation and no stream events per reply. A write the client did not take at once still holds the
    // buffer, so the next read gets a new one; a full client pauses the server until it drains.
    let replies = Buffer.allocUnsafe(replyBufferBytes);
    const onReply = (bytes: number, buffer: Buffer): boolean => {
      const flushed = client.write(buffer.subarray(0, bytes));
      if (client.writableLength > 0) replies = Buffer.allocUnsafe(replyBufferBytes);
      if (flushed) return true;
      client.once('drain', () => server.resume());
      return false;
    };
    const server = net.connect({
      host: backend.host,
      port: backend.port,
      noDelay: true,
      keepAlive: true,
      keepAliveInitialDelay: keepAliveDelayMs,
      onread: { buffer: () => replies, callback: onReply },
    });
    const link: Link = { client, server, backend: keyOf(backend) };
    endpoint.links.add(link);
    const connectTimer = setTimeout(() => {
      this.logger.warn({ endpoint: endpoint.kind, backend: link.backend }, `no connection to ${link.backend} within ${this.options.connectTimeoutMs} ms`);
      close();
    }, this.options.connectTimeoutMs);
    let closed = false;
    const close = (): void => {
      if (closed) return;
      closed = true;
      clearTimeout(connectTimer);
      endpoint.links.delete(link);
      endpoint.closedReceivedBytes += client.bytesRead;
      endpoint.closedSentBytes += client.bytesWritten;
      client.destroy();
      server.destroy();
    };
    server.once('connect', () => clearTimeout(connectTimer));
    server.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'ECONNREFUSED' && err.code !== 'EHOSTUNREACH') return;
      const now = Date.now();
      if (now - (this.failureLoggedAtMs.get(link.backend) ?? 0) < 1000) return;
      this.failureLoggedAtMs.set(link.backend, now);
      this.logger.warn({ endpoint: endpoint.kind, backend: link.backend, err: err.code }, `cannot connect to ${link.backend} (logged at most once a second)`);
    });
    client.once('close', close);
    server.once('close', close);
    // the server's end ends the client's side once what was read reaches it
    server.once('end', () => client.end());
    for (const chunk of pending) server.write(chunk);
    client.pipe(server);
  }

  async stop(): Promise<void> {
    const closing: Promise<void>[] = [];
    for (const endpoint of [this.rw, this.ro]) {
      const server = endpoint.server;
      endpoint.server = null;
      if (server?.listening) closing.push(new Promise((resolve) => server.close(() => resolve())));
      for (const waiter of endpoint.waiting) {
        this.unhold(endpoint, waiter);
        waiter.client.destroy();
      }
      for (const link of endpoint.links) {
        link.client.destroy();
        link.server.destroy();
      }
      endpoint.links.clear();
      for (const socket of endpoint.sniffing) socket.destroy();
      endpoint.sniffing.clear();
    }
    await Promise.all(closing);
  }
}

export function listenError(err: NodeJS.ErrnoException, kind: string, address: Listen): KeelError {
  const where = describeListen(address);
  if (err.code === 'EADDRINUSE') {
    return new KeelError('KEEL_PORT_IN_USE', `the ${kind} address ${where} is already in use`, {
      hint: `stop what listens there, or give --${kind} another address`,
    });
  }
  return new KeelError('KEEL_ROUTER_LISTEN_FAILED', `cannot listen on ${where} for ${kind}: ${err.message}`);
}
