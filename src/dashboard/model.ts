/**
 * What the dashboard shows, built from one read of etcd (the cluster, the
 * controller key, the spec), the router's /status and the backup hook. Pure:
 * values in, the page's state out; the feed (feed.ts) does the reading.
 */
import { leaderPosition } from '../api/cluster.js';
import { defaultDynamicConfig } from '../config/schema.js';
import { redactSecrets } from '../errors.js';
import { lagBytes } from '../model/lsn.js';
import type { ClusterView, ControllerValue, MemberMetrics, SpecValue } from '../model/values.js';
import type { RouterStatus } from '../router/metrics.js';

export interface MemberCard {
  name: string;
  zone: string;
  /** leader | sync standby | replica | primary (runs one without the key) | unknown */
  role: string;
  /** the agent's state */
  state: string;
  running: boolean;
  streaming: boolean;
  timeline: number | null;
  /** replicas: bytes behind the leader's position; null when unknown or not a replica */
  lagBytes: number | null;
  sync: boolean;
  draining: boolean;
  /** the sentence of its last decision */
  reason: string;
  /** how old its member key is */
  ageMs: number;
  address: string;
  metrics: MemberMetrics | null;
  /** a member whose key went away (its lease ended: dead, fenced, removed), shown as last seen; null while it has a key */
  goneSinceMs: number | null;
}

/**
 * Backups, once a cluster has them: the hook (BackupSource) gives a title, a
 * summary and rows, and the page shows the section only when it gives one.
 */
export interface BackupSection {
  summary: string;
  rows: { label: string; value: string }[];
  table?: { columns: string[]; rows: string[][] };
}
export type BackupSource = () => Promise<BackupSection | null>;

export interface RouterPanel {
  url: string;
  /** null while the router cannot be read; `error` says why */
  status: RouterStatus | null;
  error: string | null;
}

export interface AutoscalePanel {
  enabled: boolean;
  metric: string;
  current: number | null;
  target: number;
  decision: string;
  reason: string;
  replicas: number;
  minReplicas: number;
  maxReplicas: number;
  /** the active controller's own answer, and when it gave it */
  decidedAtMs: number;
}

export interface DashboardState {
  cluster: string;
  atMs: number;
  /** the etcd read this state comes from; `error` while etcd cannot be read (the rest is the last good read) */
  etcd: { revision: string | null; error: string | null };
  leader: string | null;
  timeline: number | null;
  synchronousMode: string;
  zones: { zone: string; members: MemberCard[] }[];
  switchover: { from: string | null; to: string | null; failover: boolean; requestedAtMs: number } | null;
  controller: { name: string; plan: string | null; reportAtMs: number | null } | null;
  autoscale: AutoscalePanel | null;
  spec: { nodes: number; zones: string[]; instanceClass: string; replaceAfterSeconds: number; autoscaled: string[] } | null;
  config: { ttl: number; loop_wait: number; maximum_lag_on_failover: number; synchronous_mode: string; synchronous_node_count: number };
  router: RouterPanel | null;
  backups: BackupSection | null;
}

export interface StateInput {
  cluster: string;
  view: ClusterView;
  controller: ControllerValue | null;
  spec: SpecValue | null;
  router: RouterPanel | null;
  backups: BackupSection | null;
  etcdError: string | null;
  /** members shown before that have no key now (departedMembers) */
  departed?: MemberCard[];
  nowMs: number;
}

export function memberCards(view: ClusterView, nowMs: number): MemberCard[] {
  const leaderName = view.leader?.value.name ?? null;
  const syncSet = new Set(view.sync?.value.members ?? []);
  const draining = new Set(view.draining.map((d) => d.name));
  const position = leaderPosition(view);
  return [...view.members]
    .sort((a, b) => a.name.localeCompare(b.name, 'en', { numeric: true }))
    .map((m) => ({
      name: m.name,
      zone: m.zone,
      role: m.name === leaderName ? 'leader' : m.role === 'replica' ? (syncSet.has(m.name) ? 'sync standby' : 'replica') : m.role,
      state: m.state,
      running: m.running,
      streaming: m.streaming,
      timeline: m.timeline,
      lagBytes: m.role === 'replica' ? lagBytes(position, m) : null,
      sync: syncSet.has(m.name),
      draining: draining.has(m.name),
      reason: redactSecrets(m.reason),
      ageMs: Math.max(0, nowMs - m.updatedAtMs),
      address: `${m.pgHost}:${m.pgPort}`,
      metrics: m.metrics ?? null,
      goneSinceMs: null,
    }));
}

/** How long a member that lost its key stays on the page. */
export const goneShownMs = 10 * 60 * 1000;

/**
 * The members that were on the page and have no key now, as they were last
 * seen, since when they are gone; one that comes back, or is gone longer than
 * goneShownMs, leaves the list.
 */
export function departedMembers(previous: MemberCard[], current: MemberCard[], nowMs: number): MemberCard[] {
  const present = new Set(current.map((c) => c.name));
  return previous
    .filter((c) => !present.has(c.name))
    .map((c) => (c.goneSinceMs !== null ? c : { ...c, role: 'gone', running: false, streaming: false, sync: false, lagBytes: null, goneSinceMs: nowMs }))
    .filter((c) => nowMs - c.goneSinceMs! < goneShownMs);
}

/** Members grouped by zone: the spec's zones first (in its order, empty ones too), then any other zone. */
export function byZone(cards: MemberCard[], specZones: string[]): DashboardState['zones'] {
  const zones = [...specZones, ...[...new Set(cards.map((c) => c.zone))].filter((z) => !specZones.includes(z)).sort()];
  return zones.map((zone) => ({ zone, members: cards.filter((c) => c.zone === zone) }));
}

export function buildState(input: StateInput): DashboardState {
  const { view, controller, spec } = input;
  const config = view.config?.value ?? defaultDynamicConfig;
  const leaderName = view.leader?.value.name ?? null;
  const report = controller?.report ?? null;
  const pending = view.switchover?.value ?? null;
  return {
    cluster: input.cluster,
    atMs: input.nowMs,
    etcd: { revision: view.revision, error: input.etcdError },
    leader: leaderName,
    timeline: view.members.find((m) => m.name === leaderName)?.timeline ?? null,
    synchronousMode: config.synchronous_mode,
    zones: byZone([...memberCards(view, input.nowMs), ...(input.departed ?? [])], spec?.zones ?? []),
    switchover: pending === null ? null : { from: pending.from, to: pending.to, failover: pending.failover, requestedAtMs: pending.requestedAtMs },
    controller: controller === null ? null : { name: controller.name, plan: report?.plan ?? null, reportAtMs: report?.atMs ?? null },
    autoscale:
      spec === null
        ? null
        : {
            enabled: spec.autoscale.enabled,
            metric: spec.autoscale.metric,
            current: report?.autoscale.metric ?? null,
            target: spec.autoscale.target,
            decision: report?.autoscale.decision ?? 'no controller acts',
            reason: report?.autoscale.reason ?? 'no active controller has decided anything yet',
            replicas: report?.autoscale.currentReplicas ?? spec.nodes - 1 + spec.scaling.added.length,
            minReplicas: spec.autoscale.minReplicas,
            maxReplicas: spec.autoscale.maxReplicas,
            decidedAtMs: report?.atMs ?? input.nowMs,
          },
    spec: spec === null ? null : { nodes: spec.nodes, zones: spec.zones, instanceClass: spec.instanceClass, replaceAfterSeconds: spec.replaceAfterSeconds, autoscaled: spec.scaling.added },
    config: {
      ttl: config.ttl,
      loop_wait: config.loop_wait,
      maximum_lag_on_failover: config.maximum_lag_on_failover,
      synchronous_mode: config.synchronous_mode,
      synchronous_node_count: config.synchronous_node_count,
    },
    router: input.router,
    backups: input.backups,
  };
}
