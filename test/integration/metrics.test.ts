/**
 * /metrics of the processes `keel up` runs, on a real cluster: each agent
 * (keel_* and Patroni's names), the router (connections of a client that is
 * connected through rw, bytes, routes) and the controller (nodes per zone,
 * the autoscaler), each over HTTPS verified against the cluster CA, and each
 * whole answer as `promtool check metrics` judges it.
 */
import { spawnSync } from 'node:child_process';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { portOffsets } from '../../src/providers/local-layout.js';
import { sleep } from '../../src/util/clock.js';
import { apiRequest } from '../support/api-client.js';
import { appConnection, TestCluster } from '../support/cluster.js';
import { startRouter, type RouterProcess } from './router-helpers.js';

const portBase = 20300;

/** The value of the first series whose line starts with `prefix` (name and labels as written). */
function value(text: string, prefix: string): number {
  const line = text.split('\n').find((l) => l.startsWith(prefix));
  if (line === undefined) throw new Error(`no series starting with ${prefix}`);
  return Number(line.slice(line.lastIndexOf(' ') + 1));
}

function promtool(text: string): void {
  const check = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
  if (check.error) throw new Error(`promtool (Debian's prometheus package, installed by scripts/setup.sh) cannot run: ${check.error.message}`);
  expect(`${check.stdout}${check.stderr}`).toBe('');
  expect(check.status).toBe(0);
}

describe('metrics of the agents, the router and the controller', () => {
  let cluster: TestCluster;
  let client: pg.Client | null = null;
  const scrape = async (port: number, path = '/metrics') => {
    const res = await apiRequest(`https://127.0.0.1:${port}${path}`, { caFile: cluster.layout.caFiles.cert });
    expect(res.status, res.text).toBe(200);
    return res;
  };

  beforeAll(async () => {
    cluster = await TestCluster.start({ portBase, nodes: 2, controller: true });
  });
  afterAll(async () => {
    await client?.end().catch(() => undefined);
    await cluster?.stop();
  });

  it("each agent: keel_* and Patroni's names with their meanings, lint-clean", async () => {
    const view = await cluster.view();
    const leader = view.leader!.value.name;
    const nowSeconds = Date.now() / 1000;
    for (const name of ['node1', 'node2']) {
      const text = (await scrape(portBase + portOffsets.nodeApi + Number(name.slice(4)) - 1)).text;
      const of = (metric: string) => value(text, `${metric}{scope="test",name="${name}"} `);
      const leads = name === leader;
      expect(of('patroni_primary')).toBe(leads ? 1 : 0);
      expect(of('patroni_replica')).toBe(leads ? 0 : 1);
      expect(of('patroni_postgres_running')).toBe(1);
      expect(of('patroni_cluster_unlocked')).toBe(0);
      expect(of('patroni_postgres_server_version')).toBeGreaterThanOrEqual(150000);
      expect(of('patroni_postgres_server_version')).toBeLessThan(160000);
      expect(of('patroni_postmaster_start_time')).toBeGreaterThan(nowSeconds - 600);
      expect(of('patroni_postmaster_start_time')).toBeLessThanOrEqual(nowSeconds + 1);
      expect(Math.abs(of('patroni_dcs_last_seen') - nowSeconds)).toBeLessThan(15);
      expect(of('patroni_postgres_timeline')).toBeGreaterThanOrEqual(1);
      if (leads) expect(of('patroni_xlog_location')).toBeGreaterThan(0);
      else {
        expect(of('patroni_xlog_replayed_location')).toBeGreaterThan(0);
        expect(of('patroni_postgres_streaming')).toBe(1);
      }
      expect(value(text, `keel_role{role="${leads ? 'leader' : 'replica'}",cluster="test",member="${name}"} `)).toBe(1);
      expect(value(text, `keel_maximum_lag_on_failover_bytes{cluster="test",member="${name}"} `)).toBe(1048576);
      promtool(text);
    }
  });

  it('the router: the connections of a client on rw, by member, its bytes, and the routes', async () => {
    const leader = (await cluster.view()).leader!.value.name;
    client = new pg.Client(appConnection('127.0.0.1', portBase + portOffsets.routerRw, cluster.login));
    await client.connect();
    await client.query("SELECT repeat('x', 10000)");
    const text = (await scrape(portBase + portOffsets.routerApi)).text;
    expect(value(text, `keel_router_connections{endpoint="rw",member="${leader}",cluster="test"} `)).toBeGreaterThanOrEqual(1);
    expect(value(text, 'keel_router_accepted_connections_total{endpoint="rw",cluster="test"} ')).toBeGreaterThanOrEqual(1);
    expect(value(text, `keel_router_backend{endpoint="rw",member="${leader}",cluster="test"} `)).toBe(1);
    expect(value(text, 'keel_router_failing_closed{cluster="test"} ')).toBe(0);
    promtool(text);
    const status = (await scrape(portBase + portOffsets.routerApi, '/status')).json;
    expect(status.routes.rw).toBe(leader);
    expect(status.endpoints.rw.connections[leader]).toBeGreaterThanOrEqual(1);
    // keel up's router runs HAProxy (setup installs it), which adds a connection's bytes once it ends
    expect(status.engine).toBe('haproxy');
    await client.end();
    client = null;
    let sent = 0;
    for (let i = 0; i < 40 && sent <= 10000; i++, await sleep(100)) sent = value((await scrape(portBase + portOffsets.routerApi)).text, 'keel_router_sent_bytes_total{endpoint="rw",cluster="test"} ');
    expect(sent).toBeGreaterThan(10000);
  });

  it("a router on HAProxy: the connections by member from HAProxy's own counters", async () => {
    const leader = (await cluster.view()).leader!.value.name;
    const port = portBase + 82;
    const web = cluster.layout.webServerFiles;
    const { etcd, etcdTls } = cluster.etcdAccess('router');
    let router: RouterProcess | null = null;
    const haproxyClient = new pg.Client(appConnection('127.0.0.1', portBase + 80, cluster.login));
    try {
      router = await startRouter({
        engine: 'haproxy',
        etcd,
        etcdTls,
        cluster: 'test',
        rwPort: portBase + 80,
        roPort: portBase + 81,
        logFile: `${cluster.layout.dir}/router-haproxy.log`,
        extra: ['--metrics', `127.0.0.1:${port}`, '--metrics-cert', web.cert, '--metrics-key', web.key],
      });
      await haproxyClient.connect();
      await haproxyClient.query("SELECT repeat('x', 10000)");
      const text = (await scrape(port)).text;
      expect(value(text, `keel_router_connections{endpoint="rw",member="${leader}",cluster="test"} `)).toBeGreaterThanOrEqual(1);
      // the holds are counted by the router's holder, HAProxy's backup server (the client may have come before the router's first route)
      expect(value(text, 'keel_router_holds_total{endpoint="rw",cluster="test"} ')).toBeLessThanOrEqual(1);
      promtool(text);
      // HAProxy adds a connection's bytes to its counters once the connection ends
      await haproxyClient.end();
      let sent = 0;
      for (let i = 0; i < 40 && sent <= 10000; i++, await sleep(100)) sent = value((await scrape(port)).text, 'keel_router_sent_bytes_total{endpoint="rw",cluster="test"} ');
      expect(sent).toBeGreaterThan(10000);
    } finally {
      await haproxyClient.end().catch(() => undefined);
      await router?.stop();
    }
  });

  it('the controller: nodes per zone as its plan sees them, and the autoscaler against its target', async () => {
    const port = portBase + portOffsets.controllerMetrics;
    let text = '';
    const deadline = Date.now() + 30_000;
    // the controller plans on its own pace: its first plan may be a moment away
    while (Date.now() < deadline) {
      text = (await scrape(port)).text;
      if (/^keel_controller_nodes\{/m.test(text)) break;
      await sleep(500);
    }
    expect(value(text, 'keel_controller_active{cluster="test"} ')).toBe(1);
    const nodes = text.split('\n').filter((l) => l.startsWith('keel_controller_nodes{')).map((l) => Number(l.slice(l.lastIndexOf(' ') + 1)));
    expect(nodes.reduce((a, b) => a + b, 0)).toBe(2);
    expect(value(text, 'keel_controller_declared_nodes{cluster="test"} ')).toBe(2);
    expect(value(text, 'keel_autoscale_target{metric="cpu",cluster="test"} ')).toBe(70);
    expect(value(text, 'keel_controller_replacements_total{cluster="test"} ')).toBe(0);
    promtool(text);
  });
});
