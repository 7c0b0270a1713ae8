import type { Snapshot } from '../agent/snapshot.js';
import type { NodeConfig } from '../config/schema.js';
import type { Dcs } from '../dcs/types.js';
import type { MemberArchive } from '../model/values.js';
import type { Clock } from '../util/clock.js';
import type { Logger } from '../util/log.js';

/**
 * What the REST API reads from (and asks of) the agent. The Agent class
 * satisfies it as is; unit tests pass a plain object.
 */
export interface AgentHandle {
  readonly state: string;
  readonly lastReason: string;
  /** the last loop's observation; null until the first loop finished observing */
  readonly lastSnapshot: Snapshot | null;
  /** read live, not from the snapshot: the lease may be lost between two loops */
  readonly lease: {
    readonly id: string | null;
    readonly lastRenewalMs: number | null;
    readonly renewals: number;
    readonly renewalFailures: number;
    /** from when the holder may no longer accept writes: last renewal sent + the lease's granted ttl - margin */
    deadlineMs(): number;
  };
  readonly decisionCounts: ReadonlyMap<string, number>;
  readonly promotions: number;
  /** WAL archiving while this node is primary; absent when the node has no backup repository */
  readonly archive?: { current(): MemberArchive | undefined };
  runManual(kind: 'restart' | 'reinitialize'): Promise<void>;
}

export interface ApiOptions {
  /** only the parts of the node config the API needs: never the passwords */
  node: Pick<NodeConfig, 'name' | 'cluster' | 'tags'>;
  /** this node's bearer token, for every request that may change something; without one those are refused */
  token: string | undefined;
  /** reads need the token too (health checks included); default false */
  readAuth?: boolean;
  /** how long one etcd read serves GET /cluster, /history and /config; default 250 ms, 0 reads every time */
  readCacheMs?: number;
  /** the node's certificate (node.yml tls.cert), whose expiry /metrics shows */
  certificateFile?: string;
  /** for /cluster, /history, /config and the leader-change requests */
  dcs: Dcs;
  clock: Clock;
  logger: Logger;
}
