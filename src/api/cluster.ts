/**
 * GET /cluster and GET /history: the cluster as etcd holds it, read at most
 * a moment ago (a shared read: a flood of GETs is not a flood of etcd reads),
 * in shapes close to Patroni's.
 */
import type { FastifyInstance } from 'fastify';
import type { ClusterView, HistoryEntry, MemberValue } from '../model/values.js';
import { redactSecrets } from '../errors.js';
import { formatLsn, lagBytes } from '../model/lsn.js';
import type { ApiOptions } from './handle.js';
import type { SharedRead } from './read-cache.js';

export interface ClusterMemberJson {
  name: string;
  /** leader (holds the key) | sync_standby | replica | primary (runs one without the key) | unknown */
  role: string;
  /** streaming | running | otherwise the agent's state (stopped, cloning, rewinding...) */
  state: string;
  api_url: string;
  host: string;
  port: number;
  timeline: number | null;
  /** replicas: bytes behind the leader's published position; null when unknown or not a replica */
  lag: number | null;
  zone: string;
  tags: MemberValue['tags'];
  reason: string;
}

export interface ClusterJson {
  scope: string;
  leader: string | null;
  members: ClusterMemberJson[];
  scheduled_switchover?: { from: string | null; to: string | null; failover: boolean; requested_at: string };
}

/** The leader's newest known WAL position: its member key or the status key, whichever is further. */
export function leaderPosition(view: ClusterView): number | null {
  const leader = view.members.find((m) => m.name === view.leader?.value.name);
  const known = [view.status?.value.walLsn, leader?.walLsn].filter((x): x is number => typeof x === 'number');
  return known.length === 0 ? null : Math.max(...known);
}

export function clusterJson(view: ClusterView, scope: string): ClusterJson {
  const leaderName = view.leader?.value.name ?? null;
  const syncSet = new Set(view.sync?.value.members ?? []);
  const leaderLsn = leaderPosition(view);
  const members = view.members.map((m): ClusterMemberJson => {
    const role =
      m.name === leaderName ? 'leader' : m.role === 'replica' ? (syncSet.has(m.name) ? 'sync_standby' : 'replica') : m.role;
    const state = !m.running ? m.state : m.role === 'replica' && m.streaming ? 'streaming' : 'running';
    return {
      name: m.name,
      role,
      state,
      api_url: m.apiUrl,
      host: m.pgHost,
      port: m.pgPort,
      timeline: m.timeline,
      lag: m.role === 'replica' ? lagBytes(leaderLsn, m) : null,
      zone: m.zone,
      tags: m.tags,
      reason: redactSecrets(m.reason),
    };
  });
  const json: ClusterJson = { scope, leader: leaderName, members };
  const pending = view.switchover?.value;
  if (pending !== undefined) {
    json.scheduled_switchover = { from: pending.from, to: pending.to, failover: pending.failover, requested_at: new Date(pending.requestedAtMs).toISOString() };
  }
  return json;
}

export function historyJson(entries: HistoryEntry[]): { timeline: number; lsn: number; lsn_text: string; new_leader: string; timestamp: string; reason: string }[] {
  return entries.map((e) => ({
    timeline: e.timeline,
    lsn: e.switchLsn,
    lsn_text: formatLsn(e.switchLsn),
    new_leader: e.leader,
    timestamp: new Date(e.atMs).toISOString(),
    reason: redactSecrets(e.reason),
  }));
}

export function registerCluster(app: FastifyInstance, clusterReads: SharedRead<ClusterView>, options: ApiOptions): void {
  app.get('/cluster', async () => clusterJson(await clusterReads.get(), options.node.cluster));
  app.get('/history', async () => historyJson((await clusterReads.get()).history?.value.entries ?? []));
}
