import { describe, expect, it } from 'vitest';
import type { ClusterView } from '../../src/model/values.js';
import { computeRoutes, defaultRouteOptions, failClosed, sameRoutes, type RouteOptions } from '../../src/router/route.js';
import { NOW, cluster, leaderKey, member, primaryMember } from './fixtures.js';

interface Case {
  name: string;
  view: ClusterView;
  options?: Partial<RouteOptions>;
  rw: string | null;
  ro: string[];
  holdRw: boolean;
  reason: RegExp;
}

const MiB = 1024 * 1024;
const healthy = () => [primaryMember('node1', { walLsn: 100 * MiB }), member('node2', { receivedLsn: 100 * MiB, replayedLsn: 100 * MiB }), member('node3', { receivedLsn: 99 * MiB, replayedLsn: 99 * MiB })];
/** A request; a planned one its leader prepared already (routers hold from holdFromMs) unless `prepared` is false. */
const switchover = (from: string | null, over: { to?: string | null; requestedAtMs?: number; failover?: boolean; prepared?: boolean } = {}): ClusterView['switchover'] => {
  const requestedAtMs = over.requestedAtMs ?? NOW - 1000;
  const failover = over.failover ?? false;
  const held = failover || over.prepared === false ? {} : { holdFromMs: requestedAtMs + 300 };
  return { value: { v: 1, from, to: over.to ?? null, failover, requestedAtMs, ...held }, modRevision: '20' };
};

const cases: Case[] = [
  {
    name: 'healthy cluster: rw to the leader, ro to both replicas',
    view: cluster({ leader: leaderKey('node1'), members: healthy() }),
    rw: 'node1', ro: ['node2', 'node3'], holdRw: false, reason: /rw -> node1; ro -> node2, node3$/,
  },
  {
    name: 'no leader key: hold rw, replicas still serve reads',
    view: cluster({ members: [member('node2'), member('node3')] }),
    rw: null, ro: ['node2', 'node3'], holdRw: true, reason: /no leader: holding new rw/,
  },
  {
    name: 'leader key without a member key: hold rw',
    view: cluster({ leader: leaderKey('node1'), members: [member('node2')] }),
    rw: null, ro: ['node2'], holdRw: true, reason: /leader node1 has no member key/,
  },
  {
    name: 'leader still promoting (publishes replica): hold rw, it serves no reads either',
    view: cluster({ leader: leaderKey('node2'), members: [member('node2', { streaming: false }), member('node3', { streaming: false })] }),
    rw: null, ro: [], holdRw: true, reason: /leader node2 does not run a primary yet.*ro: no backend/,
  },
  {
    name: 'leader key names a member whose PostgreSQL is down: hold rw',
    view: cluster({ leader: leaderKey('node1'), members: [primaryMember('node1', { running: false }), member('node2')] }),
    rw: null, ro: ['node2'], holdRw: true, reason: /does not run a primary/,
  },
  {
    name: 'a primary without the leader key gets no rw traffic (the key is the right to write)',
    view: cluster({ leader: leaderKey('node2'), members: [primaryMember('node1'), primaryMember('node2'), member('node3')] }),
    rw: 'node2', ro: ['node3'], holdRw: false, reason: /not serving reads: node1 is primary/,
  },
  {
    name: 'replica beyond the lag bound serves no reads',
    view: cluster({ leader: leaderKey('node1'), members: [primaryMember('node1', { walLsn: 100 * MiB }), member('node2', { receivedLsn: 100 * MiB, replayedLsn: 100 * MiB }), member('node3', { receivedLsn: 80 * MiB, replayedLsn: 80 * MiB })] }),
    rw: 'node1', ro: ['node2'], holdRw: false, reason: /node3 lags 20971520 bytes \(> 16777216\)/,
  },
  {
    name: 'the lag bound is an option',
    view: cluster({ leader: leaderKey('node1'), members: healthy() }),
    options: { roMaxLagBytes: 512 * 1024 },
    rw: 'node1', ro: ['node2'], holdRw: false, reason: /node3 lags 1048576 bytes/,
  },
  {
    name: 'lag measured from received or replayed, whichever is further',
    view: cluster({ leader: leaderKey('node1'), members: [primaryMember('node1', { walLsn: 100 * MiB }), member('node2', { receivedLsn: 100 * MiB, replayedLsn: 10 * MiB })] }),
    rw: 'node1', ro: ['node2'], holdRw: false, reason: /ro -> node2/,
  },
  {
    name: 'replica not streaming, not running, or silent for longer than ttl: no reads; fallback to the leader',
    view: cluster({
      leader: leaderKey('node1'),
      members: [primaryMember('node1'), member('node2', { streaming: false }), member('node3', { running: false }), member('node4', { updatedAtMs: NOW - 11_000 })],
    }),
    rw: 'node1', ro: ['node1'], holdRw: false, reason: /ro -> node1 \(no replica qualifies\).*node2 is not streaming \(its open reads go on\); node3 is not running; node4 has not published for 11 s/,
  },
  {
    name: 'no fallback when it is turned off: ro waits',
    view: cluster({ leader: leaderKey('node1'), members: [primaryMember('node1'), member('node2', { streaming: false })] }),
    options: { roFallbackToLeader: false },
    rw: 'node1', ro: [], holdRw: false, reason: /ro: no backend, holding/,
  },
  {
    name: 'noloadbalance tag keeps a replica out of ro',
    view: cluster({ leader: leaderKey('node1'), members: [primaryMember('node1'), member('node2', { tags: { noloadbalance: true } }), member('node3')] }),
    rw: 'node1', ro: ['node3'], holdRw: false, reason: /node2 is tagged noloadbalance/,
  },
  {
    name: 'switchover pending from the leader: hold new rw, keep rw for draining',
    view: cluster({ leader: leaderKey('node1'), members: healthy(), switchover: switchover('node1', { to: 'node2' }) }),
    rw: 'node1', ro: ['node2', 'node3'], holdRw: true, reason: /switchover from node1 pending: holding new rw/,
  },
  {
    name: 'switchover requested, its leader still preparing it (checkpoint, standbys moving): rw goes on',
    view: cluster({ leader: leaderKey('node1'), members: healthy(), switchover: switchover('node1', { to: 'node2', prepared: false }) }),
    rw: 'node1', ro: ['node2', 'node3'], holdRw: false, reason: /rw -> node1/,
  },
  {
    name: 'a switchover held since a moment ago holds, however long its leader took to prepare it',
    view: cluster({ leader: leaderKey('node1'), members: healthy(), switchover: { value: { v: 1, from: 'node1', to: 'node2', failover: false, requestedAtMs: NOW - 40_000, holdFromMs: NOW - 1000 }, modRevision: '21' } }),
    rw: 'node1', ro: ['node2', 'node3'], holdRw: true, reason: /switchover from node1 pending/,
  },
  {
    name: 'failover request without a from, leader present: hold as well',
    view: cluster({ leader: leaderKey('node1'), members: healthy(), switchover: switchover(null, { to: 'node2', failover: true }) }),
    rw: 'node1', ro: ['node2', 'node3'], holdRw: true, reason: /failover from node1 pending/,
  },
  {
    name: 'switchover already done (request names the former leader): no hold',
    view: cluster({ leader: leaderKey('node2'), members: [member('node1'), primaryMember('node2'), member('node3')], switchover: switchover('node1', { to: 'node2' }) }),
    rw: 'node2', ro: ['node1', 'node3'], holdRw: false, reason: /rw -> node2/,
  },
  {
    name: 'a leftover switchover key older than the hold bound does not block writes',
    view: cluster({ leader: leaderKey('node1'), members: healthy(), switchover: switchover('node1', { requestedAtMs: NOW - 31_000 }) }),
    rw: 'node1', ro: ['node2', 'node3'], holdRw: false, reason: /rw -> node1/,
  },
  {
    name: 'no leader: lag is measured from the last status position',
    view: cluster({
      members: [member('node2', { receivedLsn: 100 * MiB, replayedLsn: 100 * MiB }), member('node3', { receivedLsn: 50 * MiB, replayedLsn: 50 * MiB })],
      status: { value: { v: 1, leader: 'node1', timeline: 1, walLsn: 100 * MiB, updatedAtMs: NOW - 2000 }, modRevision: '9' },
    }),
    rw: null, ro: ['node2'], holdRw: true, reason: /node3 lags/,
  },
];

describe('computeRoutes', () => {
  for (const c of cases) {
    it(c.name, () => {
      const routes = computeRoutes(c.view, NOW, { ...defaultRouteOptions, ...c.options });
      expect({ rw: routes.rw?.name ?? null, ro: routes.ro.map((b) => b.name), holdRw: routes.holdRw }).toEqual({ rw: c.rw, ro: c.ro, holdRw: c.holdRw });
      expect(routes.reason).toMatch(c.reason);
    });
  }

  it('a running replica left out for a moment (not streaming, lagging) keeps its open reads; one that stopped or went silent does not', () => {
    const routes = computeRoutes(
      cluster({
        leader: leaderKey('node1'),
        members: [primaryMember('node1', { walLsn: 100_000_000 }), member('node2', { streaming: false }), member('node3', { running: false }), member('node4', { updatedAtMs: NOW - 11_000 }), member('node5')],
      }),
      NOW,
      defaultRouteOptions,
    );
    expect(routes.ro.map((b) => b.name)).toEqual(['node1']);
    expect(routes.roDraining.map((b) => b.name)).toEqual(['node2', 'node5']);
    expect(routes.reason).not.toMatch(/draining \(no new reads\)/);
  });

  it('a draining replica gets no new reads but keeps its open ones; the last one falls back to the leader', () => {
    const draining = (name: string) => ({ v: 1 as const, name, sinceMs: NOW - 1000, reason: 'scale-in' });
    const one = computeRoutes(cluster({ leader: leaderKey('node1'), members: healthy(), draining: [draining('node3')] }), NOW, defaultRouteOptions);
    expect(one.ro.map((b) => b.name)).toEqual(['node2']);
    expect(one.roDraining.map((b) => b.name)).toEqual(['node3']);
    expect(one.reason).toMatch(/draining \(no new reads\): node3/);
    const both = computeRoutes(cluster({ leader: leaderKey('node1'), members: healthy(), draining: [draining('node2'), draining('node3')] }), NOW, defaultRouteOptions);
    expect(both.ro.map((b) => b.name)).toEqual(['node1']);
    expect(both.roDraining.map((b) => b.name)).toEqual(['node2', 'node3']);
    const healthyRoutes = computeRoutes(cluster({ leader: leaderKey('node1'), members: healthy() }), NOW, defaultRouteOptions);
    expect(sameRoutes(healthyRoutes, one)).toBe(false);
  });

  it('a replica that became leader keeps the reads it was serving for promotedReadsMs, and gets no new ones', () => {
    const history = (leader: string, atMs: number): ClusterView['history'] => ({ value: { v: 1, entries: [{ timeline: 2, switchLsn: 0, leader, atMs, reason: 'switchover' }] }, modRevision: '30' });
    const drained = (view: ClusterView) => {
      const routes = computeRoutes(view, NOW, defaultRouteOptions);
      return { ro: routes.ro.map((b) => b.name), roDraining: routes.roDraining.map((b) => b.name) };
    };
    // promoted a second ago: node2 leads, its open reads go on
    expect(drained(cluster({ leader: leaderKey('node2'), members: [primaryMember('node2'), member('node1'), member('node3')], history: history('node2', NOW - 1000) }))).toEqual({ ro: ['node1', 'node3'], roDraining: ['node2'] });
    // still promoting (it publishes replica): no history entry of its own yet
    expect(drained(cluster({ leader: leaderKey('node2'), members: [member('node2'), member('node3')], history: history('node1', NOW - 60_000) }))).toEqual({ ro: ['node3'], roDraining: ['node2'] });
    // promoted longer ago than promotedReadsMs, or the newest entry is another leader's: its ro slot goes
    expect(drained(cluster({ leader: leaderKey('node2'), members: [primaryMember('node2'), member('node3')], history: history('node2', NOW - defaultRouteOptions.promotedReadsMs) }))).toEqual({ ro: ['node3'], roDraining: [] });
    expect(drained(cluster({ leader: leaderKey('node2'), members: [primaryMember('node2'), member('node3')], history: history('node1', NOW - 1000) }))).toEqual({ ro: ['node3'], roDraining: [] });
    // a leader that no longer runs keeps nothing; one that serves reads as the fallback is not draining as well
    expect(drained(cluster({ leader: leaderKey('node2'), members: [primaryMember('node2', { running: false }), member('node3')], history: history('node2', NOW - 1000) }))).toEqual({ ro: ['node3'], roDraining: [] });
    expect(drained(cluster({ leader: leaderKey('node2'), members: [primaryMember('node2')], history: history('node2', NOW - 1000) }))).toEqual({ ro: ['node2'], roDraining: [] });
  });

  it('a pending switchover names where rw goes next only when it names a running replica', () => {
    const next = (view: ClusterView) => computeRoutes(view, NOW, defaultRouteOptions).rwNext?.name ?? null;
    expect(next(cluster({ leader: leaderKey('node1'), members: healthy(), switchover: switchover('node1', { to: 'node2' }) }))).toBe('node2');
    expect(next(cluster({ leader: leaderKey('node1'), members: healthy(), switchover: switchover('node1') }))).toBeNull();
    expect(next(cluster({ leader: leaderKey('node1'), members: healthy(), switchover: switchover('node1', { to: 'node9' }) }))).toBeNull();
    const stopped = [primaryMember('node1'), member('node2', { running: false }), member('node3')];
    expect(next(cluster({ leader: leaderKey('node1'), members: stopped, switchover: switchover('node1', { to: 'node2' }) }))).toBeNull();
    expect(next(cluster({ leader: leaderKey('node1'), members: healthy() }))).toBeNull();
    // once the old leader let go of the key, rw holds with nothing pending
    expect(next(cluster({ members: healthy().slice(1), switchover: switchover('node1', { to: 'node2' }) }))).toBeNull();
  });

  it('backends carry the member address', () => {
    const routes = computeRoutes(cluster({ leader: leaderKey('node1'), members: healthy() }), NOW, defaultRouteOptions);
    expect(routes.rw).toEqual({ name: 'node1', host: '127.0.0.1', port: 5501 });
  });
});

describe('failClosed and sameRoutes', () => {
  const healthyRoutes = computeRoutes(cluster({ leader: leaderKey('node1'), members: healthy() }), NOW, defaultRouteOptions);

  it('fail closed drops rw, holds it, keeps ro and says why', () => {
    const closed = failClosed(healthyRoutes, 'etcd not read for 10.5 s');
    expect(closed).toMatchObject({ rw: null, holdRw: true, ro: healthyRoutes.ro });
    expect(closed.reason).toMatch(/etcd not read for 10.5 s: failing closed/);
  });

  it('routes differing only in their reason are the same', () => {
    expect(sameRoutes(healthyRoutes, { ...healthyRoutes, reason: 'other' })).toBe(true);
    expect(sameRoutes(healthyRoutes, { ...healthyRoutes, holdRw: true })).toBe(false);
    expect(sameRoutes(healthyRoutes, { ...healthyRoutes, rw: { name: 'node1', host: '127.0.0.1', port: 1 } })).toBe(false);
    expect(sameRoutes(healthyRoutes, { ...healthyRoutes, ro: healthyRoutes.ro.slice(1) })).toBe(false);
  });
});
