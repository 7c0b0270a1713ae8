import { describe, expect, it } from 'vitest';
import { freeNames, leastPopulatedZone, plan, withOutcome, zonesBalanced, type PlanAction } from '../../src/controller/plan.js';
import { NOW, seenLongAgo, spec, three, world, type NodeDesc } from './controller-fixtures.js';
import { member } from './fixtures.js';

const names = (nodes: NodeDesc[]) => nodes.map((n) => n.name);
const short = (actions: PlanAction[]) =>
  actions.map((a) => (a.kind === 'create' ? `create ${a.node}@${a.zone}${a.replaces ? ` for ${a.replaces}` : ''}` : a.kind === 'switchover' ? `switchover ${a.from}->${a.to}` : `${a.kind} ${a.node}`));

interface Row {
  name: string;
  nodes: NodeDesc[];
  spec?: Parameters<typeof spec>[0];
  downSince?: Record<string, number>;
  /** draining keys, each written ageMs before NOW */
  draining?: { name: string; ageMs: number }[];
  /** `creations/<name>` records, each written ageMs before NOW */
  creations?: { name: string; zone: string; replaces?: string; ageMs: number }[];
  /** nodes whose fence the provider confirmed */
  fenced?: string[];
  /** nodes that publish a member key (cloning) although the provider does not list them yet */
  unlisted?: string[];
  expect: string[];
  reason?: RegExp;
}

const rows: Row[] = [
  { name: 'matching shape: nothing to do', nodes: three, expect: [], reason: /3 of 3 nodes \(a 1, b 1, c 1\), 3 streaming: nothing to do/ },
  {
    name: 'grows to the count, spreading over zones',
    nodes: three,
    spec: { nodes: 5 },
    expect: ['create node4@a', 'create node5@b'],
    reason: /3 of 5 declared nodes: creating node4 in a/,
  },
  {
    name: 'a new node goes to the emptiest zone',
    nodes: [{ name: 'node1', zone: 'a', leader: true }, { name: 'node2', zone: 'a' }, { name: 'node3', zone: 'b' }],
    spec: { nodes: 4 },
    expect: ['create node4@c'],
  },
  {
    name: 'shrinks: most crowded zone, then newest first, never the leader',
    nodes: [...three, { name: 'node4', zone: 'a' }, { name: 'node5', zone: 'b' }],
    spec: { nodes: 2 },
    // live replicas are drained first (no new reads), removed once drained
    expect: ['drain node5', 'drain node4', 'drain node3'],
    reason: /draining replica node5 before removing it/,
  },
  {
    name: 'shrinks the most lagging replica first',
    nodes: [{ name: 'node1', zone: 'a', leader: true }, { name: 'node2', zone: 'b', lagBytes: 64 * 1024 * 1024 }, { name: 'node3', zone: 'c' }],
    spec: { nodes: 2 },
    expect: ['drain node2'],
  },
  {
    name: 'a draining replica keeps its open reads until drainMs has passed',
    nodes: [...three, { name: 'node4', zone: 'a' }],
    draining: [{ name: 'node4', ageMs: 10_000 }],
    expect: [],
    reason: /draining node4 \(10 of 30 s\) before removing it/,
  },
  {
    name: 'a drained replica is removed',
    nodes: [...three, { name: 'node4', zone: 'a' }],
    draining: [{ name: 'node4', ageMs: 31_000 }],
    expect: ['destroy node4'],
    reason: /removing replica node4 after draining it/,
  },
  {
    name: 'the replica already draining is the one removed, not the newest of its zone',
    nodes: [...three, { name: 'node4', zone: 'b' }],
    draining: [{ name: 'node2', ageMs: 5_000 }],
    expect: [],
    reason: /draining node2 \(5 of 30 s\)/,
  },
  {
    name: 'a drain no longer wanted ends (the spec grew back; the node went)',
    nodes: three,
    draining: [{ name: 'node3', ageMs: 5_000 }, { name: 'node9', ageMs: 5_000 }],
    expect: ['undrain node3', 'undrain node9'],
    reason: /ending the drain of node3: no longer to be removed; ending the drain of node9: no such node/,
  },
  {
    name: 'a surplus replica that is down is removed without a drain',
    nodes: [...three, { name: 'node4', zone: 'a', stopped: true }],
    downSince: { node4: NOW - 1000 },
    expect: ['destroy node4'],
  },
  {
    name: 'never below the declared streaming replicas: a cloning node is left to finish',
    nodes: [...three, { name: 'node4', zone: 'a', streaming: false }],
    spec: { nodes: 3 },
    expect: [],
    reason: /waiting until a replica can go/,
  },
  {
    name: 'a node down less than replaceAfterSeconds waits',
    nodes: [three[0]!, three[1]!, { name: 'node3', zone: 'c', stopped: true }],
    downSince: { node3: NOW - 10_000 },
    expect: [],
    reason: /node3 down 10 s \(the provider says it is stopped\); replaced after 30 s/,
  },
  {
    name: 'a node down longer is fenced, destroyed and replaced in its zone',
    nodes: [three[0]!, three[1]!, { name: 'node3', zone: 'c', stopped: true }],
    downSince: { node3: NOW - 31_000 },
    expect: ['fence node3', 'destroy node3', 'create node4@c for node3'],
  },
  {
    name: 'a stale member key counts as down',
    nodes: [three[0]!, three[1]!, { name: 'node3', zone: 'c', ageMs: 60_000 }],
    downSince: { node3: NOW - 40_000 },
    expect: ['fence node3', 'destroy node3', 'create node4@c for node3'],
  },
  {
    name: 'a dead leader is fenced at once and its lease ended; it is replaced later like any node',
    nodes: [{ name: 'node1', zone: 'a', leader: true, stopped: true }, three[1]!, three[2]!],
    expect: ['fenceLeader node1'],
    reason: /leader node1 the provider says it is stopped: fencing it/,
  },
  {
    name: 'a leader that stopped publishing is fenced too',
    nodes: [{ name: 'node1', zone: 'a', leader: true, ageMs: 5000 }, three[1]!, three[2]!],
    expect: ['fenceLeader node1'],
  },
  {
    name: 'a node that still holds the leader key is never destroyed',
    nodes: [{ name: 'node1', zone: 'a', leader: true, stopped: true }, three[1]!, three[2]!],
    downSince: { node1: NOW - 120_000 },
    expect: ['fenceLeader node1'],
  },
  {
    name: 'a one-node cluster whose only node died: never destroyed, its data is the only copy',
    nodes: [{ name: 'node1', zone: 'a', stopped: true }],
    spec: { nodes: 1 },
    downSince: { node1: NOW - 120_000 },
    expect: [],
    reason: /node1 down 120 s .*not replaced while no other node leads: its data may be the only copy/,
  },
  {
    name: 'a dead leader whose key is gone but no replica took over yet: not destroyed',
    nodes: [{ name: 'node1', zone: 'a', stopped: true }, { name: 'node2', zone: 'b' }, { name: 'node3', zone: 'c' }],
    downSince: { node1: NOW - 120_000 },
    fenced: ['node1'],
    expect: [],
    reason: /not replaced while no other node leads/,
  },
  {
    name: 'vertical scaling: a replica of the old class gets a successor first',
    nodes: three,
    spec: { instanceClass: 'l' },
    expect: ['create node4@c'],
    reason: /vertical scaling: node3 is m, not l: adding node4 in c first/,
  },
  {
    name: 'vertical scaling: once the successor streams, the old replica goes',
    nodes: [...three, { name: 'node4', zone: 'b', instanceClass: 'l' }],
    spec: { instanceClass: 'l' },
    expect: ['drain node2'],
  },
  {
    name: 'vertical scaling: replicas done, the leader gets a successor, then hands over',
    nodes: [three[0]!, { name: 'node2', zone: 'b', instanceClass: 'l' }, { name: 'node3', zone: 'c', instanceClass: 'l' }],
    spec: { instanceClass: 'l' },
    expect: ['create node4@a'],
  },
  {
    name: 'vertical scaling: switchover to the successor in the leader zone',
    nodes: [three[0]!, { name: 'node2', zone: 'b', instanceClass: 'l' }, { name: 'node3', zone: 'c', instanceClass: 'l' }, { name: 'node4', zone: 'a', instanceClass: 'l' }],
    spec: { instanceClass: 'l' },
    expect: ['switchover node1->node4'],
  },
  {
    name: 'zones out of balance: one more node in the emptiest zone',
    nodes: [{ name: 'node1', zone: 'a', leader: true }, { name: 'node2', zone: 'a' }, { name: 'node3', zone: 'a' }],
    expect: ['create node4@b'],
    reason: /zones out of balance/,
  },
  {
    name: 'autoscaler replicas are created under their reserved names and never removed as surplus',
    nodes: [...three, { name: 'node5', zone: 'a' }],
    spec: { nodes: 2, scaling: { added: ['node4', 'node5'], lastScaleOutAtMs: null, lastScaleInAtMs: null } },
    expect: ['create node4@b'],
  },
  {
    name: 'the surplus of declared nodes goes once the reserved replica streams',
    nodes: [...three, { name: 'node4', zone: 'b' }, { name: 'node5', zone: 'a' }],
    spec: { nodes: 2, scaling: { added: ['node4', 'node5'], lastScaleOutAtMs: null, lastScaleInAtMs: null } },
    // zones a and b hold two each; node1 in a leads, so node2 in b goes
    expect: ['drain node2'],
  },
  {
    name: 'a pending creation counts: no second create while the provider does not list it yet',
    nodes: [three[0]!, three[1]!],
    creations: [{ name: 'node3', zone: 'c', ageMs: 5_000 }],
    expect: [],
    reason: /2 of 3 nodes .*creating node3 in c \(5 s\)/,
  },
  {
    name: 'a replaced node with its replacement pending: destroyed, never replaced again, even when the new node publishes early',
    nodes: [three[0]!, three[1]!, { name: 'node3', zone: 'c', stopped: true }],
    unlisted: ['node4'],
    downSince: { node3: NOW - 31_000 },
    fenced: ['node3'],
    creations: [{ name: 'node4', zone: 'c', replaces: 'node3', ageMs: 1_000 }],
    expect: ['destroy node3'],
    reason: /destroying it; node4 replaces it/,
  },
  {
    name: 'a replaced node already destroyed, its replacement pending: nothing to do',
    nodes: [three[0]!, three[1]!],
    creations: [{ name: 'node4', zone: 'c', replaces: 'node3', ageMs: 3_000 }],
    expect: [],
    reason: /^2 of 3 nodes \(a 1, b 1, c 0\), 2 streaming; creating node4 in c to replace node3 \(3 s\)$/,
  },
  {
    name: 'a node down for less than replaceAfterSeconds with its replacement pending waits, and does not count',
    nodes: [three[0]!, three[1]!, { name: 'node3', zone: 'c', stopped: true }],
    downSince: { node3: NOW - 5_000 },
    creations: [{ name: 'node4', zone: 'c', replaces: 'node3', ageMs: 3_000 }],
    expect: [],
    reason: /node3 down 5 s \(the provider says it is stopped\); node4 replaces it/,
  },
  {
    name: 'pending creations spread the zones: the next node goes elsewhere',
    nodes: three,
    spec: { nodes: 5 },
    creations: [{ name: 'node4', zone: 'a', ageMs: 1_000 }],
    expect: ['create node5@b'],
  },
  {
    name: 'a creation done (the provider lists the node): its record no longer counts, the plan is the usual one',
    nodes: [three[0]!, three[1]!, { name: 'node4', zone: 'c', streaming: false }],
    creations: [{ name: 'node4', zone: 'c', replaces: 'node3', ageMs: 9_000 }],
    expect: [],
    reason: /3 of 3 nodes \(a 1, b 1, c 1\), 2 streaming: nothing to do/,
  },
  {
    name: 'a creation done and the spec grew: one more node, under a fresh name',
    nodes: [three[0]!, three[1]!, { name: 'node4', zone: 'c' }],
    spec: { nodes: 4 },
    creations: [{ name: 'node4', zone: 'c', ageMs: 9_000 }],
    expect: ['create node3@a'],
  },
  {
    name: 'a name being created is not reserved twice: a replacement takes the next free one',
    nodes: [three[0]!, three[1]!, { name: 'node3', zone: 'c', stopped: true }],
    spec: { nodes: 4 },
    downSince: { node3: NOW - 31_000 },
    creations: [{ name: 'node4', zone: 'a', ageMs: 1_000 }],
    expect: ['fence node3', 'destroy node3', 'create node5@c for node3'],
  },
  {
    name: "an autoscaler's replica destroyed while its replacement is pending: its reserved name is not created again, and the replacement is the autoscaler's",
    nodes: three,
    spec: { scaling: { added: ['node4'], lastScaleOutAtMs: null, lastScaleInAtMs: null } },
    creations: [{ name: 'node5', zone: 'a', replaces: 'node4', ageMs: 2_000 }],
    expect: [],
    reason: /^3 of 4 nodes \(a 1, b 1, c 1\), 3 streaming; creating node5 in a to replace node4 \(2 s\)$/,
  },
  {
    name: "a replacement of an autoscaler's replica just listed, its record not gone yet: the reserved name is not created again",
    nodes: [...three, { name: 'node5', zone: 'a', streaming: false }],
    spec: { scaling: { added: ['node4'], lastScaleOutAtMs: null, lastScaleInAtMs: null } },
    creations: [{ name: 'node5', zone: 'a', replaces: 'node4', ageMs: 9_000 }],
    expect: [],
  },
  {
    name: "an autoscaler's replica down for good: its replacement is the autoscaler's, no declared replica is surplus",
    nodes: [...three, { name: 'node4', zone: 'a', stopped: true }],
    spec: { scaling: { added: ['node4'], lastScaleOutAtMs: null, lastScaleInAtMs: null } },
    downSince: { node4: NOW - 31_000 },
    fenced: ['node4'],
    expect: ['destroy node4', 'create node5@a for node4'],
    reason: /^node4 down 31 s \(the provider says it is stopped\): destroying it; replacing node4/,
  },
  {
    name: "the autoscaler's reserved replica being created is not created again",
    nodes: three,
    spec: { scaling: { added: ['node4'], lastScaleOutAtMs: null, lastScaleInAtMs: null } },
    creations: [{ name: 'node4', zone: 'a', ageMs: 1_000 }],
    expect: [],
    reason: /3 of 4 nodes .*creating node4 in a/,
  },
];

describe('plan', () => {
  for (const row of rows) {
    it(row.name, () => {
      const draining = (row.draining ?? []).map((d) => ({ v: 1 as const, name: d.name, sinceMs: NOW - d.ageMs, reason: 'test' }));
      const creations = (row.creations ?? []).map((c) => ({ v: 1 as const, name: c.name, zone: c.zone, instanceClass: 'm', replaces: c.replaces ?? null, sinceMs: NOW - c.ageMs, by: 'ctl' }));
      const { view, inventory } = world(row.nodes, { draining, creations });
      for (const name of row.unlisted ?? []) view.members.push(member(name, { streaming: false, zone: 'c' }));
      const memory = { ...seenLongAgo(names(row.nodes), row.downSince), fenced: row.fenced ?? [] };
      const out = plan(spec(row.spec), view, inventory, NOW, memory);
      expect(short(out.actions)).toEqual(row.expect);
      if (row.reason) expect(out.reason).toMatch(row.reason);
      for (const action of out.actions) expect(action.reason.length).toBeGreaterThan(10);
    });
  }

  it('a confirmed fence reported by acting is remembered: the next plan destroys without fencing again', () => {
    const { view, inventory } = world([three[0]!, three[1]!, { name: 'node3', zone: 'c', stopped: true }]);
    const before = seenLongAgo(names(three), { node3: NOW - 31_000 });
    const after = withOutcome(before, { kind: 'fenced', node: 'node3' });
    expect(before.fenced).toEqual([]);
    expect(short(plan(spec(), view, inventory, NOW, before).actions)).toEqual(['fence node3', 'destroy node3', 'create node4@c for node3']);
    expect(short(plan(spec(), view, inventory, NOW, after).actions)).toEqual(['destroy node3', 'create node4@c for node3']);
    expect(withOutcome(after, { kind: 'fenced', node: 'node3' })).toBe(after);
  });

  it('a creation reported by acting starts the new node\'s boot grace at its creation', () => {
    const nodes = [...three, { name: 'node4', zone: 'a', noKey: true }];
    const { view, inventory } = world(nodes);
    const memory = withOutcome(seenLongAgo(names(three)), { kind: 'created', node: 'node4', atMs: NOW - 5_000 });
    const out = plan(spec({ nodes: 4 }), view, inventory, NOW, memory);
    expect(out.memory.firstSeenMs.node4).toBe(NOW - 5_000);
    expect(out.health.find((n) => n.name === 'node4')).toMatchObject({ down: false, why: 'booting: no member key yet' });
  });

  it('records when a node went down, and forgets nodes that are gone', () => {
    const { view, inventory } = world([three[0]!, { name: 'node2', zone: 'b', stopped: true }]);
    const out = plan(spec({ nodes: 2 }), view, inventory, NOW, { ...seenLongAgo(['node1', 'node2', 'node9']), fenced: ['node9'] });
    expect(out.memory.downSinceMs).toEqual({ node2: NOW });
    expect(out.memory.fenced).toEqual([]);
    expect(Object.keys(out.memory.firstSeenMs).sort()).toEqual(['node1', 'node2']);
  });

  it('gives a new node time to publish before a missing key counts', () => {
    const nodes = [...three, { name: 'node4', zone: 'a', noKey: true }];
    const { view, inventory } = world(nodes);
    const memory = seenLongAgo(names(three));
    const first = plan(spec({ nodes: 4 }), view, inventory, NOW, memory);
    expect(first.health.find((n) => n.name === 'node4')).toMatchObject({ down: false, why: 'booting: no member key yet' });
    const later = plan(spec({ nodes: 4 }), view, inventory, NOW + 65_000, first.memory);
    expect(later.health.find((n) => n.name === 'node4')!.down).toBe(true);
  });

  it('waits for the bootstrap', () => {
    const { view, inventory } = world(three, { initialize: null });
    expect(plan(spec({ nodes: 5 }), view, inventory, NOW, seenLongAgo([])).actions).toEqual([]);
  });

  it('creates the first node of a cluster that has none, in the first zone, and no more until it has bootstrapped', () => {
    const empty = world([], { initialize: null, leader: null });
    const first = plan(spec({ nodes: 3 }), empty.view, empty.inventory, NOW, seenLongAgo([]));
    expect(short(first.actions)).toEqual(['create node1@a']);
    expect(first.reason).toContain('to bootstrap the cluster');
    // on its way, or being bootstrapped: nothing more
    const onItsWay = world([], { initialize: null, leader: null, creations: [{ v: 1, name: 'node1', zone: 'a', instanceClass: 'm', replaces: null, sinceMs: NOW - 1000, by: 'c' }] });
    expect(plan(spec({ nodes: 3 }), onItsWay.view, onItsWay.inventory, NOW, seenLongAgo([])).actions).toEqual([]);
    const booting = world([{ name: 'node1', zone: 'a', noKey: true }], { initialize: null, leader: null });
    expect(plan(spec({ nodes: 3 }), booting.view, booting.inventory, NOW, seenLongAgo([])).actions).toEqual([]);
  });

  it('stops at the provider limit', () => {
    const { view, inventory } = world(three);
    const out = plan(spec({ nodes: 6 }), view, inventory, NOW, seenLongAgo(names(three)), { maxNodes: 4, bootGraceMs: 1 });
    expect(short(out.actions)).toEqual(['create node4@a']);
  });
});

describe('zone helpers', () => {
  it('balanced means no zone holds two more than another, and none outside the spec', () => {
    expect(zonesBalanced(['a', 'b', 'c'], [{ zone: 'a' }, { zone: 'b' }])).toBe(true);
    expect(zonesBalanced(['a', 'b', 'c'], [{ zone: 'a' }, { zone: 'a' }, { zone: 'b' }])).toBe(false);
    expect(zonesBalanced(['a', 'b', 'c'], [{ zone: 'a' }, { zone: 'a' }])).toBe(false);
    expect(zonesBalanced(['a'], [{ zone: 'x' }])).toBe(false);
  });
  it('least populated zone prefers the given zone on ties', () => {
    expect(leastPopulatedZone(['a', 'b'], [], 'b')).toBe('b');
    expect(leastPopulatedZone(['a', 'b'], [{ zone: 'a' }], 'a')).toBe('b');
  });
  it('free names skip every used one', () => {
    expect(freeNames(2, new Set(['node1', 'node3']), 20)).toEqual(['node2', 'node4']);
    expect(freeNames(2, new Set(['node1']), 2)).toEqual(['node2']);
  });

  it("a replacement does not take the name of a standby still in the synchronous set, even once its member key is gone", () => {
    // node3 destroyed (no member key, not listed); the leader has not yet dropped it from the sync key
    const nodes = three.slice(0, 2);
    const sync = { value: { v: 1 as const, leader: 'node1', members: ['node2', 'node3'], quorum: 1 }, modRevision: '1' };
    const { view, inventory } = world(nodes, { sync });
    expect(short(plan(spec(), view, inventory, NOW, seenLongAgo(names(nodes))).actions)).toEqual(['create node4@c']);
    const { view: settled } = world(nodes, { sync: { ...sync, value: { ...sync.value, members: ['node2'] } } });
    expect(short(plan(spec(), settled, inventory, NOW, seenLongAgo(names(nodes))).actions)).toEqual(['create node3@c']);
  });
});
