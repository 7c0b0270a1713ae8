/**
 * `keel controller --metrics host:port [--metrics-cert F --metrics-key F]`:
 * GET /metrics beside the controller (controller/metrics.ts). The listener is
 * added to the command from outside its own file and runs around its action:
 * it starts before the controller does, a bad flag stops the command before
 * anything starts (exit 2), and it never holds the process once the
 * controller has stopped.
 */
import type { Command } from 'commander';
import { buildControllerRegistry } from '../controller/metrics.js';
import { LocalLayout } from '../providers/local-layout.js';
import { createLogger } from '../util/log.js';
import type { MetricsServer } from '../util/metrics.js';
import { metricsListen, startMetricsServer } from './router.js';

interface MetricsFlags {
  metrics?: string;
  metricsCert?: string;
  metricsKey?: string;
  cluster?: string;
  dir?: string;
}

/** The cluster's name when the flags give it (--cluster, or the cluster of --dir). */
function clusterOf(flags: MetricsFlags): string | null {
  if (flags.cluster !== undefined) return flags.cluster;
  if (flags.dir === undefined) return null;
  const layout = new LocalLayout(flags.dir);
  return layout.exists() ? layout.readCluster().cluster : null;
}

export function addControllerMetrics(program: Command): void {
  const command = program.commands.find((c) => c.name() === 'controller');
  if (command === undefined) return;
  let server: MetricsServer | null = null;
  command
    .option('--metrics <host:port>', 'serve GET /metrics (Prometheus) there: nodes per zone, replacements, fencings, the autoscaler')
    .option('--metrics-cert <file>', 'with --metrics: serve HTTPS with this certificate')
    .option('--metrics-key <file>', 'with --metrics: the key of --metrics-cert')
    .hook('preAction', async (_command, action) => {
      const flags = action.opts<MetricsFlags>();
      const listen = metricsListen(flags);
      if (listen === null) return;
      const cluster = clusterOf(flags);
      const logger = createLogger({ component: 'controller', ...(cluster === null ? {} : { cluster }) });
      server = await startMetricsServer([buildControllerRegistry(cluster)], listen, {}, logger);
      server.unref();
    })
    .hook('postAction', async () => {
      await server?.close();
      server = null;
    });
}
