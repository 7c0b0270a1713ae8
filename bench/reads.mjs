// Read scaling with the demo's dataset: nearest-open-deals queries per second
// on the ro endpoint with 1, 2 and 3 replicas serving reads, the same queries
// straight to 1, 2 and 3 replicas (no router), and single-row writes per second
// on rw and straight to the leader. A 4-node cluster (leader + 3 replicas);
// replicas are stopped one by one for the 2- and 1-replica figures.
// Closed loop: each connection sends its next query when the previous answered.
//
//   node bench/reads.mjs [--deals 100000] [--seconds 8] [--connections 8] [--port-base 18300]
//
// Everything (4 PostgreSQL servers, etcd, the router and this client) shares
// this machine's CPUs: the figures show where the machine saturates, not what
// separate servers would do.
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { LocalCluster } from '../dist/providers/local-cluster.js';
import { connectionStrings, LocalLayout } from '../dist/providers/local-layout.js';
import { silentLogger } from '../dist/util/log.js';
import { readPidFile } from '../dist/util/process.js';
import { insertDealSql, nearestDealsSql, randomDeal, randomPoint, seededRandom } from '../dist/demo/dataset.js';
import { prepareDataset } from '../dist/demo/load.js';
import { Histogram } from '../dist/demo/stats.js';
import { connect } from '../dist/demo/workload.js';

const { values } = parseArgs({
  options: {
    deals: { type: 'string', default: '100000' },
    seconds: { type: 'string', default: '8' },
    connections: { type: 'string', default: '8' },
    'port-base': { type: 'string', default: '18300' },
  },
});
const deals = Number(values.deals);
const seconds = Number(values.seconds);
const connections = Number(values.connections);
const portBase = Number(values['port-base']);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const dir = mkdtempSync('/tmp/keel-bench-reads-');
chmodSync(dir, 0o755);
const layout = new LocalLayout(dir);
const { cluster, secrets } = await layout.create({ v: 1, cluster: 'reads', portBase, nodes: 4, synchronousMode: 'off' });
const local = new LocalCluster(layout, cluster, secrets, silentLogger(), { restartAgents: false });
const dcs = local.dcs();
const urls = connectionStrings(layout, cluster);
const endpoint = (url) => ({ connectionString: url, password: secrets.superuser });

// CPU time per operation, split by who spends it: with every process on the
// same few CPUs, this (not the rate) is what says how reads scale when each
// node has a machine of its own.
const clockTicks = 100;

/** utime + stime of a process in seconds, and its parent; null once it is gone. */
function procStat(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { ppid: Number(fields[1]), cpu: (Number(fields[11]) + Number(fields[12])) / clockTicks };
  } catch {
    return null;
  }
}

/** CPU seconds so far of the cluster's PostgreSQL servers (postmasters and their backends) and of the router. */
function clusterCpu() {
  const postmasters = new Set(Array.from({ length: cluster.nodes }, (_, i) => readPidFile(`${layout.dataDir(layout.nodeName(i))}/postmaster.pid`)).filter(Boolean));
  let postgres = 0;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const st = procStat(Number(entry));
    if (st !== null && (postmasters.has(Number(entry)) || postmasters.has(st.ppid))) postgres += st.cpu;
  }
  const router = procStat(readPidFile(layout.routerPidFile))?.cpu ?? 0;
  const client = (process.cpuUsage().user + process.cpuUsage().system) / 1e6;
  return { postgres, router, client };
}

/** Runs `step` on `targets.length` connections for `measureSeconds` after a warm-up; returns ops/s, latency quantiles and errors. */
async function closedLoop(targets, step, measureSeconds = seconds) {
  const latency = new Histogram();
  let ok = 0;
  let errors = 0;
  let firstError = null;
  let measuring = false;
  let stopping = false;
  const worker = async (target, index) => {
    const random = seededRandom(1000 + index);
    let client = null;
    while (!stopping) {
      try {
        client ??= await connect(endpoint(target), 'keel-bench');
        const started = performance.now();
        await step(client, random);
        if (measuring) {
          latency.add(performance.now() - started);
          ok += 1;
        }
      } catch (err) {
        if (measuring) errors += 1;
        if (measuring) firstError ??= err instanceof Error ? err.message : String(err);
        await client?.end().catch(() => {});
        client = null;
        await sleep(100);
      }
    }
    await client?.end().catch(() => {});
  };
  const running = targets.map(worker);
  // one second of warm-up: connections made, statements prepared, caches warm
  await sleep(1000);
  measuring = true;
  const cpuBefore = clusterCpu();
  const started = performance.now();
  await sleep(measureSeconds * 1000);
  measuring = false;
  const elapsed = (performance.now() - started) / 1000;
  // before the connections close: a backend's CPU time goes with it
  const cpuAfter = clusterCpu();
  stopping = true;
  await Promise.all(running);
  const perOpMs = (key) => (ok === 0 ? null : ((cpuAfter[key] - cpuBefore[key]) * 1000) / ok);
  const cpu = { postgres: perOpMs('postgres'), router: perOpMs('router'), client: perOpMs('client') };
  return { perSecond: ok / elapsed, p50: latency.percentile(0.5), p99: latency.percentile(0.99), errors, firstError, cpu };
}

const nearest = (client, random) => {
  const here = randomPoint(random);
  return client.query({ name: 'nearest', text: nearestDealsSql, values: [here.lon, here.lat] });
};
const insert = (client, random) => {
  const d = randomDeal(random, Date.now());
  return client.query({ name: 'insert', text: insertDealSql, values: [d.title, d.category, d.lon, d.lat, d.priceCents, new Date(Date.now() + 86_400_000).toISOString()] });
};

/** `connections` connections spread round-robin over the given URLs. */
const spread = (list) => Array.from({ length: connections }, (_, i) => list[i % list.length]);

function report(label, r, withRouter) {
  const ms = (v) => (v === null ? '-' : v.toFixed(3));
  const cpu = `CPU ms/op: postgres ${ms(r.cpu.postgres)}${withRouter ? `, router ${ms(r.cpu.router)}` : ''}, client ${ms(r.cpu.client)}`;
  const line = `${label.padEnd(36)} ${Math.round(r.perSecond).toLocaleString('en-US').padStart(7)}/s  p50 ${r.p50?.toFixed(2)} ms  p99 ${r.p99?.toFixed(1)} ms  ${cpu}  errors ${r.errors}${r.firstError ? ` (first: ${r.firstError})` : ''}`;
  console.log(line);
}

async function replicasNow() {
  const view = await dcs.readCluster();
  const leader = view.leader?.value.name;
  return { leader: view.members.find((m) => m.name === leader), replicas: view.members.filter((m) => m.name !== leader && m.role === 'replica' && m.streaming) };
}

/** Waits until exactly `n` replicas stream (a stopped one's key gone), then a moment for the router to follow. */
async function waitForReplicas(n) {
  for (let i = 0; i < 600; i++) {
    const view = await dcs.readCluster();
    const leader = view.leader?.value.name;
    const others = view.members.filter((m) => m.name !== leader);
    if (others.length === n && others.every((m) => m.role === 'replica' && m.streaming)) return;
    await sleep(100);
  }
  throw new Error(`not ${n} streaming replicas within 60 s`);
}

const pgUrl = (m) => `postgresql://postgres@${m.pgHost}:${m.pgPort}/app`;

let exitCode = 0;
try {
  const t0 = performance.now();
  console.log(`machine: ${cpus().length} CPU(s), load average ${loadavg().map((l) => l.toFixed(2)).join(' ')}; ${connections} connections, ${seconds} s per figure, ${deals.toLocaleString('en-US')} deals`);
  await local.checkPorts();
  await local.start();
  await local.waitReady(120_000);
  const loaded = await prepareDataset(endpoint(urls.rw), deals, 42, () => {}, () => false);
  console.log(`cluster of 4 ready and ${loaded.loaded.toLocaleString('en-US')} deals loaded in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  let { leader, replicas } = await replicasNow();
  // every replica must have replayed the whole dataset and its index before reads count
  for (const r of replicas) {
    const c = await connect(endpoint(pgUrl(r)), 'keel-bench');
    for (let i = 0; i < 300 && Number((await c.query('SELECT count(*) AS n FROM deals')).rows[0].n) < deals; i++) await sleep(100);
    await c.end();
  }

  // unmeasured: every replica reads its index and table into memory once
  await closedLoop(spread(replicas.map(pgUrl)), nearest, 2);

  console.log('\nnearest open deals within 2 km (ST_DWithin + <-> LIMIT 10):');
  for (let n = 1; n <= 3; n++) report(`  straight to ${n} replica(s)`, await closedLoop(spread(replicas.slice(0, n).map(pgUrl)), nearest), false);
  for (let n = 3; n >= 1; n--) {
    await waitForReplicas(n);
    await sleep(1500);
    report(`  ro endpoint, ${n} replica(s) serving`, await closedLoop(spread([urls.ro]), nearest), true);
    if (n > 1) await local.provider.stop(replicas[n - 1].name);
  }

  console.log('\nsingle-row INSERT ... RETURNING id (autocommit):');
  ({ leader } = await replicasNow());
  report('  straight to the leader', await closedLoop(spread([pgUrl(leader)]), insert), false);
  report('  rw endpoint', await closedLoop(spread([urls.rw]), insert), true);
  console.log(`\nbench took ${((performance.now() - t0) / 1000).toFixed(0)} s; load average now ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);
} catch (err) {
  console.error(`bench failed: ${err instanceof Error ? err.message : String(err)}`);
  exitCode = 1;
} finally {
  await dcs.close().catch(() => {});
  await local.stop();
  rmSync(dir, { recursive: true, force: true });
}
process.exitCode = exitCode;
