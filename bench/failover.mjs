// Failover time on this machine: seconds from SIGKILL of the leader node
// (agent + postmaster) until a write succeeds on the new leader, over 5 runs.
// The killed node stays down until the write succeeded (a dead machine does
// not come back in a second), then rejoins before the next run.
//
//   node bench/failover.mjs [--runs 5] [--port-base 18000]
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { LocalCluster } from '../dist/providers/local-cluster.js';
import { LocalLayout } from '../dist/providers/local-layout.js';
import { silentLogger } from '../dist/util/log.js';

const { values } = parseArgs({ options: { runs: { type: 'string', default: '5' }, 'port-base': { type: 'string', default: '18000' } } });
const runs = Number(values.runs);
const portBase = Number(values['port-base']);

const dir = mkdtempSync('/tmp/keel-bench-');
chmodSync(dir, 0o755);
const layout = new LocalLayout(dir);
const { cluster, secrets } = await layout.create({ v: 1, cluster: 'bench', portBase, nodes: 3, synchronousMode: 'off' });
const local = new LocalCluster(layout, cluster, secrets, silentLogger(), { restartAgents: false });
const dcs = local.dcs();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function write(port) {
  const client = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', password: secrets.superuser, database: 'app', connectionTimeoutMillis: 1000 });
  try {
    await client.connect();
    const [{ r }] = (await client.query('SELECT pg_is_in_recovery() AS r')).rows;
    if (r) throw new Error('read-only');
    await client.query('INSERT INTO bench_writes DEFAULT VALUES');
  } finally {
    await client.end().catch(() => {});
  }
}

async function leader() {
  for (let i = 0; i < 600; i++) {
    const view = await dcs.readCluster().catch(() => null);
    const name = view?.leader?.value.name;
    const m = view?.members.find((x) => x.name === name && x.role === 'primary');
    if (m) return m;
    await sleep(100);
  }
  throw new Error('no leader within 60 s');
}

const figures = [];
try {
  await local.checkPorts();
  await local.start();
  await local.waitReady(120_000);
  const first = await leader();
  const c = new pg.Client({ host: '127.0.0.1', port: first.pgPort, user: 'postgres', password: secrets.superuser, database: 'app' });
  await c.connect();
  await c.query('CREATE TABLE bench_writes (id bigserial PRIMARY KEY, at timestamptz DEFAULT now())');
  await c.end();
  for (let run = 1; run <= runs; run++) {
    await local.waitReady(120_000);
    const old = await leader();
    const others = [1, 2, 3].map((i) => portBase + 10 + i - 1).filter((p) => p !== old.pgPort);
    const killedAt = performance.now();
    await local.provider.fence(old.name);
    let seconds = null;
    for (let i = 0; i < 1200 && seconds === null; i++) {
      for (const port of others) {
        try {
          await write(port);
          seconds = (performance.now() - killedAt) / 1000;
          break;
        } catch {
          // not writable yet
        }
      }
      if (seconds === null) await sleep(50);
    }
    figures.push(seconds);
    if (seconds === null) {
      const view = await dcs.readCluster().catch(() => null);
      for (const m of view?.members ?? []) console.log(`  ${m.name}: ${m.role}/${m.state} tl ${m.timeline}: ${m.reason}`);
    }
    console.log(`run ${run}: write on the new leader ${seconds === null ? 'never (60 s)' : `${seconds.toFixed(2)} s`} after SIGKILL of ${old.name}`);
    await local.provider.start(old.name);
  }
  const sorted = figures.filter((f) => f !== null).sort((a, b) => a - b);
  const median = sorted[Math.floor(sorted.length / 2)];
  const ttl = (await dcs.readCluster()).config?.value.ttl ?? 10;
  console.log(`failover (SIGKILL leader node -> write on new leader), ${runs} runs, ttl ${ttl} s: median ${median?.toFixed(2)} s, min ${sorted[0]?.toFixed(2)} s, max ${sorted.at(-1)?.toFixed(2)} s`);
} finally {
  await dcs.close().catch(() => {});
  await local.stop();
  if (process.env.KEEL_BENCH_KEEP) console.log(`kept ${dir}`);
  else rmSync(dir, { recursive: true, force: true });
}
