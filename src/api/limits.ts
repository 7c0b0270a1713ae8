/**
 * The REST API's timeouts and connection cap: what node.yml's `api` block
 * leaves out gets these defaults. A client that sends its headers one byte a
 * second, or holds a connection open without asking anything, costs a socket
 * for seconds, never for good.
 */
import type { NodeConfig } from '../config/schema.js';

export interface ApiLimits {
  /** the whole request, body included */
  requestTimeoutMs: number;
  /** the TLS handshake, and then the headers */
  headersTimeoutMs: number;
  /** between two requests on a kept-alive connection */
  idleTimeoutMs: number;
  /** nothing moving either way, an answer being prepared included (a restart waits for PostgreSQL to stop) */
  connectionTimeoutMs: number;
  maxConnections: number;
}

export const defaultApiLimits: ApiLimits = {
  requestTimeoutMs: 10_000,
  headersTimeoutMs: 5000,
  idleTimeoutMs: 5000,
  connectionTimeoutMs: 30_000,
  maxConnections: 256,
};

/** The limits of node.yml's `api` block, defaults filled in; headers never get longer than the whole request. */
export function apiLimits(api: Partial<Pick<NodeConfig['api'], keyof ApiLimits>>): ApiLimits {
  const limits = { ...defaultApiLimits };
  for (const key of Object.keys(limits) as (keyof ApiLimits)[]) {
    const value = api[key];
    if (value !== undefined) limits[key] = value;
  }
  // Node refuses a headers timeout above the request timeout; a short request timeout alone shortens both.
  limits.headersTimeoutMs = Math.min(limits.headersTimeoutMs, limits.requestTimeoutMs);
  return limits;
}

/**
 * How often Node looks for requests past their headers or request timeout (its default, 30 s, would let a
 * slowloris stay that long): a request is closed between its timeout and its timeout plus this.
 */
export function timeoutCheckIntervalMs(limits: ApiLimits): number {
  return Math.max(100, Math.min(1000, Math.floor(limits.headersTimeoutMs / 2)));
}
