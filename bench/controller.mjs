// The controller's figures on this machine, with a controller running beside
// a three-node local cluster (replaceAfterSeconds 5):
//  1. seconds from SIGKILL of the leader node (agent + postmaster) to a write
//     through the router's rw endpoint, and to all declared members streaming
//     again (the dead node replaced by a fresh clone); over --runs runs;
//  2. seconds to add one replica to a database of --size-mb, against a bare
//     pg_basebackup of the same database in the same run.
//
//   node bench/controller.mjs [--runs 3] [--size-mb 1024] [--port-base 18100]
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { Controller } from '../dist/controller/controller.js';
import { localZones } from '../dist/controller/spec.js';
import { defaultLocalInstanceClass } from '../dist/postgres/instance-class.js';
import { LocalCluster } from '../dist/providers/local-cluster.js';
import { LocalLayout, portOffsets } from '../dist/providers/local-layout.js';
import { systemClock } from '../dist/util/clock.js';
import { silentLogger } from '../dist/util/log.js';
import { readPidFile } from '../dist/util/process.js';

const { values } = parseArgs({
  options: { runs: { type: 'string', default: '3' }, 'size-mb': { type: 'string', default: '1024' }, 'port-base': { type: 'string', default: '18100' } },
});
const runs = Number(values.runs);
const sizeMb = Number(values['size-mb']);
const portBase = Number(values['port-base']);

const dir = mkdtempSync('/tmp/keel-bench-ctl-');
chmodSync(dir, 0o755);
const layout = new LocalLayout(dir);
const { cluster, secrets } = await layout.create({ v: 1, cluster: 'bench', portBase, nodes: 3, synchronousMode: 'off' });
const local = new LocalCluster(layout, cluster, secrets, silentLogger(), { restartAgents: false });
const dcs = local.dcs();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const rwPort = portBase + portOffsets.routerRw;
let controller = null;

async function sql(port, text, timeoutMs = 1000) {
  const client = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', password: secrets.superuser, database: 'app', connectionTimeoutMillis: timeoutMs });
  try {
    await client.connect();
    return (await client.query(text)).rows;
  } finally {
    await client.end().catch(() => {});
  }
}

/** A leader and `replicas` fresh replicas streaming from it. */
function shapeIs(view, replicas) {
  const leader = view.members.find((m) => m.name === view.leader?.value.name && m.role === 'primary');
  const fresh = view.members.filter((m) => Date.now() - m.updatedAtMs < 4000);
  const streaming = fresh.filter((m) => m.role === 'replica' && m.streaming && m.upstream === leader?.name);
  return leader !== undefined && streaming.length === replicas && fresh.length === replicas + 1;
}

async function until(what, accept, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const view = await dcs.readCluster().catch(() => null);
    if (view && (await accept(view))) return view;
    if (Date.now() > deadline) {
      for (const m of view?.members ?? []) console.log(`  ${m.name}: ${m.role}/${m.state} streaming ${m.streaming}, ${Date.now() - m.updatedAtMs} ms old: ${m.reason}`);
      console.log(`  controller: ${controller?.lastPlan?.reason}`);
      throw new Error(`no ${what} within ${timeoutMs / 1000} s`);
    }
    await sleep(50);
  }
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

try {
  await local.checkPorts();
  await local.start();
  await local.waitReady(120_000);
  controller = new Controller({
    name: 'bench',
    dcs,
    provider: local.provider,
    limits: { maxNodes: 20, instanceClasses: null },
    defaults: { zones: localZones, instanceClass: defaultLocalInstanceClass },
    clock: systemClock,
    logger: silentLogger(),
    tickMs: 250,
  });
  await controller.start();
  for (let i = 0; i < 100 && (await dcs.readSpec()) === null; i++) await sleep(100);
  const first = await dcs.readSpec();
  await dcs.putSpec({ ...first.value, replaceAfterSeconds: 5 }, first.modRevision);
  await sql(rwPort, 'CREATE TABLE bench_writes (id bigserial PRIMARY KEY, at timestamptz DEFAULT now())', 5000);

  const toWrite = [];
  const toStreaming = [];
  for (let run = 1; run <= runs; run++) {
    await until('settled cluster', (v) => shapeIs(v, 2), 120_000);
    const view = await dcs.readCluster();
    const old = view.leader.value.name;
    const pids = [readPidFile(layout.agentPidFile(old)), readPidFile(`${layout.dataDir(old)}/postmaster.pid`)];
    const killedAt = performance.now();
    for (const pid of pids) process.kill(pid, 'SIGKILL');
    let wrote = null;
    while (wrote === null && performance.now() - killedAt < 60_000) {
      try {
        await sql(rwPort, 'INSERT INTO bench_writes DEFAULT VALUES', 500);
        wrote = (performance.now() - killedAt) / 1000;
      } catch {
        await sleep(20);
      }
    }
    await until('all members streaming again', (v) => shapeIs(v, 2) && !v.members.some((m) => m.name === old), 120_000);
    const streaming = (performance.now() - killedAt) / 1000;
    toWrite.push(wrote);
    toStreaming.push(streaming);
    console.log(`run ${run}: SIGKILL of leader ${old} -> write through rw ${wrote === null ? 'never (60 s)' : `${wrote.toFixed(2)} s`}; -> all 3 members streaming ${streaming.toFixed(1)} s`);
  }
  console.log(`failover with the controller (SIGKILL leader node -> write through rw), ${runs} runs: median ${median(toWrite).toFixed(2)} s, max ${Math.max(...toWrite).toFixed(2)} s`);
  console.log(`back to the declared shape (replaceAfterSeconds 5, then clone), ${runs} runs: median ${median(toStreaming).toFixed(1)} s`);

  // a database of about size-mb: rows of ~1 kB
  const rows = Math.round((sizeMb * 1024 * 1024) / 1100);
  const loadStarted = performance.now();
  await sql(rwPort, `CREATE TABLE bench_big AS SELECT g AS id, repeat(md5(g::text), 30) AS pad FROM generate_series(1, ${rows}) g`, 5000);
  const [{ bytes }] = await sql(rwPort, "SELECT pg_database_size('app')::bigint AS bytes", 5000);
  console.log(`loaded ${(Number(bytes) / 1024 / 1024).toFixed(0)} MB in database app in ${((performance.now() - loadStarted) / 1000).toFixed(1)} s`);
  await until('replicas caught up', (v) => shapeIs(v, 2) && v.members.every((m) => m.role === 'primary' || (m.replayedLsn ?? 0) >= (v.members.find((x) => x.role === 'primary')?.walLsn ?? 0) - 1024 * 1024), 600_000);

  const leader = (await dcs.readCluster()).members.find((m) => m.role === 'primary');
  const bareBasebackup = () => {
    const target = `${dir}/bare-basebackup`;
    const started = performance.now();
    execFileSync('/usr/lib/postgresql/15/bin/pg_basebackup', ['-D', target, '-h', '127.0.0.1', '-p', String(leader.pgPort), '-U', 'replicator', '-X', 'stream', '--checkpoint=fast', '--no-password'], {
      env: { ...process.env, PGPASSWORD: secrets.replication },
      stdio: 'inherit',
    });
    rmSync(target, { recursive: true, force: true });
    return (performance.now() - started) / 1000;
  };
  // once before and once after the replica is added: the first copy also warms the page cache
  const bareBefore = bareBasebackup();

  const spec = await dcs.readSpec();
  const addStarted = performance.now();
  await dcs.putSpec({ ...spec.value, nodes: spec.value.nodes + 1 }, spec.modRevision);
  await until('a fourth member streaming', (v) => shapeIs(v, 3), 600_000);
  const added = (performance.now() - addStarted) / 1000;
  const bareAfter = bareBasebackup();
  const bare = (bareBefore + bareAfter) / 2;
  console.log(`bare pg_basebackup of ${(Number(bytes) / 1024 / 1024).toFixed(0)} MB: ${bareBefore.toFixed(1)} s before, ${bareAfter.toFixed(1)} s after the replica was added`);
  console.log(`one replica added through the spec (create, agent start, clone, stream): ${added.toFixed(1)} s = ${(added / bare).toFixed(2)}x the mean bare pg_basebackup`);
} finally {
  await controller?.stop().catch(() => {});
  await dcs.close().catch(() => {});
  await local.stop();
  if (process.env.KEEL_BENCH_KEEP) console.log(`kept ${dir}`);
  else rmSync(dir, { recursive: true, force: true });
}
