/**
 * Target tracking over replicas, as managed databases do it: keep the
 * average of a metric near the target by choosing
 * ceil(replicas * average / target), within min and max. Pure.
 *
 * Only replicas the autoscaler added (spec.scaling.added) are removed by it,
 * so it never takes back what an operator declared; it never removes the
 * leader; and it does nothing while any node is not streaming, since a
 * cluster in repair gives metrics that mean nothing.
 */
import type { AutoscaleMetric, ControllerReport, MemberValue, SpecValue } from '../model/values.js';
import { nodeIndex, type NodeHealth } from './plan.js';
import { desiredReplicas } from './spec.js';

export type HoldCode =
  | 'disabled'
  | 'not-settled'
  | 'no-metrics'
  | 'within-target'
  | 'cooldown-out'
  | 'cooldown-in'
  | 'scale-in-disabled'
  | 'nothing-to-remove';

interface Common {
  reason: string;
  /** the average the decision looked at; null when there was none */
  metric: number | null;
  /** the replicas target tracking asks for; null when it did not get that far */
  wantedReplicas: number | null;
  currentReplicas: number;
}

export type AutoscaleDecision =
  | (Common & { kind: 'hold'; code: HoldCode })
  | (Common & { kind: 'out'; add: number })
  | (Common & { kind: 'in'; remove: string });

/** The decision as the controller publishes it: in a few words (`hold (cooldown-in)`, `add 2`, `remove node5`), with its figures. */
export function autoscaleSummary(decision: AutoscaleDecision): ControllerReport['autoscale'] {
  const words = decision.kind === 'hold' ? `hold (${decision.code})` : decision.kind === 'out' ? `add ${decision.add}` : `remove ${decision.remove}`;
  return { decision: words, reason: decision.reason, metric: decision.metric, currentReplicas: decision.currentReplicas, wantedReplicas: decision.wantedReplicas };
}

const metricLabel: Record<AutoscaleMetric, string> = {
  cpu: 'replica CPU %',
  connections: 'connections per replica',
  roQps: 'read queries/s per replica',
};

function metricOf(member: MemberValue, metric: AutoscaleMetric): number | null {
  const m = member.metrics;
  if (m === undefined) return null;
  return metric === 'cpu' ? m.cpuPercent : metric === 'connections' ? m.connections : m.roQueriesPerSecond;
}

/** The average of the metric over streaming replicas that report it; null when none does. */
export function replicaAverage(health: NodeHealth[], members: MemberValue[], metric: AutoscaleMetric): number | null {
  const values = health
    .filter((n) => !n.leader && n.streaming)
    .map((n) => members.find((m) => m.name === n.name))
    .map((m) => (m === undefined ? null : metricOf(m, metric)))
    .filter((v): v is number => v !== null);
  return values.length === 0 ? null : values.reduce((a, b) => a + b, 0) / values.length;
}

export function autoscale(spec: SpecValue, health: NodeHealth[], members: MemberValue[], nowMs: number, maxNodes: number): AutoscaleDecision {
  const policy = spec.autoscale;
  const current = desiredReplicas(spec);
  const base = { currentReplicas: current, metric: null, wantedReplicas: null };
  const hold = (code: HoldCode, reason: string, more: Partial<Common> = {}): AutoscaleDecision => ({ ...base, ...more, kind: 'hold', code, reason });
  if (!policy.enabled) return hold('disabled', 'autoscaling is off');

  const unsettled = health.filter((n) => !n.streaming).map((n) => `${n.name} ${n.leader ? 'does not run a primary' : 'is not streaming'}`);
  if (health.length !== current + 1) unsettled.unshift(`${health.length} of ${current + 1} nodes exist`);
  if (unsettled.length > 0) return hold('not-settled', `no scaling while ${unsettled.join(', ')}`);

  const average = replicaAverage(health, members, policy.metric);
  const upper = Math.min(policy.maxReplicas, maxNodes - 1);
  let wanted: number;
  let why: string;
  if (average === null) {
    if (current >= policy.minReplicas && current <= upper) return hold('no-metrics', `no streaming replica reports ${metricLabel[policy.metric]} yet`);
    wanted = Math.min(Math.max(current, policy.minReplicas), upper);
    why = `${current} replicas, outside [${policy.minReplicas}, ${upper}]`;
  } else {
    const tracked = Math.ceil((current * average) / policy.target - 1e-9);
    wanted = Math.min(Math.max(tracked, policy.minReplicas), upper);
    why = `${metricLabel[policy.metric]} ${average.toFixed(1)} against target ${policy.target} on ${current} replicas asks for ${tracked}` + (tracked === wanted ? '' : `, bounded to ${wanted} by [${policy.minReplicas}, ${upper}]`);
  }
  const seen = { metric: average, wantedReplicas: wanted };

  if (wanted > current) {
    const last = spec.scaling.lastScaleOutAtMs;
    const waitMs = last === null ? 0 : last + policy.scaleOutCooldownSeconds * 1000 - nowMs;
    if (waitMs > 0) return hold('cooldown-out', `${why}: scale-out cooldown, ${Math.ceil(waitMs / 1000)} s left`, seen);
    return { ...base, ...seen, kind: 'out', add: wanted - current, reason: `${why}: adding ${wanted - current} replica(s)` };
  }
  if (wanted < current) {
    if (!policy.scaleInEnabled) return hold('scale-in-disabled', `${why}: scale-in is disabled`, seen);
    // a scale-in soon after any scaling would judge load the last change has not settled yet
    const last = Math.max(spec.scaling.lastScaleOutAtMs ?? 0, spec.scaling.lastScaleInAtMs ?? 0);
    const waitMs = last === 0 ? 0 : last + policy.scaleInCooldownSeconds * 1000 - nowMs;
    if (waitMs > 0) return hold('cooldown-in', `${why}: scale-in cooldown, ${Math.ceil(waitMs / 1000)} s left`, seen);
    const victim = scaleInVictim(spec, health);
    if (victim === null) return hold('nothing-to-remove', `${why}, but only replicas the autoscaler added are removed by it and none of them is a replica now`, seen);
    return { ...base, ...seen, kind: 'in', remove: victim, reason: `${why}: removing ${victim}, which the autoscaler added` };
  }
  return hold('within-target', `${why}: ${current} replicas are right`, seen);
}

/** One of the autoscaler's replicas, from the most crowded zone, the newest first; never the leader. */
export function scaleInVictim(spec: SpecValue, health: NodeHealth[]): string | null {
  const crowd = (zone: string) => health.filter((n) => n.zone === zone).length;
  const own = health.filter((n) => !n.leader && spec.scaling.added.includes(n.name));
  own.sort((a, b) => crowd(b.zone) - crowd(a.zone) || b.firstSeenMs - a.firstSeenMs || nodeIndex(b.name) - nodeIndex(a.name));
  return own[0]?.name ?? null;
}

/**
 * A replica the autoscaler added may become the leader; the leader is never
 * its to remove, so its record moves to a replica the operator declared.
 * Returns the spec to write, or null when nothing moves.
 */
export function moveRecordOffLeader(spec: SpecValue, health: NodeHealth[]): SpecValue | null {
  const leader = health.find((n) => n.leader);
  if (leader === undefined || !spec.scaling.added.includes(leader.name)) return null;
  const stand = health
    .filter((n) => !n.leader && !spec.scaling.added.includes(n.name))
    .sort((a, b) => b.firstSeenMs - a.firstSeenMs || nodeIndex(b.name) - nodeIndex(a.name))[0];
  if (stand === undefined) return null;
  const added = spec.scaling.added.map((name) => (name === leader.name ? stand.name : name));
  return { ...spec, scaling: { ...spec.scaling, added } };
}
