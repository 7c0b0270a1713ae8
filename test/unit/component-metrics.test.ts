/**
 * The router's and the controller's /metrics from fake engines and
 * controllers: each value where it belongs, HAProxy's `show stat` read into
 * the same counts, and each whole text as `promtool check metrics` judges it.
 */
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import type { MeasuredController } from '../../src/controller/counts.js';
import { noCounts } from '../../src/controller/counts.js';
import { buildControllerRegistry } from '../../src/controller/metrics.js';
import { defaultSpec } from '../../src/controller/spec.js';
import { endpointStats, parseStat } from '../../src/router/engines/haproxy-stats.js';
import { emptyTable } from '../../src/router/engines/haproxy-runtime.js';
import type { EndpointStats } from '../../src/router/engines/types.js';
import { RouterMetrics } from '../../src/router/metrics.js';
import type { Routes } from '../../src/router/route.js';

function promtool(text: string): void {
  const check = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
  if (check.error) throw new Error(`promtool (Debian's prometheus package, installed by scripts/setup.sh) cannot run: ${check.error.message}`);
  expect(`${check.stdout}${check.stderr}`).toBe('');
  expect(check.status).toBe(0);
}

const line = (text: string, prefix: string): string | undefined => text.split('\n').find((l) => l.startsWith(prefix));

const backend = (name: string, port: number) => ({ name, host: '127.0.0.1', port });
const routes: Routes = { rw: backend('node1', 5001), ro: [backend('node2', 5002)], roDraining: [], holdRw: false, reason: 'node1 leads' };

function endpoint(over: Partial<EndpointStats>): EndpointStats {
  return { connections: {}, waiting: 0, acceptedTotal: 0, refusedTotal: 0, receivedBytesTotal: 0, sentBytesTotal: 0, ...over };
}

describe("the router's metrics", () => {
  const engine = {
    name: 'builtin',
    reads: 0,
    async stats() {
      this.reads += 1;
      return {
        rw: endpoint({ connections: { node1: 3 }, waiting: 1, acceptedTotal: 9, heldTotal: 2, holdTimeoutsTotal: 1, refusedTotal: 4, firstBytesTimeoutsTotal: 0, receivedBytesTotal: 1000, sentBytesTotal: 5000 }),
        ro: endpoint({ connections: { node2: 2 }, acceptedTotal: 2, receivedBytesTotal: 10, sentBytesTotal: 20 }),
      };
    },
  };
  const metrics = new RouterMetrics(engine, { current: routes, lastReadAtMs: 1_700_000_000_000, failingClosed: false }, 'main');

  it('connections per endpoint and member, holds, refusals and bytes, with one engine read a scrape', async () => {
    const text = await metrics.registry.metrics();
    expect(line(text, 'keel_router_connections{endpoint="rw",member="node1",cluster="main"}')).toMatch(/ 3$/);
    expect(line(text, 'keel_router_connections{endpoint="ro",member="node2",cluster="main"}')).toMatch(/ 2$/);
    expect(line(text, 'keel_router_waiting_connections{endpoint="rw"')).toMatch(/ 1$/);
    expect(line(text, 'keel_router_holds_total{endpoint="rw"')).toMatch(/ 2$/);
    expect(line(text, 'keel_router_hold_timeouts_total{endpoint="rw"')).toMatch(/ 1$/);
    expect(line(text, 'keel_router_refused_connections_total{endpoint="rw"')).toMatch(/ 4$/);
    expect(line(text, 'keel_router_received_bytes_total{endpoint="rw"')).toMatch(/ 1000$/);
    expect(line(text, 'keel_router_sent_bytes_total{endpoint="rw"')).toMatch(/ 5000$/);
    expect(line(text, 'keel_router_backend{endpoint="rw",member="node1"')).toMatch(/ 1$/);
    expect(line(text, 'keel_router_rw_held{')).toMatch(/ 0$/);
    expect(line(text, 'keel_router_etcd_last_read_timestamp_seconds{')).toMatch(/ 1700000000$/);
    expect(engine.reads).toBe(1);
    promtool(text);
  });

  it('GET /status carries the routes and the counts', async () => {
    const status = await metrics.status();
    expect(status.routes).toEqual({ rw: 'node1', holdRw: false, ro: ['node2'], roDraining: [], reason: 'node1 leads' });
    expect(status.endpoints.rw.connections).toEqual({ node1: 3 });
  });
});

describe("HAProxy's show stat", () => {
  const csv = [
    '# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,rtime,ttime,agent_status,agent_code,agent_duration,check_desc,agent_desc,check_rise,check_fall,check_health,agent_rise,agent_fall,agent_health,addr,cookie,mode,algo,conn_rate,conn_rate_max,conn_tot,intercepted,dcon,dses,',
    'fe_rw,FRONTEND,,,5,9,1100,42,7000,90000,0,0,0,,,,,OPEN,,,,,,,,,1,2,0,,,,0,0,0,3,,,,,,,,,,,0,0,0,,,0,0,0,0,,,,,,,,,,,,,,,,,,,,,tcp,,0,3,42,,6,0,',
    'be_rw,s0,0,0,3,4,,30,6000,80000,,0,,0,0,0,0,UP,1,1,0,,0,10,0,,1,3,1,,30,,2,0,,2,,,,,,,,,,,,,,0,0,,,,,1,,,0,0,0,1,,,,,,,,,,,,127.0.0.1:5001,,tcp,,,,,,,,',
    'be_rw,s1,0,0,0,0,,0,0,0,,0,,0,0,0,0,MAINT,1,1,0,,0,10,0,,1,3,2,,0,,2,0,,0,,,,,,,,,,,,,,0,0,,,,,-1,,,0,0,0,0,,,,,,,,,,,,127.0.0.1:1,,tcp,,,,,,,,',
    'be_rw,BACKEND,0,0,3,4,110,30,6000,80000,0,0,,0,0,0,0,UP,1,1,0,,0,10,0,,1,3,0,,30,,1,0,,2,,,,,,,,,,,,,,0,0,0,0,0,0,1,,,0,0,0,1,,,,,,,,,,,,,,tcp,roundrobin,,,,,,,',
  ].join('\n');

  const holder = { connections: {}, waiting: 0, acceptedTotal: 0, heldTotal: 0, holdTimeoutsTotal: 0, refusedTotal: 0, receivedBytesTotal: 0, sentBytesTotal: 0 };

  it('counts connections by the member in each slot; waiting is what the frontend holds beyond them', () => {
    const table = emptyTable('be_rw', 2);
    table.slots[0] = { ...table.slots[0]!, member: 'node1', state: 'ready' };
    const stats = endpointStats(parseStat(csv), 'fe_rw', table, holder);
    expect(stats).toEqual({ connections: { node1: 3 }, waiting: 2, acceptedTotal: 42, heldTotal: 0, holdTimeoutsTotal: 0, refusedTotal: 6, receivedBytesTotal: 7000, sentBytesTotal: 90000 });
  });

  it("adds what the holder forwarded to the members' counts, and takes the holds from it", () => {
    const table = emptyTable('be_rw', 2);
    table.slots[0] = { ...table.slots[0]!, member: 'node1', state: 'ready' };
    const stats = endpointStats(parseStat(csv), 'fe_rw', table, { ...holder, connections: { node1: 1 }, heldTotal: 7, holdTimeoutsTotal: 2 });
    expect(stats).toMatchObject({ connections: { node1: 4 }, waiting: 1, heldTotal: 7, holdTimeoutsTotal: 2 });
  });

  it('refuses an answer that is not a stat table', () => {
    expect(() => parseStat('Unknown command')).toThrow(/not a "show stat" answer/);
  });
});

describe("the controller's metrics", () => {
  const spec = { ...defaultSpec({ nodes: 3, zones: ['a', 'b'], instanceClass: 'small' }) };
  spec.autoscale = { ...spec.autoscale, enabled: true, metric: 'roQps', target: 50 };
  const health = (name: string, zone: string, over: object = {}) => ({ name, zone, leader: false, down: false, streaming: true, instanceClass: null, lagBytes: 0, firstSeenMs: 0, why: '', ...over });
  const active: MeasuredController = {
    active: true,
    counts: { ...noCounts(), creations: 2, replacements: 1, fencings: 1, unconfirmedFencings: 3, leasesEnded: 1 },
    lastPlan: { actions: [], reason: 'all well', memory: { firstSeenMs: {}, downSinceMs: {}, fenced: [] }, health: [health('node1', 'a', { leader: true }), health('node2', 'b'), health('node3', 'a', { down: true, streaming: false })] },
    lastAutoscale: { kind: 'hold', code: 'within-target', reason: 'near target', metric: 42.5, currentReplicas: 2, wantedReplicas: 2 } as MeasuredController['lastAutoscale'],
    lastSpec: spec,
  };
  const standby: MeasuredController = { active: false, counts: { ...noCounts(), creations: 1 }, lastPlan: null, lastAutoscale: null, lastSpec: null };

  it('nodes per zone, what it did, and the autoscaler against its target', async () => {
    const text = await buildControllerRegistry('main', () => [active, standby]).metrics();
    expect(line(text, 'keel_controller_active{')).toMatch(/ 1$/);
    expect(line(text, 'keel_controller_nodes{zone="a",health="leader"')).toMatch(/ 1$/);
    expect(line(text, 'keel_controller_nodes{zone="a",health="down"')).toMatch(/ 1$/);
    expect(line(text, 'keel_controller_nodes{zone="b",health="streaming"')).toMatch(/ 1$/);
    expect(line(text, 'keel_controller_creations_total{')).toMatch(/ 3$/);
    expect(line(text, 'keel_controller_replacements_total{')).toMatch(/ 1$/);
    expect(line(text, 'keel_controller_fencings_total{confirmed="true"')).toMatch(/ 1$/);
    expect(line(text, 'keel_controller_fencings_total{confirmed="false"')).toMatch(/ 3$/);
    expect(line(text, 'keel_autoscale_metric_value{metric="roQps"')).toMatch(/ 42.5$/);
    expect(line(text, 'keel_autoscale_target{metric="roQps"')).toMatch(/ 50$/);
    expect(line(text, 'keel_autoscale_wanted_replicas{')).toMatch(/ 2$/);
    expect(line(text, 'keel_controller_declared_nodes{')).toMatch(/ 3$/);
    promtool(text);
  });

  it('a process whose controller stands by says so', async () => {
    const text = await buildControllerRegistry('main', () => [standby]).metrics();
    expect(line(text, 'keel_controller_active{')).toMatch(/ 0$/);
    expect(text).not.toMatch(/^keel_controller_nodes\{/m);
    promtool(text);
  });
});
