import type { Command } from 'commander';
import { resolve } from 'node:path';
import type { EtcdCredentials } from '../dcs/etcd-client.js';
import { EtcdDcs } from '../dcs/etcd.js';
import { KeelError } from '../errors.js';
import { silentLogger } from '../util/log.js';
import { LocalLayout } from '../providers/local-layout.js';

export interface TargetOptions {
  dir?: string;
  etcd?: string;
  cluster?: string;
  etcdCacert?: string;
  etcdCert?: string;
  etcdKey?: string;
}

/** The etcd TLS flags a command was given; commander names them etcdCacert, etcdCert, etcdKey. */
export type EtcdTlsFlags = Pick<TargetOptions, 'etcdCacert' | 'etcdCert' | 'etcdKey'>;

/**
 * Credentials for an etcd named by --etcd: the client pair and CA from the
 * flags, a user and password from KEEL_ETCD_USER and KEEL_ETCD_PASSWORD
 * (never a flag: a command line is visible to every user of the machine).
 */
export function etcdCredentialsFromFlags(flags: EtcdTlsFlags, env: NodeJS.ProcessEnv): EtcdCredentials {
  const files = [flags.etcdCacert, flags.etcdCert, flags.etcdKey];
  if (files.some((f) => f !== undefined) && files.some((f) => f === undefined)) {
    throw new KeelError('KEEL_USAGE', '--etcd-cacert, --etcd-cert and --etcd-key go together', { hint: 'the CA of etcd\'s certificate, and this client\'s certificate and key' });
  }
  const user = env.KEEL_ETCD_USER || undefined;
  const password = env.KEEL_ETCD_PASSWORD || undefined;
  if ((user === undefined) !== (password === undefined)) {
    throw new KeelError('KEEL_USAGE', 'KEEL_ETCD_USER and KEEL_ETCD_PASSWORD go together', { hint: 'set both in the environment, or neither' });
  }
  const [ca, cert, key] = files;
  return {
    ...(ca === undefined || cert === undefined || key === undefined ? {} : { tls: { ca: resolve(ca), cert: resolve(cert), key: resolve(key) } }),
    ...(user === undefined ? {} : { user, password }),
  };
}

export interface Target {
  dcs: EtcdDcs;
  cluster: string;
  /** set when the cluster is a local one (`keel up --dir`) */
  layout: LocalLayout | null;
}

export const defaultDir = '.keel';

/** The cluster a command talks to: `--etcd URL --cluster NAME`, else the local one in `--dir` (default ./.keel). */
export function resolveTarget(options: TargetOptions): Target {
  if (options.etcd !== undefined || options.cluster !== undefined) {
    if (options.etcd === undefined || options.cluster === undefined) {
      throw new KeelError('KEEL_USAGE', '--etcd and --cluster go together', { hint: 'e.g. --etcd http://10.0.0.5:2379 --cluster main' });
    }
    const endpoints = options.etcd.split(',');
    for (const endpoint of endpoints) {
      if (!/^https?:\/\/[^/\s]+$/.test(endpoint)) {
        throw new KeelError('KEEL_USAGE', `--etcd ${endpoint} is not a URL`, { hint: 'e.g. --etcd http://127.0.0.1:2379' });
      }
    }
    const credentials = etcdCredentialsFromFlags(options, process.env);
    return { dcs: new EtcdDcs({ endpoints, cluster: options.cluster, requestTimeoutMs: 3000, logger: silentLogger(), credentials }), cluster: options.cluster, layout: null };
  }
  if (options.etcdCacert !== undefined || options.etcdCert !== undefined || options.etcdKey !== undefined) {
    throw new KeelError('KEEL_USAGE', '--etcd-cacert, --etcd-cert and --etcd-key go with --etcd and --cluster', { hint: 'a local cluster (--dir) uses its own operator certificate' });
  }
  const layout = new LocalLayout(options.dir ?? defaultDir);
  const file = layout.readCluster();
  // the CLI acts for the operator: its certificate's CN is the cluster's operator user
  const credentials = { tls: layout.clientTls('operator') };
  return {
    dcs: new EtcdDcs({ endpoints: [layout.etcdEndpoint(file)], cluster: file.cluster, requestTimeoutMs: 3000, logger: silentLogger(), credentials }),
    cluster: file.cluster,
    layout,
  };
}

/** The flags that name a cluster: --dir, or --etcd with --cluster and the etcd client pair. */
export function withTargetOptions(cmd: Command): Command {
  return cmd
    .option('--dir <dir>', targetHelp.dir)
    .option('--etcd <url>', targetHelp.etcd)
    .option('--cluster <name>', targetHelp.cluster)
    .option('--etcd-cacert <file>', targetHelp.etcdCacert)
    .option('--etcd-cert <file>', targetHelp.etcdCert)
    .option('--etcd-key <file>', targetHelp.etcdKey);
}

export const targetHelp = {
  dir: 'directory of a local cluster started by `keel up` (default ./.keel)',
  etcd: 'etcd endpoint(s), comma-separated, instead of --dir',
  cluster: 'cluster name, with --etcd',
  etcdCacert: 'with --etcd: the CA of etcd\'s certificate (https endpoints)',
  etcdCert: 'with --etcd: this client\'s certificate (its CN is the etcd user)',
  etcdKey: 'with --etcd: this client\'s key',
};
