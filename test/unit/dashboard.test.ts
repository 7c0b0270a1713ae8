/**
 * The dashboard's logic without a browser: the state it builds from a view of
 * etcd, its time series, its feed over the in-memory store, and its HTTP
 * rules (who may act, CSRF, origins, what an action records) through
 * fastify's inject.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { MemoryDcs } from '../../src/dcs/memory.js';
import { ClusterFeed, type FeedMessage } from '../../src/dashboard/feed.js';
import { buildState, departedMembers, memberCards } from '../../src/dashboard/model.js';
import { Series } from '../../src/dashboard/series.js';
import { buildDashboard } from '../../src/dashboard/server.js';
import { checkSameOrigin, csrfHeader, dashboardTokenFromKey, sessionCookie } from '../../src/dashboard/session.js';
import { sleep } from '../../src/util/clock.js';
import { silentLogger } from '../../src/util/log.js';
import { spec } from './controller-fixtures.js';
import { cluster, leaderKey, member, NOW, primaryMember } from './fixtures.js';

const TOKEN = dashboardTokenFromKey('k'.repeat(40));

describe('the state the page shows', () => {
  const view = cluster({
    leader: leaderKey('node1'),
    members: [
      primaryMember('node1', { zone: 'a', walLsn: 5000, reason: 'leading; conninfo password=hunter2' }),
      member('node2', { zone: 'b', replayedLsn: 4000, receivedLsn: 4000 }),
      member('node3', { zone: 'a', running: false, streaming: false }),
    ],
    sync: { value: { v: 1, leader: 'node1', members: ['node2'], quorum: 1 }, modRevision: '3' },
  });

  it('lays members out by zone (the spec’s zones first, empty ones too), each with role, lag, sync flag and reason', () => {
    const state = buildState({ cluster: 'main', view, controller: null, spec: spec({ zones: ['c', 'a', 'b'] }), router: null, backups: null, etcdError: null, nowMs: NOW });
    expect(state.leader).toBe('node1');
    expect(state.zones.map((z) => [z.zone, z.members.map((m) => m.name)])).toEqual([['c', []], ['a', ['node1', 'node3']], ['b', ['node2']]]);
    const node2 = state.zones[2]!.members[0]!;
    expect(node2).toMatchObject({ role: 'sync standby', sync: true, lagBytes: 1000 });
    expect(state.zones[1]!.members[0]!.reason).toBe('leading; conninfo password=***');
    expect(state.autoscale).toMatchObject({ metric: 'cpu', target: 70, decision: 'no controller acts' });
    expect(state.backups).toBeNull();
  });

  it('takes the autoscaler’s answer from the active controller’s report', () => {
    const controller = { v: 1 as const, name: 'c1', pid: 1, startedAtMs: NOW, report: { atMs: NOW - 1000, plan: 'nothing to do', autoscale: { decision: 'add 1', reason: 'cpu 90 over 70', metric: 90, currentReplicas: 2, wantedReplicas: 3 } } };
    const state = buildState({ cluster: 'main', view, controller, spec: spec(), router: null, backups: { summary: 'last full backup 2 h ago', rows: [] }, etcdError: null, nowMs: NOW });
    expect(state.controller).toEqual({ name: 'c1', plan: 'nothing to do', reportAtMs: NOW - 1000 });
    expect(state.autoscale).toMatchObject({ current: 90, decision: 'add 1', reason: 'cpu 90 over 70' });
    expect(state.backups?.summary).toBe('last full backup 2 h ago');
  });

  it('keeps a member whose key went away on the page, as last seen, for ten minutes', () => {
    const before = memberCards(view, NOW);
    const after = memberCards(cluster({ ...view, members: view.members.filter((m) => m.name !== 'node2') }), NOW + 1000);
    const gone = departedMembers(before, after, NOW + 1000);
    expect(gone).toEqual([expect.objectContaining({ name: 'node2', role: 'gone', goneSinceMs: NOW + 1000, running: false })]);
    expect(departedMembers([...after, ...gone], after, NOW + 5000)[0]?.goneSinceMs).toBe(NOW + 1000);
    expect(departedMembers([...after, ...gone], after, NOW + 11 * 60_000)).toEqual([]);
    expect(departedMembers([...after, ...gone], before, NOW + 5000)).toEqual([]);
  });
});

describe('the time series', () => {
  it('takes the write rate from two positions of the same leader and marks each change of leader', () => {
    const series = new Series(5);
    const at = (lsn: number, updated: number, leader = 'node1') =>
      cluster({ leader: leaderKey(leader), members: [primaryMember(leader, { walLsn: lsn, updatedAtMs: updated, metrics: { cpuPercent: 1, connections: 2, roQueriesPerSecond: 7 } }), member('node2', { replayedLsn: lsn - 100, receivedLsn: lsn - 100, metrics: { cpuPercent: 1, connections: 1, roQueriesPerSecond: 3 } })] });
    expect(series.add(at(1000, NOW), NOW).sample).toMatchObject({ walBytesPerSecond: null, leaderTps: 7, replicaTps: 3, maxLagBytes: 100 });
    expect(series.add(at(3000, NOW + 2000), NOW + 2000).sample.walBytesPerSecond).toBe(1000);
    // the same publication again: the last rate holds
    expect(series.add(at(3000, NOW + 2000), NOW + 3000).sample.walBytesPerSecond).toBe(1000);
    const change = series.add(at(500, NOW + 4000, 'node3'), NOW + 4000);
    expect(change.mark).toEqual({ atMs: NOW + 4000, label: 'node3 leads' });
    expect(change.sample.walBytesPerSecond).toBeNull();
    for (let i = 5; i < 12; i++) series.add(at(500, NOW + 4000, 'node3'), NOW + i * 1000);
    expect(series.samples).toHaveLength(5);
    expect(series.marks).toEqual([]);
  });
});

describe('the feed', () => {
  it('passes on a change of leader and each event as etcd has them, with no page asking', async () => {
    const clock = { now: () => Date.now() };
    const dcs = new MemoryDcs({ cluster: 'main', clock });
    const lease = await dcs.grantLease(30);
    await dcs.putMember(primaryMember('node1', { updatedAtMs: Date.now() }), lease);
    await dcs.acquireLeader('node1', lease);
    const feed = new ClusterFeed({ dcs, cluster: 'main', clock, logger: silentLogger(), router: null, backups: null, timing: { minReadGapMs: 10, rereadMs: 60_000, sampleMs: 60_000 } });
    const messages: FeedMessage[] = [];
    feed.subscribe((m) => messages.push(m));
    await feed.start();
    try {
      expect(feed.snapshot().state?.leader).toBe('node1');
      await dcs.releaseLeader('node1');
      await dcs.putMember(primaryMember('node2', { updatedAtMs: Date.now() }), lease);
      await dcs.acquireLeader('node2', lease);
      await dcs.addEvent({ atMs: Date.now(), source: 'node2', kind: 'promoted', message: 'node2 promoted' });
      for (let i = 0; i < 100 && !messages.some((m) => m.type === 'state' && m.state.leader === 'node2'); i++) await sleep(20);
      expect(messages.some((m) => m.type === 'state' && m.state.leader === 'node2')).toBe(true);
      for (let i = 0; i < 100 && !messages.some((m) => m.type === 'event'); i++) await sleep(20);
      expect(messages.find((m) => m.type === 'event')).toMatchObject({ event: { kind: 'promoted', message: 'node2 promoted' } });
    } finally {
      await feed.stop();
    }
  });
});

describe('who may act, and from where', () => {
  let app: FastifyInstance;
  let dcs: MemoryDcs;
  let feed: ClusterFeed;

  async function world(): Promise<void> {
    const clock = { now: () => Date.now() };
    dcs = new MemoryDcs({ cluster: 'main', clock });
    const lease = await dcs.grantLease(30);
    await dcs.acquireLeader('node1', lease);
    await dcs.putMember(primaryMember('node1', { walLsn: 5000, updatedAtMs: Date.now() }), lease);
    await dcs.putMember(member('node2', { receivedLsn: 5000, replayedLsn: 5000, updatedAtMs: Date.now() }), lease);
    await dcs.putSpec(spec(), null);
    feed = new ClusterFeed({ dcs, cluster: 'main', clock, logger: silentLogger(), router: null, backups: null });
    app = buildDashboard(feed, { cluster: 'main', dcs, token: TOKEN, operatorCommonName: 'main-operator', limits: null, router: null, backups: null, clock, logger: silentLogger() }, null);
  }
  afterEach(async () => {
    await app?.close();
    await feed?.stop();
  });

  const post = (url: string, body: unknown, headers: Record<string, string> = {}) =>
    app.inject({ method: 'POST', url, headers: { 'content-type': 'application/json', host: 'dash.local:6405', ...headers }, payload: JSON.stringify(body) });
  const events = async () => (await dcs.listEvents(50)).filter((e) => e.source === 'dashboard');

  it('refuses an action without the token (401) or with a wrong one (403), and carries it out with it, recording an event', async () => {
    await world();
    expect((await post('/api/switchover', { candidate: 'node2' })).statusCode).toBe(401);
    expect((await post('/api/switchover', { candidate: 'node2' }, { authorization: 'Bearer wrong-token-wrong-token-wrong-token' })).statusCode).toBe(403);
    expect((await dcs.readCluster()).switchover).toBeNull();
    const ok = await post('/api/switchover', { candidate: 'node2' }, { authorization: `Bearer ${TOKEN}` });
    expect(ok.statusCode, ok.body).toBe(202);
    expect((await dcs.readCluster()).switchover?.value).toMatchObject({ from: 'node1', to: 'node2' });
    expect((await events()).map((e) => e.message)).toEqual(['switchover requested on the dashboard (signed in with the token): node1 -> node2']);
  });

  it('a session acts only with its CSRF token, and never from another origin', async () => {
    await world();
    const login = await post('/api/session', {}, { authorization: `Bearer ${TOKEN}` });
    expect(login.statusCode).toBe(200);
    const cookie = String(login.headers['set-cookie']);
    expect(cookie).toMatch(new RegExp(`^${sessionCookie}=[A-Za-z0-9_-]{43}; Path=/; HttpOnly; Secure; SameSite=Strict`));
    const session = cookie.split(';')[0]!;
    const csrf = login.json().csrf as string;

    expect((await post('/api/scale', { replicas: 2 }, { cookie: session })).statusCode).toBe(403);
    expect((await post('/api/scale', { replicas: 2 }, { cookie: session, [csrfHeader]: 'x'.repeat(43) })).statusCode).toBe(403);
    expect((await post('/api/scale', { replicas: 2 }, { cookie: session, [csrfHeader]: csrf, origin: 'https://elsewhere.example' })).statusCode).toBe(403);
    expect((await post('/api/scale', { replicas: 2 }, { cookie: session, [csrfHeader]: csrf, 'sec-fetch-site': 'cross-site' })).statusCode).toBe(403);
    expect((await dcs.readSpec())!.value.nodes).toBe(3);

    const scaled = await post('/api/scale', { replicas: 3 }, { cookie: session, [csrfHeader]: csrf, origin: 'https://dash.local:6405', 'sec-fetch-site': 'same-origin' });
    expect(scaled.statusCode, scaled.body).toBe(202);
    expect((await dcs.readSpec())!.value.nodes).toBe(4);
    const changed = await post('/api/config', { set: ['ttl=20'] }, { cookie: session, [csrfHeader]: csrf });
    expect(changed.statusCode, changed.body).toBe(200);
    expect((await dcs.readCluster()).config?.value.ttl).toBe(20);
    expect((await events()).map((e) => e.message)).toEqual([
      'scale requested on the dashboard (signed in with the token): 3 -> 4 nodes (a leader and 3 replica(s))',
      'config changed on the dashboard (signed in with the token): ttl',
    ]);

    // signed out: the cookie opens nothing any more
    await app.inject({ method: 'DELETE', url: '/api/session', headers: { cookie: session } });
    expect((await post('/api/config', { set: ['ttl=30'] }, { cookie: session, [csrfHeader]: csrf })).statusCode).toBe(401);
  });

  it('refuses a bad setting or body with its reason and changes nothing', async () => {
    await world();
    const auth = { authorization: `Bearer ${TOKEN}` };
    const bad = await post('/api/config', { set: ['ttl=1'] }, auth);
    expect(bad.statusCode).toBe(400);
    expect(bad.json().code).toBe('KEEL_CONFIG_INVALID');
    expect((await post('/api/scale', { replicas: -1 }, auth)).json().code).toBe('KEEL_USAGE');
    expect((await post('/api/switchover', { candidate: 'node9' }, auth)).json().code).toBe('KEEL_UNKNOWN_MEMBER');
    expect(await events()).toEqual([]);
  });

  it('serves the page and uPlot itself, under a policy that loads nothing from elsewhere', async () => {
    await world();
    const page = await app.inject({ method: 'GET', url: '/' });
    expect(page.statusCode).toBe(200);
    expect(page.headers['content-security-policy']).toContain("default-src 'none'; script-src 'self'");
    expect(page.body).not.toMatch(/https?:\/\//);
    const uplot = await app.inject({ method: 'GET', url: '/assets/uplot.js' });
    expect(uplot.statusCode).toBe(200);
    expect(uplot.body).toContain('uPlot');
    expect((await app.inject({ method: 'GET', url: '/assets/../package.json' })).statusCode).toBe(404);
  });
});

describe('origin checks', () => {
  it('lets through what says nothing of its origin (scripts), and what comes from the dashboard itself', () => {
    expect(() => checkSameOrigin({ origin: undefined, fetchSite: undefined, host: 'h:1' })).not.toThrow();
    expect(() => checkSameOrigin({ origin: 'https://h:1', fetchSite: 'same-origin', host: 'h:1' })).not.toThrow();
    expect(() => checkSameOrigin({ origin: 'https://h:1.evil', fetchSite: undefined, host: 'h:1' })).toThrow(/not from this dashboard/);
    expect(() => checkSameOrigin({ origin: undefined, fetchSite: 'same-site', host: 'h:1' })).toThrow(/another site/);
  });
});
