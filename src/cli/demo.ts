import { Option, type Command } from 'commander';
import { defaultDeals, maxDeals, minDeals } from '../demo/dataset.js';
import { runDemo, type DemoOptions } from '../demo/run.js';
import { KeelError } from '../errors.js';
import { maxLocalNodes } from '../providers/local-layout.js';
import { etcdCredentialsFromFlags, targetHelp } from './target.js';

interface DemoFlags {
  dir?: string;
  portBase?: string;
  nodes?: string;
  sync?: boolean;
  rw?: string;
  ro?: string;
  etcd?: string;
  cluster?: string;
  etcdCacert?: string;
  etcdCert?: string;
  etcdKey?: string;
  deals: string;
  writers: string;
  readers: string;
  duration?: string;
  chaos?: boolean;
  chaosInterval?: string;
  keep?: boolean;
  seed: string;
  timeout: string;
}

function whole(value: string, flag: string, min: number, max: number): number {
  // thousands separators are how people write 100,000 or 100_000
  const n = Number(value.replace(/[,_]/g, ''));
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new KeelError('KEEL_USAGE', `${flag} must be a whole number from ${min.toLocaleString('en-US')} to ${max.toLocaleString('en-US')} (got ${JSON.stringify(value)})`);
  }
  return n;
}

function dsn(value: string, flag: string): string {
  if (!/^postgres(ql)?:\/\//.test(value)) {
    throw new KeelError('KEEL_USAGE', `${flag} must be a postgresql:// URL`, { hint: `e.g. ${flag} postgresql://app@10.0.0.5:6402/app` });
  }
  return value;
}

/** Every flag checked before anything starts: bad input changes nothing. */
export function demoOptions(flags: DemoFlags): DemoOptions {
  if ((flags.rw === undefined) !== (flags.ro === undefined)) throw new KeelError('KEEL_USAGE', '--rw and --ro go together');
  const external = flags.rw !== undefined;
  if (external && (flags.portBase !== undefined || flags.nodes !== undefined || flags.sync !== undefined)) {
    throw new KeelError('KEEL_USAGE', '--port-base, --nodes and --sync/--no-sync start a local cluster; with --rw/--ro the demo uses the one given');
  }
  if ((flags.etcd === undefined) !== (flags.cluster === undefined)) throw new KeelError('KEEL_USAGE', '--etcd and --cluster go together');
  if (flags.etcd !== undefined && (!external || flags.dir !== undefined)) {
    throw new KeelError('KEEL_USAGE', '--etcd/--cluster follow the members of the cluster behind --rw/--ro; a local cluster (--dir) has its own etcd');
  }
  const writers = whole(flags.writers, '--writers', 0, 64);
  const readers = whole(flags.readers, '--readers', 0, 256);
  if (writers + readers === 0) throw new KeelError('KEEL_USAGE', '--writers and --readers cannot both be 0');
  return {
    dir: flags.dir ?? (external ? null : '.keel'),
    ...(flags.portBase === undefined ? {} : { portBase: whole(flags.portBase, '--port-base', 1024, 65436) }),
    ...(flags.nodes === undefined ? {} : { nodes: whole(flags.nodes, '--nodes', 1, maxLocalNodes) }),
    // the demo counts lost acknowledged writes: a cluster it makes loses none unless asked to (--no-sync)
    sync: flags.sync !== false,
    rw: flags.rw === undefined ? null : dsn(flags.rw, '--rw'),
    ro: flags.ro === undefined ? null : dsn(flags.ro, '--ro'),
    etcd: flags.etcd === undefined ? null : { endpoints: flags.etcd.split(','), cluster: flags.cluster!, credentials: etcdCredentialsFromFlags(flags, process.env) },
    deals: whole(flags.deals, '--deals', minDeals, maxDeals),
    writers,
    readers,
    durationSeconds: flags.duration === undefined ? null : whole(flags.duration, '--duration', 1, 7 * 86_400),
    chaos: flags.chaos === true || flags.chaosInterval !== undefined,
    chaosIntervalSeconds: flags.chaosInterval === undefined ? 30 : whole(flags.chaosInterval, '--chaos-interval', 1, 3600),
    keep: flags.keep === true,
    seed: whole(flags.seed, '--seed', 0, 2 ** 31 - 1),
    startTimeoutSeconds: whole(flags.timeout, '--timeout', 10, 3600),
  };
}

export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description('a "deals near me" workload on a cluster with a live view; --chaos kills the leader now and then')
    .option('--dir <dir>', 'local cluster directory: used if it runs, started (keel up --detach) if not (default ./.keel)')
    .option('--port-base <p>', 'ports [P, P+99] for a cluster the demo starts (default 6400)')
    .option('--nodes <n>', 'nodes of a cluster the demo starts (default 3)')
    .option('--sync', 'synchronous replication for a cluster the demo starts (the default)')
    .option('--no-sync', 'asynchronous replication instead: faster writes, but a failover can lose the last acknowledged ones')
    .option('--rw <dsn>', 'read-write endpoint of an existing cluster (with --ro; no cluster is started)')
    .option('--ro <dsn>', 'read-only endpoint of an existing cluster')
    .option('--etcd <urls>', 'with --rw/--ro: etcd of that cluster, to show its members')
    .option('--cluster <name>', 'with --etcd: the cluster name')
    .option('--etcd-cacert <file>', targetHelp.etcdCacert)
    .option('--etcd-cert <file>', targetHelp.etcdCert)
    .option('--etcd-key <file>', targetHelp.etcdKey)
    .option('--deals <n>', `deals in the dataset, ${minDeals.toLocaleString('en-US')} to ${maxDeals.toLocaleString('en-US')}`, String(defaultDeals))
    .option('--writers <n>', 'connections adding and expiring deals on rw', '2')
    .option('--readers <n>', 'connections searching nearby deals on ro', '4')
    .option('--duration <seconds>', 'stop after this long (default: until q or Ctrl-C)')
    .option('--chaos', 'kill the leader node now and then (local clusters)')
    .option('--chaos-interval <seconds>', 'with --chaos: S means a kill every S to 2S seconds (default 30); implies --chaos')
    .option('--keep', 'leave a cluster the demo started running at the end')
    .addOption(new Option('--seed <n>', 'random seed of the dataset and workload').default('42').hideHelp())
    .addOption(new Option('--timeout <seconds>', 'how long a cluster may take to start').default('180').hideHelp())
    .action(async (flags: DemoFlags) => runDemo(demoOptions(flags)));
}
