/** Small worlds for the controller's table tests: a spec, a view of etcd and a provider listing. */
import type { ClusterView, MemberMetrics, SpecValue } from '../../src/model/values.js';
import type { NodeInfo } from '../../src/providers/types.js';
import { defaultSpec } from '../../src/controller/spec.js';
import { cluster, leaderKey, member, NOW, primaryMember } from './fixtures.js';

export { NOW };

export interface NodeDesc {
  name: string;
  zone?: string;
  leader?: boolean;
  /** the provider lists it stopped */
  stopped?: boolean;
  /** no member key at all */
  noKey?: boolean;
  /** ms since the member key was last written */
  ageMs?: number;
  streaming?: boolean;
  lagBytes?: number;
  instanceClass?: string;
  metrics?: MemberMetrics;
}

export const zones = ['a', 'b', 'c'];

export function spec(over: Partial<SpecValue> = {}): SpecValue {
  return { ...defaultSpec({ nodes: 3, zones, instanceClass: 'm' }), replaceAfterSeconds: 30, ...over };
}

export function world(nodes: NodeDesc[], over: Partial<ClusterView> = {}): { view: ClusterView; inventory: NodeInfo[] } {
  const leader = nodes.find((n) => n.leader);
  const members = nodes
    .filter((n) => !n.noKey)
    .map((n) => {
      const common = {
        zone: n.zone ?? 'a',
        updatedAtMs: NOW - (n.ageMs ?? 500),
        tags: { nofailover: false, instanceClass: n.instanceClass ?? 'm' },
        ...(n.metrics ? { metrics: n.metrics } : {}),
      };
      if (n.leader) return primaryMember(n.name, { ...common, walLsn: 100_000_000 });
      const lsn = 100_000_000 - (n.lagBytes ?? 0);
      return member(n.name, { ...common, streaming: n.streaming ?? true, receivedLsn: lsn, replayedLsn: lsn });
    });
  const inventory: NodeInfo[] = nodes.map((n) => ({
    name: n.name,
    zone: n.zone ?? 'a',
    state: n.stopped ? 'stopped' : 'running',
    agentPid: 1,
    pgAddress: '127.0.0.1:1',
    apiAddress: '127.0.0.1:2',
  }));
  const view = cluster({ leader: leader ? leaderKey(leader.name, 'LEASE-' + leader.name) : null, members, creations: [], ...over });
  return { view, inventory };
}

/** Three healthy nodes, one per zone, node1 leading. */
export const three: NodeDesc[] = [
  { name: 'node1', zone: 'a', leader: true },
  { name: 'node2', zone: 'b' },
  { name: 'node3', zone: 'c' },
];

/** Memory in which every node was first seen long ago (so boot grace is over). */
export function seenLongAgo(names: string[], downSince: Record<string, number> = {}) {
  return { firstSeenMs: Object.fromEntries(names.map((n) => [n, NOW - 600_000])), downSinceMs: downSince, fenced: [] as string[] };
}
