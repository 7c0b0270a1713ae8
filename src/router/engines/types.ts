import type { Routes } from '../route.js';

/** host and port an endpoint listens on */
export interface ListenAddress {
  host: string;
  port: number;
}

/** where a builtin engine listens: a TCP address, or a unix socket (the haproxy engine's holder) */
export type Listen = ListenAddress | { path: string };

export const describeListen = (a: Listen): string => ('path' in a ? a.path : a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`);

/**
 * The data plane. `apply` may be called at any time after `start`, often with
 * the same routes; it resolves once new connections follow them and
 * connections to backends that left have been closed.
 */
export interface RouterEngine {
  readonly name: string;
  /** Listens on both endpoints; throws KEEL_PORT_IN_USE or KEEL_BINARY_MISSING. Until the first apply every new connection waits. */
  start(): Promise<void>;
  apply(routes: Routes): Promise<void>;
  /** Stops listening and closes every connection. */
  stop(): Promise<void>;
  /** What each endpoint carries now and has carried since start, for /metrics and the dashboard. */
  stats(): Promise<Record<'rw' | 'ro', EndpointStats>>;
}

/** One endpoint's connections; a count an engine cannot know is absent. */
export interface EndpointStats {
  /** connections forwarded now, by member name */
  connections: Record<string, number>;
  /** connections accepted and not yet forwarded: waiting for a backend, or for their first message */
  waiting: number;
  acceptedTotal: number;
  /** connections that had to wait for a backend (no leader, a switchover, no replica) */
  heldTotal?: number;
  /** waits that ended without a backend: the client was told so and closed */
  holdTimeoutsTotal?: number;
  /** connections closed at once because the endpoint held its maximum */
  refusedTotal: number;
  /** connections closed because their first message did not come in time */
  firstBytesTimeoutsTotal?: number;
  /** bytes from clients and to clients */
  receivedBytesTotal: number;
  sentBytesTotal: number;
}

export interface EngineOptions {
  rw: ListenAddress;
  ro: ListenAddress;
  /** how long a new connection waits for a backend before it is closed */
  waitTimeoutMs: number;
  /** how long connecting to a backend may take before the client is dropped */
  connectTimeoutMs: number;
  /** how long a new client may take to send its whole first message (startup, SSLRequest, cancel) before it is closed */
  firstBytesTimeoutMs: number;
  /** connections one endpoint holds at most; a new one beyond is closed at once */
  maxConnections: number;
}
