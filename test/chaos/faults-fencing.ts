/**
 * The fencing faults: the leader's PostgreSQL keeps running while what is
 * supposed to stop it is crashed, stalled, or misled about its lease.
 *
 *   8   SIGKILL of the leader's agent alone; started again later, as a
 *       supervisor would.
 *   9   SIGSTOP of the leader's agent alone for 2 x ttl, then SIGCONT.
 *   10  ttl raised (10 -> 30 s) through the config key, then the leader cut
 *       off from etcd for 2 x the old ttl + 3 s, healed, ttl set back.
 *
 * In each, an old primary that goes on acknowledging writes after another
 * member took the key is a split-brain; the direct clients of the workload
 * are the ones that would reach it. Fault 10 cuts the leader off from the
 * etcd members only (not from the router, the replicas or the clients):
 * cutting everything would hide from every client the very writes the fault
 * is there to catch.
 */
import { applyConfigPatch } from '../../src/config/patch.js';
import { defaultDynamicConfig } from '../../src/config/schema.js';
import { run } from '../../src/providers/netns-net.js';
import { sleep } from '../../src/util/clock.js';
import { leaderOf, type Fault, type FaultContext } from './fault.js';

/** The agent of `node` is gone (its exit seen by the provider), within a bound. */
async function waitAgentGone(ctx: FaultContext, node: string, timeoutMs = 5000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (ctx.cluster.provider.agentPid(node) !== null) {
    if (Date.now() > deadline) return false;
    await sleep(50);
  }
  return true;
}

const killLeaderAgent: Fault = {
  id: '8',
  title: "SIGKILL of the leader's agent only (PostgreSQL runs on), restarted later",
  async inject(ctx) {
    const target = leaderOf(ctx);
    const provider = ctx.cluster.provider;
    const restartAfterMs = ctx.rng.between(1000, ctx.ttlMs + 3000);
    const postmasterPid = provider.postmasterPid(target);
    const startMs = Date.now();
    const agentPid = provider.signalAgent(target, 'SIGKILL');
    if (agentPid === null) throw new Error(`${target} runs no agent`);
    await sleep(restartAfterMs);
    if (!(await waitAgentGone(ctx, target))) throw new Error(`the agent of ${target} (pid ${agentPid}) survived SIGKILL`);
    // whether anything stopped the orphaned primary before its agent came back
    const postmasterAtRestart = provider.postmasterPid(target);
    await provider.start(target);
    return {
      startMs, endMs: Date.now(), target,
      details: { agentPid, restartAfterMs, postmasterPid, postmasterRunningAtRestart: postmasterAtRestart !== null && postmasterAtRestart === postmasterPid },
    };
  },
};

const freezeLeaderAgent: Fault = {
  id: '9',
  title: "SIGSTOP of the leader's agent only for 2 x ttl, then SIGCONT",
  async inject(ctx) {
    const target = leaderOf(ctx);
    const provider = ctx.cluster.provider;
    const postmasterPid = provider.postmasterPid(target);
    const startMs = Date.now();
    const agentPid = provider.signalAgent(target, 'SIGSTOP');
    if (agentPid === null) throw new Error(`${target} runs no agent`);
    let postmasterAtThaw: number | null = null;
    try {
      await sleep(2 * ctx.ttlMs);
      postmasterAtThaw = provider.postmasterPid(target);
    } finally {
      provider.signalAgent(target, 'SIGCONT');
    }
    return {
      startMs, endMs: Date.now(), target,
      details: { agentPid, postmasterPid, postmasterRunningAtThaw: postmasterAtThaw !== null && postmasterAtThaw === postmasterPid },
    };
  },
};

/** Changes `ttl` in the config key with a compare-and-swap, as `keel config set ttl=N` does. */
async function setTtl(ctx: FaultContext, ttlSeconds: number): Promise<void> {
  const dcs = ctx.cluster.dcs;
  let lastError: unknown = null;
  for (let attempt = 0; attempt < 20; attempt++) {
    try {
      const stored = (await dcs.readCluster()).config;
      const next = applyConfigPatch(stored?.value ?? defaultDynamicConfig, { ttl: ttlSeconds });
      if (await dcs.putConfig(next, stored?.modRevision ?? null)) return;
      lastError = new Error('the config changed meanwhile');
    } catch (err) {
      lastError = err;
    }
    await sleep(250);
  }
  throw new Error(`could not set ttl=${ttlSeconds}: ${(lastError as Error).message}`);
}

/** An iptables chain of our own, so that the full isolation (netns-net.ts) and this cut never touch each other's rules. */
const etcdCutChain = 'KEELCHAOSETCD';

function iptables(ctx: FaultContext, node: string, ...args: string[]): Promise<unknown> {
  return run('ip', ['netns', 'exec', ctx.cluster.net.host(node).namespace, 'iptables', '-w', '5', ...args]);
}

/** Drops every packet between `node` and the etcd members; everything else flows. */
async function cutFromEtcd(ctx: FaultContext, node: string): Promise<void> {
  await iptables(ctx, node, '-N', etcdCutChain);
  for (const member of ctx.cluster.etcd.names()) {
    const address = ctx.cluster.net.host(member).address;
    await iptables(ctx, node, '-A', etcdCutChain, '-d', address, '-j', 'DROP');
    await iptables(ctx, node, '-A', etcdCutChain, '-s', address, '-j', 'DROP');
  }
  await iptables(ctx, node, '-I', 'INPUT', '1', '-j', etcdCutChain);
  await iptables(ctx, node, '-I', 'OUTPUT', '1', '-j', etcdCutChain);
}

/** Removes what cutFromEtcd added; tolerant of a cut that was only half made. */
async function restoreEtcd(ctx: FaultContext, node: string): Promise<void> {
  for (const hook of ['INPUT', 'OUTPUT']) await iptables(ctx, node, '-D', hook, '-j', etcdCutChain).catch(() => undefined);
  await iptables(ctx, node, '-F', etcdCutChain).catch(() => undefined);
  await iptables(ctx, node, '-X', etcdCutChain).catch(() => undefined);
  const left = await iptables(ctx, node, '-n', '-L', etcdCutChain).then(() => true, () => false);
  if (left) throw new Error(`${node}: the etcd cut (iptables chain ${etcdCutChain}) could not be removed`);
}

const raiseTtlThenCutLeader: Fault = {
  id: '10',
  title: 'ttl raised 10 -> 30 s, then the leader cut off from etcd for 2 x the old ttl + 3 s; ttl set back',
  async inject(ctx) {
    const oldTtlSeconds = ctx.ttlMs / 1000;
    const newTtlSeconds = 3 * oldTtlSeconds;
    const cutMs = 2 * ctx.ttlMs + 3000;
    const details: Record<string, unknown> = { oldTtlSeconds, newTtlSeconds, cutMs, leaderAtRaise: ctx.observer.leader() };
    const raisedAtMs = Date.now();
    await setTtl(ctx, newTtlSeconds);
    let startMs = Date.now();
    let target = '';
    try {
      // the leader's lease as etcd holds it, once the agents had time to act on the change (bounded by the old ttl)
      let lease = await ctx.observer.leaderLease().catch(() => null);
      while (Date.now() - raisedAtMs < ctx.ttlMs && lease?.grantedTtlSeconds !== newTtlSeconds) {
        await sleep(250);
        lease = await ctx.observer.leaderLease().catch(() => null);
      }
      details.leaseRebindSeenAfterMs = lease?.grantedTtlSeconds === newTtlSeconds ? Date.now() - raisedAtMs : null;
      // at a random point of a renewal interval: a cut right after a fresh grant would never see the lease run out
      const cutAfterRebindMs = ctx.rng.between(0, (newTtlSeconds * 1000) / 3);
      details.cutAfterRebindMs = cutAfterRebindMs;
      await sleep(cutAfterRebindMs);
      lease = await ctx.observer.leaderLease().catch(() => null);
      details.leaseGrantedTtlSecondsAtCut = lease?.grantedTtlSeconds ?? null;
      details.leaseRemainingSecondsAtCut = lease?.remainingSeconds ?? null;
      target = leaderOf(ctx);
      startMs = Date.now();
      await cutFromEtcd(ctx, target);
      try {
        await sleep(cutMs);
      } finally {
        await restoreEtcd(ctx, target);
      }
    } finally {
      await setTtl(ctx, oldTtlSeconds);
    }
    return { startMs, endMs: Date.now(), target, details };
  },
};

export const fencingFaults = {
  '8': killLeaderAgent,
  '9': freezeLeaderAgent,
  '10': raiseTtlThenCutLeader,
} as const;
