/**
 * One demo run, start to end: the cluster (found, started, or given as DSNs),
 * the dataset, the workload with its live view and optional chaos, then the
 * check of every acknowledged write and the summary. Whatever the demo
 * started, it stops, also on Ctrl-C or an error.
 */
import type { EtcdCredentials } from '../dcs/etcd-client.js';
import { EtcdDcs } from '../dcs/etcd.js';
import { KeelError, redactSecrets } from '../errors.js';
import { LocalLayout } from '../providers/local-layout.js';
import { silentLogger } from '../util/log.js';
import type { Endpoint } from '../workload/connect.js';
import { Chaos } from './chaos.js';
import { ensureLocalCluster, stopLocalCluster, type LocalTarget } from './cluster.js';
import type { DemoEvent } from './changes.js';
import { seededRandom } from './dataset.js';
import { prepareDataset } from './load.js';
import { ClusterMonitor } from './monitor.js';
import { Screen } from './screen.js';
import { lostCount, renderSummary, replicationMode, verifyAcknowledged } from './summary.js';
import { eventLine, formatInt, renderLive, renderPlainLine, renderProgress, type ViewState } from './view.js';
import { Workload } from './workload.js';

export interface DemoOptions {
  /** local cluster directory; with rw/ro only for members and chaos */
  dir: string | null;
  portBase?: number;
  nodes?: number;
  sync: boolean;
  rw: string | null;
  ro: string | null;
  etcd: { endpoints: string[]; cluster: string; credentials: EtcdCredentials } | null;
  deals: number;
  writers: number;
  readers: number;
  durationSeconds: number | null;
  chaos: boolean;
  chaosIntervalSeconds: number;
  keep: boolean;
  seed: number;
  startTimeoutSeconds: number;
}

const redrawMs = 500;
const plainLineEveryMs = 5000;
/** a failover with a leader restart and catch-up fits comfortably */
const verifyTimeoutMs = 90_000;

interface Setup {
  rw: Endpoint;
  ro: Endpoint;
  where: string;
  local: LocalTarget | null;
  layout: LocalLayout | null;
  dcs: EtcdDcs | null;
}

/** Turns a Ctrl-C or SIGTERM into a clean stop (the first one; a second one is left to Node). */
function stopSignal(): { requested: () => boolean; request: () => void; wait: (ms: number | null) => Promise<void>; dispose: () => void } {
  let requested = false;
  let wake: () => void = () => undefined;
  const request = () => {
    requested = true;
    wake();
  };
  const onSignal = () => {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    request();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return {
    requested: () => requested,
    request,
    wait: (ms) =>
      new Promise<void>((resolve) => {
        if (requested) return resolve();
        const timer = ms === null ? null : setTimeout(resolve, ms);
        wake = () => {
          if (timer) clearTimeout(timer);
          resolve();
        };
      }),
    dispose: () => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    },
  };
}

async function setUp(options: DemoOptions, screen: Screen): Promise<Setup> {
  if (options.rw !== null && options.ro !== null) {
    const layout = options.dir === null ? null : new LocalLayout(options.dir);
    const file = layout?.readCluster() ?? null;
    // a local cluster's URLs carry no password: its secrets file has it
    const password = layout !== null ? layout.readSecrets().app : undefined;
    const endpoint = (url: string): Endpoint => (password !== undefined && !/:\/\/[^/@]*:[^/@]*@/.test(url) ? { connectionString: url, password } : { connectionString: url });
    const etcd = layout !== null && file !== null ? { endpoints: [layout.etcdEndpoint(file)], cluster: file.cluster, credentials: { tls: layout.clientTls('operator') } } : options.etcd;
    const dcs = etcd === null ? null : new EtcdDcs({ ...etcd, requestTimeoutMs: 2000, logger: silentLogger() });
    const where = `rw ${redactSecrets(options.rw)}, ro ${redactSecrets(options.ro)}`;
    return { rw: endpoint(options.rw), ro: endpoint(options.ro), where, local: null, layout, dcs };
  }
  const local = await ensureLocalCluster(
    { dir: options.dir ?? '.keel', portBase: options.portBase, nodes: options.nodes, sync: options.sync, timeoutSeconds: options.startTimeoutSeconds },
    (text) => screen.line(text),
    (text) => (screen.tty ? screen.overwrite(text) : undefined),
  );
  const dcs = new EtcdDcs({
    endpoints: [local.layout.etcdEndpoint(local.file)],
    cluster: local.file.cluster,
    requestTimeoutMs: 2000,
    logger: silentLogger(),
    credentials: { tls: local.layout.clientTls('operator') },
  });
  return { rw: local.rw, ro: local.ro, where: `cluster ${local.file.cluster} in ${local.layout.dir}`, local, layout: local.layout, dcs };
}

export async function runDemo(options: DemoOptions): Promise<void> {
  const screen = new Screen();
  const stop = stopSignal();
  let setup: Setup | null = null;
  try {
    setup = await setUp(options, screen);
    if (!stop.requested()) await runWorkload(options, setup, screen, stop);
  } finally {
    stop.dispose();
    screen.leaveLive();
    screen.endLine();
    await setup?.dcs?.close().catch(() => undefined);
    if (setup?.local?.startedByDemo && !options.keep) {
      screen.line(`stopping the cluster the demo started (keel down --dir ${setup.local.layout.dir}; --keep leaves it running)`);
      await stopLocalCluster(setup.local.layout);
    } else if (setup?.local?.startedByDemo) {
      screen.line(`the cluster keeps running: keel status --dir ${setup.local.layout.dir}; stop it with keel down --dir ${setup.local.layout.dir}`);
    }
  }
}

async function runWorkload(options: DemoOptions, setup: Setup, screen: Screen, stop: ReturnType<typeof stopSignal>): Promise<void> {
  screen.line(`keel demo: ${setup.where}`);
  let lastProgressMs = 0;
  const loaded = await prepareDataset(
    setup.rw,
    options.deals,
    options.seed,
    (p) => {
      if (p.total === 0 || (Date.now() - lastProgressMs < 100 && p.done < p.total)) return;
      lastProgressMs = Date.now();
      if (screen.tty || p.done === p.total || (p.done > 0 && p.done % 50_000 === 0)) screen.overwrite(renderProgress(p, screen.width, screen.tty));
    },
    stop.requested,
    // a cluster that just started may still settle; a DSN that is wrong should say so soon
    setup.local === null ? 15_000 : 60_000,
    (text) => screen.line(text),
  );
  if (stop.requested()) return;
  screen.line(`dataset: ${formatInt(loaded.existing + loaded.loaded)} deals (${loaded.loaded > 0 ? `loaded ${formatInt(loaded.loaded)} in ${loaded.seconds.toFixed(1)} s` : 'already there'}), GiST index on position`);
  const replication = await replicationMode(setup.rw);
  screen.line(`replication: ${replication}`);

  const startedMs = Date.now();
  const monitor = setup.dcs === null ? null : new ClusterMonitor(setup.dcs, startedMs);
  const chaos =
    monitor !== null && setup.layout !== null && setup.dcs !== null
      ? new Chaos({
          layout: setup.layout,
          dcs: setup.dcs,
          monitor,
          intervalSeconds: { min: options.chaosIntervalSeconds, max: options.chaosIntervalSeconds * 2 },
          nodes: setup.layout.readCluster().nodes,
          random: seededRandom(options.seed + 7),
        })
      : null;
  if (options.chaos && chaos === null) screen.line('chaos: off (it kills local processes: give --dir of a local cluster)');
  const workload = new Workload({ rw: setup.rw, ro: setup.ro, writers: options.writers, readers: options.readers, seed: options.seed });
  const chaosText = options.chaos && chaos !== null ? `; chaos: a leader kill every ${options.chaosIntervalSeconds}-${options.chaosIntervalSeconds * 2} s` : '';
  screen.line(`workload: ${options.writers} writer(s) on rw, ${options.readers} reader(s) on ro${chaosText}${options.durationSeconds === null ? '' : `; for ${options.durationSeconds} s`}`);

  const state = (): ViewState => ({
    nowMs: Date.now(),
    startedMs,
    durationSeconds: options.durationSeconds,
    where: setup.where,
    replication,
    members: monitor?.members ?? null,
    etcdError: monitor?.etcdError ?? null,
    reads: workload.reads,
    writes: workload.writes,
    pause: workload.pause,
    readers: options.readers,
    writers: options.writers,
    acknowledged: workload.acked.count,
    events: monitor?.events ?? [],
    chaos: chaos === null ? null : { scheduled: options.chaos, nextKillAtMs: chaos.nextKillAtMs, busy: chaos.busy, kills: chaos.kills.length },
    lastError: workload.lastError,
  });

  const draw = () => (screen.tty ? screen.draw(renderLive(state(), screen.width, screen.height)) : screen.line(renderPlainLine(state())));
  let timer: NodeJS.Timeout | null = null;
  try {
    if (monitor !== null) {
      if (!screen.tty) monitor.onEvent = (e: DemoEvent) => screen.line(`[${String(Math.round((Date.now() - startedMs) / 1000)).padStart(4)}s] event ${eventLine(e, 1000, false).trim()}`);
      await monitor.start();
    }
    workload.start();
    if (options.chaos) chaos?.schedule();
    screen.enterLive();
    screen.listenForKeys((key) => {
      if (key === 'q') stop.request();
      else if (key === 'k' && chaos !== null) void chaos.killLeader('key');
      else if (key === 'k') monitor?.note('demo', 'k needs a local cluster (--dir): nothing killed', 'warn');
    });
    timer = setInterval(draw, screen.tty ? redrawMs : plainLineEveryMs);
    draw();
    await stop.wait(options.durationSeconds === null ? null : options.durationSeconds * 1000);
  } finally {
    if (timer) clearInterval(timer);
    screen.leaveLive();
    // lets a held-down node come back and every statement in flight finish: the check reads a settled cluster
    await chaos?.stop();
    await workload.stop();
    await monitor?.refresh();
  }
  try {
    await finish(setup, screen, workload, monitor, chaos, replication, startedMs);
  } finally {
    await monitor?.stop();
  }
}

/** The events kept from the live view, the check of every acknowledged write, the summary. */
async function finish(
  setup: Setup,
  screen: Screen,
  workload: Workload,
  monitor: ClusterMonitor | null,
  chaos: Chaos | null,
  replication: string,
  startedMs: number,
): Promise<void> {
  if (screen.tty && monitor !== null && monitor.events.length > 0) {
    // the live view is gone with the alternate screen: keep what happened on the normal one
    screen.line('events:');
    for (const e of monitor.events.slice(-20)) screen.line(eventLine(e, screen.width, true));
  }
  const seconds = (Date.now() - startedMs) / 1000;
  screen.line('workload stopped; checking every acknowledged write against the leader...');
  const verification = await verifyAcknowledged(setup.rw, workload.acked, verifyTimeoutMs);
  await monitor?.refresh();
  const finalReplication = await replicationMode(setup.rw);
  const summary = renderSummary({
    seconds,
    workload,
    failovers: monitor?.failovers ?? [],
    kills: chaos?.kills ?? [],
    replication: finalReplication.startsWith('unknown') ? replication : finalReplication,
    leader: monitor?.leader ?? null,
    verification,
  });
  screen.line();
  for (const line of summary) screen.line(line);
  if (verification.error !== null) throw new KeelError('KEEL_NO_LEADER', `could not check the acknowledged writes: ${verification.error}`);
  if (lostCount(verification) > 0) throw new KeelError('KEEL_DEMO_LOST_WRITES', `${lostCount(verification)} acknowledged write(s) were lost`);
}
