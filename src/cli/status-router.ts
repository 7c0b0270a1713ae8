/**
 * The router as `keel status` shows it: which engine serves each endpoint and
 * why (`--engine auto` takes HAProxy where it is installed). The router keeps
 * nothing in etcd, so this is read from its GET /status: `keel up`'s router
 * answers on P+4 over HTTPS under the cluster CA.
 */
import { readFileSync } from 'node:fs';
import { readRouterStatus } from '../dashboard/router-client.js';
import { describeError } from '../errors.js';
import { portOffsets, type ClusterFile, type LocalLayout } from '../providers/local-layout.js';

export interface RouterEndpointSummary {
  address: string;
  /** the engine that carries its connections; null while the router does not answer */
  engine: string | null;
}

export interface RouterSummary {
  url: string;
  engine: string | null;
  /** why this engine serves (e.g. "--engine auto: HAProxy is installed at /usr/sbin/haproxy") */
  why: string | null;
  endpoints: { rw: RouterEndpointSummary; ro: RouterEndpointSummary };
  /** why the router could not be asked */
  error: string | null;
}

/** Asks a local cluster's router which engine serves; an unreachable router is a summary with an error, not a failure. */
export async function localRouterSummary(layout: LocalLayout, cluster: ClusterFile, timeoutMs = 1500): Promise<RouterSummary> {
  const url = `https://127.0.0.1:${cluster.portBase + portOffsets.routerApi}`;
  const address = (offset: number) => `127.0.0.1:${cluster.portBase + offset}`;
  try {
    const status = await readRouterStatus(url, readFileSync(layout.caFiles.cert), timeoutMs);
    const engine = status.engine;
    return {
      url,
      engine,
      why: status.engineWhy ?? null,
      endpoints: { rw: { address: address(portOffsets.routerRw), engine }, ro: { address: address(portOffsets.routerRo), engine } },
      error: null,
    };
  } catch (err) {
    return {
      url,
      engine: null,
      why: null,
      endpoints: { rw: { address: address(portOffsets.routerRw), engine: null }, ro: { address: address(portOffsets.routerRo), engine: null } },
      error: describeError(err),
    };
  }
}

/** One line for the text output. */
export function routerLine(summary: RouterSummary): string {
  if (summary.engine === null) return `router: no answer from ${summary.url}/status (${summary.error ?? 'unknown'})`;
  const { rw, ro } = summary.endpoints;
  return `router: rw ${rw.address} and ro ${ro.address} served by the ${summary.engine} engine${summary.why === null ? '' : ` (${summary.why})`}`;
}
