import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import type { Command } from 'commander';
import { awsControllerDefaults, awsNodeCredentialsOptions, awsProviderLimits, awsProviderOptions } from '../controller/aws.js';
import { Controller } from '../controller/controller.js';
import { KeelError } from '../errors.js';
import { AwsProvider } from '../providers/aws.js';
import { SsmNodeCredentials } from '../providers/aws-credentials.js';
import { parseAwsDeploymentText } from '../providers/aws-deployment.js';
import { parseAwsControllerLaunch } from '../providers/aws-launch.js';
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

interface ControllerOptions extends TargetOptions {
  name?: string;
  drainSeconds: string;
  awsConfig?: string;
  awsLaunch?: string;
}

/** The aws provider of keel-aws.yml and aws-launch.json, giving new nodes their credentials; its limits and first spec. */
function awsSetup(options: ControllerOptions): { provider: Provider; limits: ProviderLimits; defaults: { zones: string[]; instanceClass: string; nodes: number }; cluster: string } {
  if (options.awsConfig === undefined || options.awsLaunch === undefined) {
    throw new KeelError('KEEL_USAGE', '--aws-config and --aws-launch go together', { hint: 'give keel-aws.yml and the aws-launch.json `keel aws up` wrote' });
  }
  const deployment = parseAwsDeploymentText(readText(options.awsConfig), options.awsConfig);
  const launch = parseAwsControllerLaunch(readText(options.awsLaunch), options.awsLaunch);
  if (options.cluster !== undefined && options.cluster !== deployment.cluster) {
    throw new KeelError('KEEL_CONFIG_INVALID', `--cluster ${options.cluster} is not ${options.awsConfig}'s cluster ${deployment.cluster}`, { hint: 'leave --cluster out: keel-aws.yml names it' });
  }
  const credentials = new SsmNodeCredentials(awsNodeCredentialsOptions(deployment, launch));
  return {
    provider: new AwsProvider({ ...awsProviderOptions(deployment, launch), credentials }),
    limits: awsProviderLimits(deployment),
    defaults: awsControllerDefaults(deployment),
    cluster: deployment.cluster,
  };
}

function readText(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new KeelError('KEEL_CONFIG_UNREADABLE', `cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`, { hint: 'give the path of the file `keel aws up` wrote' });
  }
}

async function run(options: ControllerOptions): Promise<void> {
  const drainMs = parseSeconds(options.drainSeconds, '--drain-seconds', 0, 3600) * 1000;
  const aws = options.awsConfig !== undefined || options.awsLaunch !== undefined ? awsSetup(options) : null;
  if (aws !== null && options.dir !== undefined) throw new KeelError('KEEL_USAGE', '--aws-config runs the AWS provider; --dir the local one: give one', { hint: 'on AWS: --aws-config, --aws-launch and --etcd' });
  const target = resolveTarget(aws === null ? options : { ...options, cluster: aws.cluster });
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
  } else if (aws !== null) {
    provider = aws.provider;
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
    limits: local ? localLimits : (aws?.limits ?? unknownLimits),
    defaults: local ? { zones: localZones, instanceClass: defaultLocalInstanceClass } : (aws?.defaults ?? { zones: null, instanceClass: 'default' }),
    clock: systemClock,
    logger,
    drainMs,
  });
  await controller.start();
  logger.info({ provider: local ? 'local' : aws !== null ? 'aws' : 'none' }, 'controller started');
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
    .option('--aws-config <file>', 'run the AWS provider for the cluster of this keel-aws.yml (with --aws-launch and --etcd)')
    .option('--aws-launch <file>', 'the aws-launch.json `keel aws up` wrote: the nodes\' security group, where nodes get Keel')
    .action(run);
}
