import { hostname } from 'node:os';
import type { Command } from 'commander';
import { Controller } from '../controller/controller.js';
import { localZones, type ProviderLimits } from '../controller/spec.js';
import { EtcdDcs } from '../dcs/etcd.js';
import { reloadEtcdOnHangUp } from './hangup.js';
import { defaultLocalInstanceClass, localInstanceClasses } from '../postgres/instance-class.js';
import { maxLocalNodes } from '../providers/local-layout.js';
import { LocalProvider } from '../providers/local.js';
import type { Provider } from '../providers/types.js';
import { systemClock } from '../util/clock.js';
import { createLogger } from '../util/log.js';
import { parseSeconds } from './router.js';
import { etcdCredentialsFromFlags, resolveTarget, targetHelp, type TargetOptions } from './target.js';

/** What the local provider holds; the CLI checks specs against it. */
export const localLimits: ProviderLimits = { maxNodes: maxLocalNodes, instanceClasses: Object.keys(localInstanceClasses) };
/** Without a provider Keel knows no limits but its own. */
export const unknownLimits: ProviderLimits = { maxNodes: 100, instanceClasses: null };

async function run(options: TargetOptions & { name?: string; drainSeconds: string }): Promise<void> {
  const drainMs = parseSeconds(options.drainSeconds, '--drain-seconds', 0, 3600) * 1000;
  const target = resolveTarget(options);
  await target.dcs.close();
  const name = options.name ?? `${hostname()}-${process.pid}`;
  const logger = createLogger({ component: 'controller', cluster: target.cluster, controller: name });
  let provider: Provider | null = null;
  let endpoints = options.etcd?.split(',') ?? [];
  let credentials = target.layout === null ? etcdCredentialsFromFlags(options, process.env) : {};
  if (target.layout !== null) {
    const cluster = target.layout.readCluster();
    endpoints = [target.layout.etcdEndpoint(cluster)];
    credentials = { tls: target.layout.clientTls('controller') };
    // agents it creates are supervised here (started again if they die), like `keel up` does for its own
    provider = new LocalProvider(target.layout, cluster, target.layout.readSecrets(), logger, true);
  } else {
    logger.warn('no provider for --etcd/--cluster: a dry run that records what it would do in events');
  }
  const dcs = new EtcdDcs({ endpoints, cluster: target.cluster, requestTimeoutMs: 2000, logger, credentials });
  reloadEtcdOnHangUp(dcs, logger, credentials?.tls !== undefined);
  const local = target.layout !== null;
  const controller = new Controller({
    name,
    dcs,
    provider,
    limits: local ? localLimits : unknownLimits,
    defaults: { zones: local ? localZones : null, instanceClass: local ? defaultLocalInstanceClass : 'default' },
    clock: systemClock,
    logger,
    drainMs,
  });
  await controller.start();
  logger.info({ provider: local ? 'local' : 'none' }, 'controller started');
  await new Promise<void>((resolve) => {
    const onSignal = () => void controller.stop().finally(resolve);
    process.once('SIGTERM', onSignal);
    process.once('SIGINT', onSignal);
  });
  await dcs.close();
  logger.info('controller stopped');
}

export function registerController(program: Command): void {
  program
    .command('controller')
    .description('keep the declared shape: replace dead nodes, fence a dead leader, scale replicas (one active per cluster)')
    .option('--dir <dir>', targetHelp.dir)
    .option('--etcd <url>', `${targetHelp.etcd} (no provider: a dry run)`)
    .option('--cluster <name>', targetHelp.cluster)
    .option('--etcd-cacert <file>', targetHelp.etcdCacert)
    .option('--etcd-cert <file>', targetHelp.etcdCert)
    .option('--etcd-key <file>', targetHelp.etcdKey)
    .option('--name <name>', 'this controller\'s name in etcd (default host-pid)')
    .option('--drain-seconds <n>', 'how long a replica about to be removed keeps serving its open reads, with no new ones', '30')
    .action(run);
}
