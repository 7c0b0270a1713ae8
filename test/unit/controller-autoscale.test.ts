import { describe, expect, it } from 'vitest';
import { autoscale, moveRecordOffLeader, type AutoscaleDecision } from '../../src/controller/autoscale.js';
import { plan } from '../../src/controller/plan.js';
import type { AutoscalePolicy, ScalingState } from '../../src/model/values.js';
import { NOW, seenLongAgo, spec, world, type NodeDesc } from './controller-fixtures.js';

const policy = (over: Partial<AutoscalePolicy> = {}): AutoscalePolicy => ({
  enabled: true,
  metric: 'roQps',
  target: 100,
  minReplicas: 1,
  maxReplicas: 4,
  scaleOutCooldownSeconds: 300,
  scaleInCooldownSeconds: 300,
  scaleInEnabled: true,
  ...over,
});
const load = (roQueriesPerSecond: number) => ({ cpuPercent: 10, connections: 3, roQueriesPerSecond });

function decide(nodes: NodeDesc[], over: { policy?: Partial<AutoscalePolicy>; scaling?: Partial<ScalingState>; nodes?: number; maxNodes?: number } = {}): AutoscaleDecision {
  const s = spec({
    nodes: over.nodes ?? 3,
    autoscale: policy(over.policy),
    scaling: { added: [], lastScaleOutAtMs: null, lastScaleInAtMs: null, ...over.scaling },
  });
  const { view, inventory } = world(nodes);
  const { health } = plan(s, view, inventory, NOW, seenLongAgo(nodes.map((n) => n.name)));
  return autoscale(s, health, view.members, NOW, over.maxNodes ?? 20);
}

const cluster = (qps: number[], more: Partial<NodeDesc>[] = []): NodeDesc[] => [
  { name: 'node1', zone: 'a', leader: true },
  ...qps.map((q, i) => ({ name: `node${i + 2}`, zone: ['b', 'c', 'a'][i % 3], metrics: load(q), ...(more[i] ?? {}) })),
];

describe('autoscale', () => {
  const rows: { name: string; run: () => AutoscaleDecision; expect: Partial<AutoscaleDecision> & { kind: string }; reason?: RegExp }[] = [
    { name: 'off', run: () => decide(cluster([500, 500]), { policy: { enabled: false } }), expect: { kind: 'hold', code: 'disabled' } as never },
    {
      name: 'load above target adds replicas (target tracking)',
      run: () => decide(cluster([250, 150])),
      expect: { kind: 'out', add: 2, wantedReplicas: 4 } as never,
      reason: /read queries\/s per replica 200\.0 against target 100 on 2 replicas asks for 4: adding 2/,
    },
    { name: 'bounded by maxReplicas', run: () => decide(cluster([900, 900]), { policy: { maxReplicas: 3 } }), expect: { kind: 'out', add: 1, wantedReplicas: 3 } as never },
    { name: 'bounded by the provider', run: () => decide(cluster([900, 900]), { maxNodes: 3 }), expect: { kind: 'hold', code: 'within-target' } as never },
    { name: 'within target holds', run: () => decide(cluster([80, 90])), expect: { kind: 'hold', code: 'within-target' } as never },
    {
      name: 'scale-out cooldown',
      run: () => decide(cluster([300, 300]), { scaling: { lastScaleOutAtMs: NOW - 100_000 } }),
      expect: { kind: 'hold', code: 'cooldown-out' } as never,
      reason: /scale-out cooldown, 200 s left/,
    },
    { name: 'after the scale-out cooldown', run: () => decide(cluster([300, 300]), { scaling: { lastScaleOutAtMs: NOW - 301_000 } }), expect: { kind: 'out' } },
    {
      name: 'scale-in removes only what it added, the newest in the most crowded zone',
      run: () => decide(cluster([5, 5, 5, 5]), { nodes: 3, scaling: { added: ['node4', 'node5'] } }),
      expect: { kind: 'in', remove: 'node5' } as never,
    },
    {
      name: 'scale-in with nothing it added holds',
      run: () => decide(cluster([5, 5, 5]), { nodes: 4 }),
      expect: { kind: 'hold', code: 'nothing-to-remove' } as never,
      reason: /only replicas the autoscaler added are removed by it/,
    },
    { name: 'scale-in disabled', run: () => decide(cluster([5, 5, 5]), { nodes: 3, policy: { scaleInEnabled: false }, scaling: { added: ['node4'] } }), expect: { kind: 'hold', code: 'scale-in-disabled' } as never },
    {
      name: 'scale-in cooldown counts from any scaling',
      run: () => decide(cluster([5, 5, 5]), { nodes: 3, scaling: { added: ['node4'], lastScaleOutAtMs: NOW - 10_000, lastScaleInAtMs: NOW - 900_000 } }),
      expect: { kind: 'hold', code: 'cooldown-in' } as never,
    },
    { name: 'never below minReplicas', run: () => decide(cluster([0, 0]), { nodes: 2, policy: { minReplicas: 2 }, scaling: { added: ['node3'] } }), expect: { kind: 'hold', code: 'within-target' } as never },
    { name: 'up to minReplicas without metrics', run: () => decide(cluster([]), { nodes: 1, policy: { minReplicas: 2 } }), expect: { kind: 'out', add: 2 } as never },
    {
      name: 'no scaling while a replica is not streaming',
      run: () => decide(cluster([500, 500], [{}, { streaming: false }])),
      expect: { kind: 'hold', code: 'not-settled' } as never,
      reason: /no scaling while node3 is not streaming/,
    },
    { name: 'no scaling while a declared node is missing', run: () => decide(cluster([500]), {}), expect: { kind: 'hold', code: 'not-settled' } as never, reason: /2 of 3 nodes exist/ },
    { name: 'no metrics yet', run: () => decide([{ name: 'node1', leader: true }, { name: 'node2' }], { nodes: 2 }), expect: { kind: 'hold', code: 'no-metrics' } as never },
    {
      name: 'cpu is averaged over replicas only',
      run: () => decide([{ name: 'node1', leader: true, metrics: { cpuPercent: 400, connections: 1, roQueriesPerSecond: 0 } }, { name: 'node2', metrics: { cpuPercent: 30, connections: 1, roQueriesPerSecond: 0 } }], { nodes: 2, policy: { metric: 'cpu', target: 70 } }),
      expect: { kind: 'hold', code: 'within-target', metric: 30 } as never,
    },
  ];
  for (const row of rows) {
    it(row.name, () => {
      const decision = row.run();
      expect(decision).toMatchObject(row.expect);
      if (row.reason) expect(decision.reason).toMatch(row.reason);
    });
  }

  it('never removes the leader, even one it added', () => {
    const nodes: NodeDesc[] = [
      { name: 'node1', zone: 'a', metrics: load(1) },
      { name: 'node2', zone: 'b', metrics: load(1) },
      { name: 'node4', zone: 'a', leader: true },
    ];
    const d = decide(nodes, { nodes: 2, scaling: { added: ['node4'] } });
    expect(d).toMatchObject({ kind: 'hold', code: 'nothing-to-remove' });
  });

  it('moves its record off a replica that became the leader', () => {
    const nodes: NodeDesc[] = [{ name: 'node1', zone: 'a' }, { name: 'node2', zone: 'b' }, { name: 'node4', zone: 'a', leader: true }];
    const s = spec({ nodes: 2, scaling: { added: ['node4'], lastScaleOutAtMs: 5, lastScaleInAtMs: null } });
    const { view, inventory } = world(nodes);
    const { health } = plan(s, view, inventory, NOW, seenLongAgo(['node1', 'node2', 'node4']));
    expect(moveRecordOffLeader(s, health)?.scaling).toEqual({ added: ['node2'], lastScaleOutAtMs: 5, lastScaleInAtMs: null });
    expect(moveRecordOffLeader(spec(), health)).toBeNull();
  });
});
