import type { Command } from 'commander';
import { promotionVerdict } from '../agent/eligibility.js';
import { memberLsn } from '../agent/snapshot.js';
import { defaultDynamicConfig } from '../config/schema.js';
import type { ClusterView, Dcs } from '../dcs/types.js';
import { KeelError } from '../errors.js';
import { sleep } from '../util/clock.js';
import { resolveTarget, targetHelp, type TargetOptions } from './target.js';

/**
 * Checks a switchover or failover target the way the agents will, so the
 * person asking hears why at once (safety rule 3).
 */
export function checkTarget(view: ClusterView, to: string, nowMs: number): void {
  const member = view.members.find((m) => m.name === to);
  if (member === undefined) {
    throw new KeelError('KEEL_UNKNOWN_MEMBER', `${to} is not a member of the cluster (members: ${view.members.map((m) => m.name).join(', ') || 'none'})`);
  }
  if (view.leader?.value.name === to) throw new KeelError('KEEL_TARGET_INELIGIBLE', `${to} already leads`);
  const config = view.config?.value ?? defaultDynamicConfig;
  const verdict = promotionVerdict(member, view, config, nowMs, { ignoreOthers: true });
  if (!verdict.ok) throw new KeelError('KEEL_TARGET_INELIGIBLE', `cannot promote ${to}: ${verdict.why}`);
  const leader = view.members.find((m) => m.name === view.leader?.value.name);
  if (leader?.walLsn != null) {
    const lagBytes = leader.walLsn - memberLsn(member);
    if (lagBytes > config.maximum_lag_on_failover) {
      throw new KeelError('KEEL_TARGET_INELIGIBLE', `cannot promote ${to}: it lags ${lagBytes} bytes behind ${leader.name} (maximum_lag_on_failover ${config.maximum_lag_on_failover})`);
    }
  }
}

async function waitForLeader(dcs: Dcs, accept: (leader: string) => boolean, timeoutMs: number): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const view = await dcs.readCluster().catch(() => null);
    const name = view?.leader?.value.name;
    const member = view?.members.find((m) => m.name === name);
    if (name !== undefined && accept(name) && member?.role === 'primary') return name;
    await sleep(250);
  }
  throw new KeelError('KEEL_TIMEOUT', `no new leader within ${timeoutMs / 1000} s`, { hint: 'run `keel status` to see each member\'s reason' });
}

async function request(options: TargetOptions & { to?: string; wait: boolean }, failover: boolean): Promise<void> {
  const target = resolveTarget(options);
  try {
    const view = await target.dcs.readCluster();
    const from = view.leader?.value.name ?? null;
    if (!failover && from === null) {
      throw new KeelError('KEEL_NO_LEADER', 'there is no leader to switch over from', { hint: 'use `keel failover --to NAME`' });
    }
    if (options.to !== undefined) checkTarget(view, options.to, Date.now());
    const requested = await target.dcs.requestSwitchover({ v: 1, from, to: options.to ?? null, failover, requestedAtMs: Date.now() });
    if (!requested) throw new KeelError('KEEL_CONFLICT', 'another switchover or failover is pending', { hint: 'wait for it to finish (see `keel status`)' });
    const what = failover ? 'failover' : 'switchover';
    process.stdout.write(`${what} requested: ${from ?? '(no leader)'} -> ${options.to ?? 'the healthiest replica'}\n`);
    if (!options.wait) return;
    const leader = await waitForLeader(target.dcs, (name) => (options.to ? name === options.to : name !== from), 60_000);
    process.stdout.write(`${leader} now leads\n`);
  } finally {
    await target.dcs.close();
  }
}

export function registerSwitchover(program: Command): void {
  const common = (cmd: Command) =>
    cmd
      .option('--dir <dir>', targetHelp.dir)
      .option('--etcd <url>', targetHelp.etcd)
      .option('--cluster <name>', targetHelp.cluster)
      .option('--no-wait', 'return once the request is recorded');
  common(
    program
      .command('switchover')
      .description('planned change of leader: the leader shuts down cleanly and a caught-up replica takes over')
      .option('--to <member>', 'the member to promote (default: the healthiest replica)'),
  ).action((options: TargetOptions & { to?: string; wait: boolean }) => request(options, false));
  common(
    program
      .command('failover')
      .description('promote a named replica now, whether or not the leader is healthy')
      .requiredOption('--to <member>', 'the member to promote'),
  ).action((options: TargetOptions & { to: string; wait: boolean }) => request(options, true));
}
