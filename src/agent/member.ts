import type { NodeConfig } from '../config/schema.js';
import type { MemberArchive, MemberMetrics, MemberValue } from '../model/values.js';
import type { State } from './states.js';
import type { Snapshot } from './snapshot.js';

/** host and port another host uses to reach `listen` (an address, or host:port) */
export function splitHostPort(address: string): { host: string; port: number } {
  const at = address.lastIndexOf(':');
  return { host: address.slice(0, at).replace(/^\[|\]$/g, ''), port: Number(address.slice(at + 1)) };
}

/** Where other hosts reach this node's REST API: https when the node has its certificate. */
export function apiUrl(config: Pick<NodeConfig, 'api' | 'tls'>): string {
  const { host, port } = splitHostPort(config.api.connectAddress ?? config.api.listen);
  return `${config.tls === undefined ? 'http' : 'https'}://${host.includes(':') ? `[${host}]` : host}:${port}`;
}

/** The member key this agent publishes, from what it just observed and decided. */
export function memberValue(config: NodeConfig, snap: Snapshot, state: State, reason: string, agentPid: number, metrics?: MemberMetrics, archive?: MemberArchive): MemberValue {
  const runtime = snap.pg.runtime;
  const pgAddress = config.postgres.connectAddress
    ? splitHostPort(config.postgres.connectAddress)
    : { host: config.postgres.listen === '0.0.0.0' ? '127.0.0.1' : config.postgres.listen, port: config.postgres.port };
  const upstream =
    runtime !== null && runtime.inRecovery && runtime.upstreamHost !== null
      ? (snap.cluster?.members.find((m) => m.pgHost === runtime.upstreamHost && m.pgPort === runtime.upstreamPort)?.name ?? null)
      : null;
  return {
    v: 1,
    name: config.name,
    role: runtime === null ? 'unknown' : runtime.inRecovery ? 'replica' : 'primary',
    state,
    running: runtime !== null,
    streaming: runtime?.streaming ?? false,
    timeline: runtime?.timeline ?? snap.pg.control?.timeline ?? null,
    walLsn: runtime?.walLsn ?? null,
    receivedLsn: runtime?.receivedLsn ?? null,
    replayedLsn: runtime?.replayedLsn ?? null,
    upstream,
    ...(runtime !== null && runtime.inRecovery && runtime.slots.length > 0 ? { slots: runtime.slots } : {}),
    zone: config.zone,
    tags: config.tags,
    apiUrl: apiUrl(config),
    pgHost: pgAddress.host,
    pgPort: pgAddress.port,
    reason,
    systemId: snap.pg.control?.systemId ?? null,
    agentPid,
    postmasterPid: snap.pg.postmasterPid,
    dataDir: config.postgres.dataDir,
    updatedAtMs: snap.nowMs,
    ...(metrics === undefined ? {} : { metrics }),
    // only while PostgreSQL runs as primary: a replica's archiver is idle
    ...(archive === undefined || runtime === null || runtime.inRecovery ? {} : { archive }),
  };
}
