/**
 * The faults, each one function that injects it, waits out its length and
 * ends it (restart, SIGCONT, heal). Every wait is bounded; the randomness
 * (delays, targets) comes from the run's seeded generator. Faults 1-7 hit
 * whole nodes, PostgreSQL, etcd and the network; the fencing faults (8-10,
 * the leader's agent alone and a ttl change) live in faults-fencing.ts.
 */
import { requestLeaderChange } from '../../src/dcs/requests.js';
import { sleep } from '../../src/util/clock.js';
import { namespacePids, processName } from '../../src/providers/netns-net.js';
import { leaderOf, type Fault, type FaultContext, type FaultId } from './fault.js';
import { fencingFaults } from './faults-fencing.js';

export type { Fault, FaultContext, FaultId, FaultOutcome } from './fault.js';

/** Kills a node and starts it again after `delayMs`, as a supervisor (systemd, a controller) would. */
async function killAndRestart(ctx: FaultContext, node: string, delayMs: number): Promise<{ startMs: number; endMs: number; killed: number }> {
  const startMs = Date.now();
  const killed = (await ctx.cluster.provider.kill(node)).length;
  await sleep(Math.max(0, delayMs - (Date.now() - startMs)));
  await ctx.cluster.provider.start(node);
  return { startMs, endMs: Date.now(), killed };
}

const killLeader: Fault = {
  id: '1',
  title: 'SIGKILL of the leader node (agent + postmaster)',
  async inject(ctx) {
    const target = leaderOf(ctx);
    const restartAfterMs = ctx.rng.between(1000, ctx.ttlMs + 3000);
    const { startMs, endMs, killed } = await killAndRestart(ctx, target, restartAfterMs);
    return { startMs, endMs, target, details: { restartAfterMs, processesKilled: killed } };
  },
};

const killPostmaster: Fault = {
  id: '2',
  title: "SIGKILL of the leader's postmaster only",
  async inject(ctx) {
    const target = leaderOf(ctx);
    const startMs = Date.now();
    const pid = await ctx.cluster.provider.killPostmaster(target);
    if (pid === null) throw new Error(`${target} runs no postmaster`);
    return { startMs, endMs: startMs, target, details: { postmasterPid: pid } };
  },
};

const freezeLeader: Fault = {
  id: '3',
  title: 'SIGSTOP of the leader node for 2 x ttl, then SIGCONT',
  async inject(ctx) {
    const target = leaderOf(ctx);
    const startMs = Date.now();
    const stopped = await ctx.cluster.provider.freeze(target);
    try {
      await sleep(2 * ctx.ttlMs);
    } finally {
      await ctx.cluster.provider.thaw(target);
    }
    return { startMs, endMs: Date.now(), target, details: { processesStopped: stopped.length } };
  },
};

const isolateLeader: Fault = {
  id: '4',
  title: 'network isolation of the leader (from etcd, replicas and router) for 2 x ttl',
  async inject(ctx) {
    const target = leaderOf(ctx);
    const startMs = Date.now();
    await ctx.cluster.provider.isolate(target);
    try {
      await sleep(2 * ctx.ttlMs);
    } finally {
      await ctx.cluster.provider.heal(target);
    }
    return { startMs, endMs: Date.now(), target, details: {} };
  },
};

const isolateEtcdLeader: Fault = {
  id: '5a',
  title: 'network isolation of the etcd leader member for 2 x ttl',
  async inject(ctx) {
    const target = (await ctx.cluster.etcd.leader()) ?? ctx.rng.pick(ctx.cluster.etcd.names());
    const startMs = Date.now();
    await ctx.cluster.net.isolate(target);
    try {
      await sleep(2 * ctx.ttlMs);
    } finally {
      await ctx.cluster.net.heal(target);
    }
    return { startMs, endMs: Date.now(), target, details: {} };
  },
};

const killEtcdMember: Fault = {
  id: '5b',
  title: 'SIGKILL of one etcd member, restarted later',
  async inject(ctx) {
    const target = ctx.rng.pick(ctx.cluster.etcd.names());
    const wasLeader = (await ctx.cluster.etcd.leader()) === target;
    const restartAfterMs = ctx.rng.between(1000, ctx.ttlMs);
    const startMs = Date.now();
    await ctx.cluster.etcd.kill(target);
    await sleep(restartAfterMs);
    await ctx.cluster.etcd.restart(target);
    return { startMs, endMs: Date.now(), target, details: { wasLeader, restartAfterMs } };
  },
};

const killDuringSwitchover: Fault = {
  id: '6',
  title: 'SIGKILL of the leader in the middle of a switchover',
  async inject(ctx) {
    const target = leaderOf(ctx);
    const killAfterMs = ctx.rng.between(0, 2000);
    const startMs = Date.now();
    const request = await requestLeaderChange(ctx.cluster.dcs, { failover: false, to: null, expectLeader: target }, startMs);
    await sleep(killAfterMs);
    const leaderAtKill = ctx.observer.leader();
    const restartAfterMs = ctx.rng.between(1000, 3000);
    const { endMs } = await killAndRestart(ctx, target, restartAfterMs);
    return { startMs, endMs, target, details: { requestedFrom: request.from, killAfterMs, leaderAtKill, restartAfterMs } };
  },
};

async function basebackupRunning(namespace: string): Promise<boolean> {
  const pids = await namespacePids(namespace).catch(() => []);
  return pids.some((pid) => processName(pid) === 'pg_basebackup');
}

const killCloningReplica: Fault = {
  id: '7',
  title: 'SIGKILL of a replica while it clones',
  async inject(ctx) {
    const leader = leaderOf(ctx);
    const target = ctx.rng.pick(ctx.cluster.names.filter((n) => n !== leader));
    const namespace = ctx.cluster.net.host(target).namespace;
    const provider = ctx.cluster.provider;
    const startMs = Date.now();
    // an empty data directory makes the agent clone from the leader
    await provider.kill(target);
    await provider.removeData(target);
    await provider.start(target);
    const deadline = Date.now() + 30_000;
    let cloneSeenAfterMs: number | null = null;
    while (Date.now() < deadline) {
      if (await basebackupRunning(namespace)) {
        cloneSeenAfterMs = Date.now() - startMs;
        break;
      }
      await sleep(20);
    }
    const killAfterMs = ctx.rng.between(0, 600);
    await sleep(killAfterMs);
    const cloningAtKill = await basebackupRunning(namespace);
    const { endMs } = await killAndRestart(ctx, target, 1000);
    return { startMs, endMs, target, details: { cloneSeenAfterMs, killAfterMs, cloningAtKill } };
  },
};

export const faults: Record<FaultId, Fault> = {
  '1': killLeader,
  '2': killPostmaster,
  '3': freezeLeader,
  '4': isolateLeader,
  '5a': isolateEtcdLeader,
  '5b': killEtcdMember,
  '6': killDuringSwitchover,
  '7': killCloningReplica,
  ...fencingFaults,
};
