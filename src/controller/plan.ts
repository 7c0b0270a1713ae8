/**
 * What the controller should do next to make what exists match the spec.
 * Pure (DESIGN.md: plan.ts imports no I/O): one read of etcd, one listing of
 * the provider and the clock go in; actions, each with its reason, come out,
 * with the controller's memory of what it observed before.
 *
 * A node being created (`creations/<name>` in the view) is not listed by the
 * provider until its creation returns: until then it counts as a node being
 * born, for the count and the zones, and the node it replaces is not replaced
 * a second time.
 */
import { lagBytes } from '../model/lsn.js';
import type { ClusterView, MemberValue, SpecValue } from '../model/values.js';
import type { NodeInfo } from '../providers/types.js';

export type PlanAction =
  | { kind: 'fenceLeader'; node: string; leaseId: string; reason: string }
  | { kind: 'fence'; node: string; reason: string }
  | { kind: 'destroy'; node: string; reason: string }
  /** routers stop sending the replica new reads; it is destroyed once drainMs has passed */
  | { kind: 'drain'; node: string; reason: string }
  | { kind: 'undrain'; node: string; reason: string }
  | { kind: 'create'; node: string; zone: string; instanceClass: string; replaces: string | null; reason: string }
  | { kind: 'switchover'; from: string; to: string; reason: string };

/** What the controller remembers between two plans; plan() returns the next one. */
export interface PlanMemory {
  /** when the controller first saw each node: a node gets time to boot before a missing member key counts */
  firstSeenMs: Record<string, number>;
  /** since when each node has been down */
  downSinceMs: Record<string, number>;
  /** nodes whose fence the provider confirmed */
  fenced: string[];
}

export interface PlanOptions {
  /** the most nodes the provider holds (local: 20, by its ports) */
  maxNodes: number;
  /** a node without a member key this long after it was first seen counts as down */
  bootGraceMs: number;
  /** how long a live replica serves its open reads, with no new ones, before it is removed */
  drainMs: number;
}

export interface NodeHealth {
  name: string;
  zone: string;
  leader: boolean;
  down: boolean;
  /** the leader runs a primary, or a replica streams */
  streaming: boolean;
  /** from the member's `instanceClass` tag; null when unknown */
  instanceClass: string | null;
  lagBytes: number | null;
  firstSeenMs: number;
  why: string;
}

export interface Plan {
  actions: PlanAction[];
  /** one sentence on the whole cluster, even when there is nothing to do */
  reason: string;
  health: NodeHealth[];
  memory: PlanMemory;
}

export const emptyMemory = (): PlanMemory => ({ firstSeenMs: {}, downSinceMs: {}, fenced: [] });

/**
 * What carrying out an action established that the next plan must know: the
 * provider confirmed a fence, or a node was created. The controller reports
 * it; only withOutcome() turns it into memory.
 */
export type PlanOutcome = { kind: 'fenced'; node: string } | { kind: 'created'; node: string; atMs: number };

/** The memory after an outcome, as a new value. */
export function withOutcome(memory: PlanMemory, outcome: PlanOutcome): PlanMemory {
  switch (outcome.kind) {
    case 'fenced':
      return memory.fenced.includes(outcome.node) ? memory : { ...memory, fenced: [...memory.fenced, outcome.node] };
    case 'created':
      // the boot grace counts from the creation, not from the first listing
      return { ...memory, firstSeenMs: { ...memory.firstSeenMs, [outcome.node]: outcome.atMs } };
  }
}
export const defaultPlanOptions: PlanOptions = { maxNodes: 20, bootGraceMs: 60_000, drainMs: 30_000 };

/** A lag past this counts as lagging when choosing which replica to remove; below it, lag is noise. */
const laggingBytes = 16 * 1024 * 1024;

/** A member key older than this is stale: the agent publishes every loop_wait. */
export function staleAfterMs(view: ClusterView): number {
  return Math.max(3000, 3 * (view.config?.value.loop_wait ?? 1) * 1000);
}

export function nodeIndex(name: string): number {
  const match = /(\d+)$/.exec(name);
  return match ? Number(match[1]) : 0;
}

/** Each node as the plan sees it; also records first sightings and down times into `memory`. */
export function assess(view: ClusterView, inventory: NodeInfo[], nowMs: number, memory: PlanMemory, options: PlanOptions): NodeHealth[] {
  const leaderName = view.leader?.value.name ?? null;
  const leader = view.members.find((m) => m.name === leaderName);
  const referenceLsn = leader?.walLsn ?? view.status?.value.walLsn ?? null;
  const staleMs = staleAfterMs(view);
  return inventory.map((node) => {
    const firstSeenMs = (memory.firstSeenMs[node.name] ??= nowMs);
    const member: MemberValue | undefined = view.members.find((m) => m.name === node.name);
    const ageMs = member === undefined ? null : nowMs - member.updatedAtMs;
    const fresh = ageMs !== null && ageMs <= staleMs;
    const booting = nowMs - firstSeenMs < options.bootGraceMs;
    let why: string;
    if (node.state === 'stopped') why = 'the provider says it is stopped';
    else if (member === undefined) why = booting ? 'booting: no member key yet' : 'has no member key';
    else if (!fresh) why = `has not published for ${Math.round(ageMs! / 1000)} s`;
    else why = member.reason;
    const down = node.state === 'stopped' || (!fresh && !booting);
    if (down) memory.downSinceMs[node.name] ??= nowMs;
    else delete memory.downSinceMs[node.name];
    const isLeader = node.name === leaderName;
    const streaming =
      fresh && member!.running && (isLeader ? member!.role === 'primary' : member!.role === 'replica' && member!.streaming);
    const tag = member?.tags.instanceClass;
    return {
      name: node.name,
      zone: node.zone,
      leader: isLeader,
      down,
      streaming: streaming && !down,
      instanceClass: typeof tag === 'string' ? tag : null,
      lagBytes: member && !isLeader ? lagBytes(referenceLsn, member) : null,
      firstSeenMs,
      why,
    };
  });
}

function zoneCounts(zones: string[], nodes: { zone: string }[]): Map<string, number> {
  const counts = new Map(zones.map((z) => [z, 0]));
  for (const n of nodes) if (counts.has(n.zone)) counts.set(n.zone, counts.get(n.zone)! + 1);
  return counts;
}

/** The spec zone with the fewest nodes; ties go to `prefer`, then to the spec's order. */
export function leastPopulatedZone(zones: string[], nodes: { zone: string }[], prefer?: string): string {
  const counts = zoneCounts(zones, nodes);
  let best = zones[0]!;
  for (const zone of zones) {
    const better = counts.get(zone)! < counts.get(best)! || (counts.get(zone) === counts.get(best) && zone === prefer);
    if (better) best = zone;
  }
  return best;
}

/** No zone holds two more nodes than another, and every node is in a zone of the spec. */
export function zonesBalanced(zones: string[], nodes: { zone: string }[]): boolean {
  if (nodes.some((n) => !zones.includes(n.zone))) return false;
  const counts = [...zoneCounts(zones, nodes).values()];
  return Math.max(...counts) - Math.min(...counts) <= 1;
}

/** The first free `node<N>` names: not a node, not a member key, not being created, not reserved by the autoscaler. */
/**
 * Names a new node may not take: members, creations, and the synchronous set's
 * standbys (a new node under a dead standby's name would stand in the key for
 * commits only the dead one acknowledged).
 */
export function namesInUse(view: ClusterView): string[] {
  return [...view.members.map((m) => m.name), ...view.creations.map((c) => c.name), ...(view.sync?.value.members ?? [])];
}

export function freeNames(count: number, used: Set<string>, maxNodes: number): string[] {
  const names: string[] = [];
  for (let i = 1; i <= maxNodes && names.length < count; i++) {
    if (!used.has(`node${i}`)) names.push(`node${i}`);
  }
  return names;
}

/**
 * Order of removal among replicas: a wrong instance class first, then a zone
 * outside the spec or the most crowded zone (so the spread holds), then not
 * streaming or lagging, then the most recently added.
 */
function removalOrder(spec: SpecValue, live: NodeHealth[], draining: ReadonlySet<string> = new Set()): (a: NodeHealth, b: NodeHealth) => number {
  const counts = zoneCounts(spec.zones, live);
  const key = (n: NodeHealth): number[] => [
    // a replica already draining goes first: its drain is not wasted
    draining.has(n.name) ? 0 : 1,
    n.instanceClass !== null && n.instanceClass !== spec.instanceClass ? 0 : 1,
    spec.zones.includes(n.zone) ? 1 : 0,
    -(counts.get(n.zone) ?? 0),
    n.streaming ? 1 : 0,
    (n.lagBytes ?? 0) > laggingBytes ? 0 : 1,
    -n.firstSeenMs,
    -nodeIndex(n.name),
  ];
  return (a, b) => {
    const ka = key(a);
    const kb = key(b);
    for (let i = 0; i < ka.length; i++) if (ka[i] !== kb[i]) return ka[i]! - kb[i]!;
    return 0;
  };
}

export function plan(
  spec: SpecValue,
  view: ClusterView,
  inventory: NodeInfo[],
  nowMs: number,
  previous: PlanMemory,
  options: PlanOptions = defaultPlanOptions,
): Plan {
  const names = new Set(inventory.map((n) => n.name));
  const memory: PlanMemory = {
    firstSeenMs: Object.fromEntries(Object.entries(previous.firstSeenMs).filter(([n]) => names.has(n))),
    downSinceMs: Object.fromEntries(Object.entries(previous.downSinceMs).filter(([n]) => names.has(n))),
    fenced: previous.fenced.filter((n) => names.has(n)),
  };
  const health = assess(view, inventory, nowMs, memory, options);
  const done = (actions: PlanAction[], reason: string): Plan => ({ actions, reason, health, memory });

  if (view.initialize?.value.systemId == null) {
    // No node at all, none on its way, and nobody bootstrapping (a cloud cluster the controller builds):
    // its first node bootstraps it; the others follow once it has, as replicas.
    const zone = spec.zones[0];
    if (view.initialize === null && inventory.length === 0 && view.creations.length === 0 && spec.nodes > 0 && zone !== undefined) {
      const [name] = freeNames(1, new Set(view.members.map((m) => m.name)), options.maxNodes);
      if (name !== undefined) {
        const reason = `no node yet: creating ${name} in ${zone} to bootstrap the cluster`;
        return done([{ kind: 'create', node: name, zone, instanceClass: spec.instanceClass, replaces: null, reason }], reason);
      }
    }
    return done([], 'waiting for the cluster to bootstrap');
  }

  const actions: PlanAction[] = [];
  const notes: string[] = [];
  const leaderName = view.leader?.value.name ?? null;
  const leader = health.find((n) => n.leader);

  // A dead leader's lease would hold the key for up to ttl: fence it and end the lease now.
  // Repeated while the key stays: a fence already confirmed is confirmed again at no cost, and the revoke retried.
  if (leader?.down && view.leader) {
    const reason = `leader ${leader.name} ${leader.why}: fencing it so that its lease can end now`;
    actions.push({ kind: 'fenceLeader', node: leader.name, leaseId: view.leader.leaseId, reason });
  }

  // a creation counts until the provider lists its node; from then on the node speaks for itself
  const pending = view.creations.filter((c) => !names.has(c.name));
  // every record, listed or not: until it goes, the autoscaler's record may not have followed its replacement yet
  const replacements = new Map(view.creations.flatMap((c) => (c.replaces === null ? [] : [[c.replaces, c.name] as const])));
  const used = new Set([...names, ...namesInUse(view), ...spec.scaling.added]);
  const take = (): string | null => {
    const [name] = freeNames(1, used, options.maxNodes);
    if (name === undefined) return null;
    used.add(name);
    return name;
  };
  let live = health.slice();
  // nodes on their way: the creations pending, then the ones this plan asks for;
  // one that replaces an autoscaler's replica is the autoscaler's (its record follows it once created)
  const autoscaled = (replaces: string | null) => replaces !== null && spec.scaling.added.includes(replaces);
  const created: { name: string; zone: string; autoscaled: boolean }[] = pending.map((c) => ({ name: c.name, zone: c.zone, autoscaled: autoscaled(c.replaces) }));
  const create = (name: string, zone: string, replaces: string | null, reason: string): void => {
    actions.push({ kind: 'create', node: name, zone, instanceClass: spec.instanceClass, replaces, reason });
    created.push({ name, zone, autoscaled: autoscaled(replaces) });
  };
  for (const c of pending) {
    const seconds = Math.round((nowMs - c.sinceMs) / 1000);
    notes.push(`creating ${c.name} in ${c.zone}${c.replaces === null ? '' : ` to replace ${c.replaces}`} (${seconds} s)`);
  }

  // Replace nodes down too long; never the one that still holds the leader key, and none at all
  // while no other node leads: a dead leader's data may be the only copy of the last commits
  // (a one-node cluster, or no replica could take over), and destroying it would lose them.
  const liveLeader = health.find((n) => n.leader && !n.down && n.streaming);
  for (const node of health) {
    const since = memory.downSinceMs[node.name];
    if (!node.down || node.name === leaderName || since === undefined) continue;
    if (liveLeader === undefined && nowMs - since >= spec.replaceAfterSeconds * 1000) {
      notes.push(`${node.name} down ${Math.round((nowMs - since) / 1000)} s (${node.why}); not replaced while no other node leads: its data may be the only copy`);
      continue;
    }
    const downSeconds = Math.round((nowMs - since) / 1000);
    // its replacement is on its way: the two count as one node, and there is no second replacement
    const replacement = replacements.get(node.name);
    if (replacement !== undefined) live = live.filter((n) => n !== node);
    if (nowMs - since < spec.replaceAfterSeconds * 1000) {
      const then = replacement === undefined ? `replaced after ${spec.replaceAfterSeconds} s` : `${replacement} replaces it`;
      notes.push(`${node.name} down ${downSeconds} s (${node.why}); ${then}`);
      continue;
    }
    live = live.filter((n) => n !== node);
    if (!memory.fenced.includes(node.name)) actions.push({ kind: 'fence', node: node.name, reason: `${node.name} down ${downSeconds} s: fencing it before it is destroyed` });
    const replaced = replacement === undefined ? '' : `; ${replacement} replaces it`;
    actions.push({ kind: 'destroy', node: node.name, reason: `${node.name} down ${downSeconds} s (${node.why}): destroying it${replaced}` });
    if (replacement !== undefined) continue;
    // a replacement of a node the autoscaler added keeps its reserved name free for the autoscaler's record
    const name = take();
    if (name === null) notes.push(`no free node name to replace ${node.name}`);
    else {
      const zone = leastPopulatedZone(spec.zones, [...live, ...created], node.zone);
      create(name, zone, node.name, `replacing ${node.name} (down ${downSeconds} s) with ${name} in ${zone}`);
    }
  }

  const desiredTotal = spec.nodes + spec.scaling.added.length;
  const count = () => live.length + created.length;
  // The operator's nodes (the leader always among them) and the autoscaler's are counted apart.
  const isBase = (n: { name: string; leader?: boolean; autoscaled?: boolean }) => n.leader === true || (n.autoscaled !== true && !spec.scaling.added.includes(n.name));
  const baseCount = () => live.filter(isBase).length + created.filter(isBase).length;

  // Replicas the autoscaler reserved are created under their reserved names.
  for (const name of spec.scaling.added) {
    // a reserved replica destroyed while its replacement is on its way is not created again
    if (names.has(name) || created.some((c) => c.name === name) || replacements.has(name)) continue;
    const zone = leastPopulatedZone(spec.zones, [...live, ...created]);
    create(name, zone, null, `autoscaler added ${name}: creating it in ${zone}`);
  }
  while (baseCount() < spec.nodes) {
    const name = take();
    if (name === null) {
      notes.push(`cannot create more nodes: the provider holds at most ${options.maxNodes}`);
      break;
    }
    const zone = leastPopulatedZone(spec.zones, [...live, ...created]);
    create(name, zone, null, `${baseCount()} of ${spec.nodes} declared nodes: creating ${name} in ${zone}`);
  }

  const desiredReplicas = desiredTotal - 1;
  const leaderWrongClass = leader !== undefined && leader.instanceClass !== null && leader.instanceClass !== spec.instanceClass;
  // The replica that will take over from a leader of the wrong class is kept.
  const successor = leaderWrongClass
    ? live
        .filter((n) => !n.leader && n.streaming && n.instanceClass === spec.instanceClass)
        .sort((a, b) => (a.zone === leader!.zone ? 0 : 1) - (b.zone === leader!.zone ? 0 : 1) || (a.lagBytes ?? 0) - (b.lagBytes ?? 0) || a.name.localeCompare(b.name))[0]
    : undefined;

  // Surplus replicas: never the leader, never one the autoscaler owns (it removes those itself).
  // A live one is drained first (no new reads) and removed drainMs later.
  const drainingNames = new Set(view.draining.map((d) => d.name));
  const removing = new Set<string>();
  while (baseCount() > spec.nodes) {
    const streamingReplicas = live.filter((n) => !n.leader && n.streaming).length;
    const candidates = live
      .filter((n) => !n.leader && !spec.scaling.added.includes(n.name) && n !== successor)
      // while the leader is of the old class, replicas of the new one stay: the lead passes to them first
      .filter((n) => !leaderWrongClass || n.down || n.instanceClass !== spec.instanceClass)
      // a node still cloning or catching up is left to finish: removing it would undo a surge
      .filter((n) => n.down || (n.streaming && streamingReplicas - 1 >= desiredReplicas))
      .sort(removalOrder(spec, live, drainingNames));
    const victim = candidates[0];
    if (victim === undefined) {
      if (successor && leader && !view.switchover && live.every((n) => n.streaming)) {
        actions.push({ kind: 'switchover', from: leader.name, to: successor.name, reason: `vertical scaling: handing the lead from ${leader.name} (${leader.instanceClass}) to ${successor.name} (${spec.instanceClass})` });
      } else {
        notes.push(`${baseCount()} declared nodes for ${spec.nodes}: waiting until a replica can go without leaving fewer than ${desiredReplicas} streaming`);
      }
      break;
    }
    live = live.filter((n) => n !== victim);
    removing.add(victim.name);
    const surplus = `${baseCount() + 1} declared nodes for ${spec.nodes}`;
    const why = victim.instanceClass !== null && victim.instanceClass !== spec.instanceClass ? `its class ${victim.instanceClass} is not ${spec.instanceClass}` : victim.streaming ? surplus : `${surplus} and it ${victim.why}`;
    const drain = view.draining.find((d) => d.name === victim.name);
    if (victim.down) {
      actions.push({ kind: 'destroy', node: victim.name, reason: `removing replica ${victim.name}: ${why}` });
    } else if (drain === undefined) {
      actions.push({ kind: 'drain', node: victim.name, reason: `draining replica ${victim.name} before removing it: ${why}` });
    } else if (nowMs - drain.sinceMs < options.drainMs) {
      notes.push(`draining ${victim.name} (${Math.round((nowMs - drain.sinceMs) / 1000)} of ${Math.round(options.drainMs / 1000)} s) before removing it`);
    } else {
      actions.push({ kind: 'destroy', node: victim.name, reason: `removing replica ${victim.name} after draining it: ${why}` });
    }
  }
  // A drain no longer wanted (the spec grew again, the node went): its replica serves reads again.
  for (const d of view.draining) {
    if (removing.has(d.name)) continue;
    const why = names.has(d.name) ? 'no longer to be removed' : 'no such node';
    actions.push({ kind: 'undrain', node: d.name, reason: `ending the drain of ${d.name}: ${why}` });
  }

  // Nothing else to do and everything streams: one extra node at a time moves class or zone.
  const settled = actions.length === 0 && pending.length === 0 && count() === desiredTotal && live.every((n) => n.streaming) && view.switchover === null;
  if (settled) {
    const wrong = live.filter((n) => !n.leader && n.instanceClass !== null && n.instanceClass !== spec.instanceClass).sort(removalOrder(spec, live))[0];
    // the autoscaler's record moves to the successor (replaces), so the old node becomes a surplus the plan removes
    const surge = (zone: string, reason: string, replaces: string | null = null): void => {
      const name = take();
      if (name === null) notes.push(`${reason}, but no node name is free`);
      else create(name, zone, replaces, `${reason}: adding ${name} in ${zone} first`);
    };
    if (wrong) surge(wrong.zone, `vertical scaling: ${wrong.name} is ${wrong.instanceClass}, not ${spec.instanceClass}`, isBase(wrong) ? null : wrong.name);
    else if (leaderWrongClass) surge(leader!.zone, `vertical scaling: leader ${leader!.name} is ${leader!.instanceClass}, not ${spec.instanceClass}`);
    else if (!zonesBalanced(spec.zones, live)) surge(leastPopulatedZone(spec.zones, live), `zones out of balance (${describeZones(spec.zones, live)})`);
  }

  if (actions.length > 0) return done(actions, actions.map((a) => a.reason).join('; '));
  const healthy = live.filter((n) => n.streaming).length;
  const summary = `${live.length} of ${desiredTotal} nodes (${describeZones(spec.zones, live)}), ${healthy} streaming`;
  return done([], notes.length > 0 ? `${summary}; ${notes.join('; ')}` : `${summary}: nothing to do`);
}

export function describeZones(zones: string[], nodes: { zone: string }[]): string {
  const counts = zoneCounts(zones, nodes);
  const outside = nodes.filter((n) => !zones.includes(n.zone)).length;
  const parts = [...counts].map(([z, c]) => `${z} ${c}`);
  if (outside > 0) parts.push(`outside the spec ${outside}`);
  return parts.join(', ');
}
