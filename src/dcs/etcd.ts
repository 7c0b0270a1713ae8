/**
 * The Dcs on etcd v3: the cluster store (store.ts) over the etcd key-value
 * port (kv-etcd.ts). Every method is one round trip (appendHistory and a
 * refused lease move: a few), bounded by requestTimeoutMs. A call that times
 * out may still have been applied by etcd: callers treat
 * KEEL_ETCD_UNREACHABLE as "outcome unknown" and read again before acting.
 */
import type { Logger } from '../util/log.js';
import type { EtcdCredentials } from './etcd-client.js';
import { EtcdKv } from './kv-etcd.js';
import { StoreDcs } from './store.js';

export interface EtcdDcsOptions {
  endpoints: string[];
  cluster: string;
  requestTimeoutMs: number;
  logger: Logger;
  /** etcd.tls, etcd.user and etcd.password of node.yml; none for a plain etcd */
  credentials?: EtcdCredentials;
}

export class EtcdDcs extends StoreDcs {
  private readonly etcd: EtcdKv;

  constructor(options: EtcdDcsOptions) {
    const { endpoints, requestTimeoutMs, logger, credentials } = options;
    const etcd = new EtcdKv({ endpoints, requestTimeoutMs, logger, credentials });
    super(options.cluster, etcd, logger);
    this.etcd = etcd;
  }

  /** The client certificate renewed in place (keel certs rotate): used from the next call on, watches included. */
  reloadCredentials(): Promise<void> {
    return this.etcd.reloadCredentials();
  }
}
