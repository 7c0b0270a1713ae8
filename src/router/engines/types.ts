import type { Routes } from '../route.js';

/** host and port an endpoint listens on */
export interface ListenAddress {
  host: string;
  port: number;
}

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
