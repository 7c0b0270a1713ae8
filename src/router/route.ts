/**
 * Where the router sends connections, decided from one read of etcd. Pure: no
 * I/O, time comes in as `nowMs`. The control plane calls it on every change and
 * hands the result to an engine.
 */
import { memberLsn } from '../model/lsn.js';
import { switchoverHolds, type ClusterView, type MemberValue } from '../model/values.js';

export interface Backend {
  /** member name: engines key connections and slots by it */
  name: string;
  host: string;
  port: number;
}

export interface Routes {
  /** the leader's PostgreSQL; null: new rw connections wait, existing ones are closed */
  rw: Backend | null;
  /** replicas to balance reads over (or the leader as a fallback); empty: new ro connections wait */
  ro: Backend[];
  /**
   * no new reads, the open ro connections go on: replicas about to be removed,
   * and running replicas left out for a moment (not streaming while they
   * re-point, lagging), whose readers need not lose their sessions for it
   */
  roDraining: Backend[];
  /** new rw connections wait even though rw is set (a switchover is pending); existing ones drain */
  holdRw: boolean;
  /** requestedAtMs of the pending switchover this hold is for (the router reports it in `routers/<id>`); null otherwise */
  holdingFor: number | null;
  /**
   * the running replica a pending switchover names, which rw goes to next: the
   * pool points at it while paused, so that its move is done before the hold ends
   */
  rwNext: Backend | null;
  /** one sentence for the log */
  reason: string;
}

export interface RouteOptions {
  /** a replica further behind the leader than this serves no reads */
  roMaxLagBytes: number;
  /** send reads to the leader when no replica qualifies */
  roFallbackToLeader: boolean;
  /** a member key older than this is stale (its agent stopped publishing) */
  ttlSeconds: number;
  /** a switchover whose hold began longer ago than this no longer holds new connections (a leftover key must not block writes) */
  switchoverHoldMs: number;
  /** a replica promoted less than this ago keeps the reads it was serving (keepsItsReads) */
  promotedReadsMs: number;
}

export const defaultRouteOptions: RouteOptions = {
  roMaxLagBytes: 16 * 1024 * 1024,
  roFallbackToLeader: true,
  ttlSeconds: 10,
  switchoverHoldMs: 30_000,
  promotedReadsMs: 30_000,
};

export const noRoutes: Routes = { rw: null, ro: [], roDraining: [], holdRw: true, holdingFor: null, rwNext: null, reason: 'no view of the cluster yet' };

const backendOf = (m: MemberValue): Backend => ({ name: m.name, host: m.pgHost, port: m.pgPort });

/**
 * A replica that takes the leader key keeps the reads it was serving, as a
 * drained replica does: they go on, on a primary now, while it gets no new
 * ones; for `promotedReadsMs` after its promotion (then its ro slot goes, with
 * what is left on it).
 */
function keepsItsReads(view: ClusterView, leader: MemberValue, nowMs: number, options: RouteOptions): boolean {
  if (!runsAndPublishes(leader, nowMs, options)) return false;
  // still promoting: no history entry of its own yet
  if (leader.role === 'replica') return true;
  const entries = view.history?.value.entries ?? [];
  const last = entries[entries.length - 1];
  return last !== undefined && last.leader === leader.name && nowMs - last.atMs < options.promotedReadsMs;
}

export function computeRoutes(view: ClusterView, nowMs: number, options: RouteOptions): Routes {
  const leaderName = view.leader?.value.name ?? null;
  const leader = leaderName === null ? undefined : view.members.find((m) => m.name === leaderName);
  const notes: string[] = [];

  // The leader key alone is the right to accept writes; the member key says where and whether it runs.
  let rw: Backend | null = null;
  if (leaderName === null) notes.push('no leader: holding new rw connections');
  else if (leader === undefined) notes.push(`leader ${leaderName} has no member key: holding new rw connections`);
  else if (leader.role !== 'primary' || !leader.running) notes.push(`leader ${leaderName} does not run a primary yet: holding new rw connections`);
  else rw = backendOf(leader);

  const switchover = view.switchover?.value;
  const switchoverPending =
    rw !== null &&
    switchover !== undefined &&
    (switchover.from === null || switchover.from === leaderName) &&
    switchoverHolds(switchover) &&
    // from the hold's start: a long checkpoint before it must not shorten it
    nowMs - (switchover.holdFromMs ?? switchover.requestedAtMs) < options.switchoverHoldMs;
  if (rw !== null) {
    notes.push(switchoverPending ? `${switchover!.failover ? 'failover' : 'switchover'} from ${leaderName} pending: holding new rw connections, draining the others` : `rw -> ${leaderName}`);
  }
  const next = switchoverPending && switchover!.to !== null ? view.members.find((m) => m.name === switchover!.to) : undefined;
  const rwNext = next !== undefined && next.role === 'replica' && next.running ? backendOf(next) : null;

  const referenceLsn = leader?.walLsn ?? view.status?.value.walLsn ?? null;
  const ro: Backend[] = [];
  const roDraining: Backend[] = [];
  const excluded: string[] = [];
  const draining = new Set(view.draining.map((d) => d.name));
  for (const m of view.members) {
    if (m.name === leaderName) continue;
    const why = replicaProblem(m, referenceLsn, nowMs, options);
    if (why === null && draining.has(m.name)) roDraining.push(backendOf(m));
    else if (why === null) ro.push(backendOf(m));
    else {
      // a replica that still runs and publishes keeps its open reads (a switchover re-points every replica)
      const resting = m.role === 'replica' && runsAndPublishes(m, nowMs, options);
      if (resting) roDraining.push(backendOf(m));
      excluded.push(`${m.name} ${why}${resting ? ' (its open reads go on)' : ''}`);
    }
  }
  if (ro.length === 0 && options.roFallbackToLeader && rw !== null) {
    ro.push(rw);
    notes.push(`ro -> ${leaderName} (no replica qualifies)`);
  } else if (ro.length === 0) {
    notes.push('ro: no backend, holding new ro connections');
  } else {
    notes.push(`ro -> ${ro.map((b) => b.name).join(', ')}`);
  }
  if (leader !== undefined && !ro.some((b) => b.name === leader.name) && keepsItsReads(view, leader, nowMs, options)) roDraining.push(backendOf(leader));
  if (draining.size > 0 && roDraining.some((b) => draining.has(b.name))) {
    notes.push(`draining (no new reads): ${roDraining.filter((b) => draining.has(b.name)).map((b) => b.name).join(', ')}`);
  }
  if (excluded.length > 0) notes.push(`not serving reads: ${excluded.join('; ')}`);

  return {
    rw,
    ro,
    roDraining,
    holdRw: rw === null || switchoverPending,
    holdingFor: switchoverPending ? switchover!.requestedAtMs : null,
    rwNext,
    reason: notes.join('; '),
  };
}

/** PostgreSQL runs there and its agent still publishes: reads open on it can go on. */
function runsAndPublishes(m: MemberValue, nowMs: number, options: RouteOptions): boolean {
  return m.running && nowMs - m.updatedAtMs <= options.ttlSeconds * 1000;
}

/** Why a member may not serve reads, or null when it may. */
function replicaProblem(m: MemberValue, referenceLsn: number | null, nowMs: number, options: RouteOptions): string | null {
  if (m.role !== 'replica') return `is ${m.role}`;
  if (!m.running) return 'is not running';
  if (!m.streaming) return 'is not streaming';
  if (m.tags.noloadbalance === true) return 'is tagged noloadbalance';
  if (nowMs - m.updatedAtMs > options.ttlSeconds * 1000) return `has not published for ${Math.round((nowMs - m.updatedAtMs) / 1000)} s`;
  if (referenceLsn !== null) {
    const lagBytes = referenceLsn - memberLsn(m);
    if (lagBytes > options.roMaxLagBytes) return `lags ${lagBytes} bytes (> ${options.roMaxLagBytes})`;
  }
  return null;
}

/** What the router serves when it cannot trust its view of etcd: no writes; reads go on from the last view. */
export function failClosed(last: Routes, why: string): Routes {
  return { rw: null, ro: last.ro, roDraining: last.roDraining, holdRw: true, holdingFor: null, rwNext: null, reason: `${why}: failing closed, holding new rw connections` };
}

export const sameBackend = (a: Backend | null, b: Backend | null): boolean =>
  a === b || (a !== null && b !== null && a.name === b.name && a.host === b.host && a.port === b.port);

const sameBackends = (a: Backend[], b: Backend[]): boolean => a.length === b.length && a.every((backend, i) => sameBackend(backend, b[i] ?? null));

/** Whether two route sets send connections to the same places (reasons aside). */
export function sameRoutes(a: Routes, b: Routes): boolean {
  return (
    a.holdRw === b.holdRw &&
    a.holdingFor === b.holdingFor &&
    sameBackend(a.rw, b.rw) &&
    sameBackend(a.rwNext, b.rwNext) &&
    sameBackends(a.ro, b.ro) &&
    sameBackends(a.roDraining, b.roDraining)
  );
}
