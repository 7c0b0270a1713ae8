import { EtcdDcs } from '../dcs/etcd.js';
import { KeelError } from '../errors.js';
import { silentLogger } from '../util/log.js';
import { LocalLayout } from '../providers/local-layout.js';

export interface TargetOptions {
  dir?: string;
  etcd?: string;
  cluster?: string;
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
    return { dcs: new EtcdDcs({ endpoints, cluster: options.cluster, requestTimeoutMs: 3000, logger: silentLogger() }), cluster: options.cluster, layout: null };
  }
  const layout = new LocalLayout(options.dir ?? defaultDir);
  const file = layout.readCluster();
  return {
    dcs: new EtcdDcs({ endpoints: [layout.etcdEndpoint(file)], cluster: file.cluster, requestTimeoutMs: 3000, logger: silentLogger() }),
    cluster: file.cluster,
    layout,
  };
}

export const targetHelp = {
  dir: 'directory of a local cluster started by `keel up` (default ./.keel)',
  etcd: 'etcd endpoint(s), comma-separated, instead of --dir',
  cluster: 'cluster name, with --etcd',
};
