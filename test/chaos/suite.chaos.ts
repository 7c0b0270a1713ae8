/**
 * The fault-injection suite: `make chaos` (profile full) and `make chaos-ci`
 * (profile ci). One cluster per replication mode, faults one after another
 * under a write and read workload (through the router and straight to the
 * nodes), each checked after the cluster healed. Results go to
 * test/chaos/results/<time>-<profile>/ as results.json, results.md and the
 * logs of every process.
 *
 * Environment: CHAOS_PROFILE (full | ci), CHAOS_SEED, CHAOS_TTL (seconds),
 * CHAOS_FAULTS (e.g. 1,4,5a: the faults of every mode), CHAOS_MODES (on,off),
 * CHAOS_SYNC_FAULTS, CHAOS_ASYNC_FAULTS (how many faults each mode runs in
 * the full profile).
 */
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Observer } from '../../src/workload/observer.js';
import { ChaosCluster, clusterName, removeStale } from './cluster.js';
import { faults } from './faults.js';
import { makePlan, Rng } from './plan.js';
import { markdown, violations, writeResults } from './report.js';
import { runFault, type RunResult } from './runner.js';

const plan = makePlan();
const stamp = new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19);
const resultsDir = join(fileURLToPath(new URL('.', import.meta.url)), 'results', `${stamp}-${plan.profile}`);
const results: RunResult[] = [];
const startedMs = Date.now();
let nextRun = 1;

/** Whatever is running when the suite is interrupted; cleaned up by the signal handler. */
let running: { cluster: ChaosCluster | null; observer: Observer | null } = { cluster: null, observer: null };

async function cleanup(): Promise<void> {
  const { cluster, observer } = running;
  running = { cluster: null, observer: null };
  await observer?.stop().catch(() => undefined);
  if (cluster !== null) {
    try {
      cluster.copyLogs(join(resultsDir, `logs-${cluster.options.synchronousMode}`));
    } catch {
      // logs are a courtesy; the cleanup is not
    }
    await cluster.stop();
  }
}

const onSignal = (signal: NodeJS.Signals) => {
  process.stderr.write(`chaos: ${signal}: cleaning up\n`);
  void cleanup().finally(() => process.exit(130));
};

beforeAll(async () => {
  if (process.getuid?.() !== 0) throw new Error('the chaos suite creates network namespaces: run it as root');
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const removed = await removeStale();
  if (removed.length > 0) process.stderr.write(`chaos: removed leftovers of earlier runs: ${removed.join(', ')}\n`);
  const total = plan.modes.reduce((n, m) => n + m.faults.length, 0);
  process.stderr.write(`chaos: profile ${plan.profile}, seed ${plan.seed}, ttl ${plan.ttlSeconds} s, ${total} faults; results in ${resultsDir}\n`);
});

afterAll(async () => {
  await cleanup();
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
  const wallSeconds = (Date.now() - startedMs) / 1000;
  const files = writeResults(resultsDir, plan, results, wallSeconds);
  process.stdout.write(`\n${markdown(plan, results, wallSeconds).split('\n## Runs')[0]}\nfull results: ${files.md}\n`);
});

for (const modePlan of plan.modes) {
  const mode = modePlan.synchronousMode;
  it(`synchronous_mode ${mode}: ${modePlan.faults.length} faults without a correctness failure`, async () => {
    const rng = new Rng(plan.seed + (mode === 'off' ? 1 : 0));
    const settings = { synchronousMode: mode, ttlSeconds: plan.ttlSeconds, loopWaitSeconds: plan.loopWaitSeconds, nodes: 3 };
    const cluster = await ChaosCluster.start(settings, join(resultsDir, `logs-${mode}-start`));
    running.cluster = cluster;
    const observer = new Observer(cluster.dcs, cluster.etcd.endpoints(), clusterName, { tls: cluster.layout.clientTls('operator') });
    running.observer = observer;
    await observer.start();
    const mine: RunResult[] = [];
    try {
      for (const id of modePlan.faults) {
        const result = await runFault({ cluster, observer, rng, mode, ttlMs: plan.ttlSeconds * 1000 }, faults[id], nextRun++);
        results.push(result);
        mine.push(result);
        const broken = violations(result);
        const { router, direct } = result.writes.byClient;
        const margin = result.oldPrimary === null ? 'no other leader' : result.oldPrimary.marginMs === null ? 'no ack' : `${(result.oldPrimary.marginMs / 1000).toFixed(2)} s`;
        process.stderr.write(
          `chaos: [${mode}] fault ${id} run ${result.run} on ${result.target ?? '-'}: unavailable ${result.unavailabilitySeconds.toFixed(1)} s, ` +
            `healed ${result.healSeconds === null ? 'NO' : `${result.healSeconds.toFixed(1)} s`}, acked ${router.acked}+${direct.acked} (router+direct), ` +
            `lost ${router.lost}+${direct.lost}, split-brain ${router.splitBrain}+${direct.splitBrain}, old primary last ack - next leader ${margin}` +
            `${broken.length > 0 ? `; FAILED: ${broken.join('; ')}` : ''}${result.notes.length > 0 ? `; ${result.notes.join('; ')}` : ''}\n`,
        );
        // a cluster that did not come back makes every later run meaningless
        if (result.error?.startsWith('the cluster was not healthy')) break;
      }
    } finally {
      await cleanup();
    }
    expect(mine.flatMap((r) => violations(r).map((v) => `fault ${r.fault} run ${r.run}: ${v}`))).toEqual([]);
  });
}
