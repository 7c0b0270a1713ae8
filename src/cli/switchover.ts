import type { Command } from 'commander';
import { requestLeaderChange } from '../dcs/requests.js';
import type { Dcs } from '../dcs/types.js';
import { KeelError } from '../errors.js';
import { sleep } from '../util/clock.js';
import { resolveTarget, withTargetOptions, type TargetOptions } from './target.js';

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
    const recorded = await requestLeaderChange(target.dcs, { failover, to: options.to ?? null }, Date.now());
    const from = recorded.from;
    const what = failover ? 'failover' : 'switchover';
    process.stdout.write(`${what} requested: ${from ?? '(no leader)'} -> ${recorded.to ?? 'the healthiest replica'}\n`);
    if (!options.wait) return;
    const leader = await waitForLeader(target.dcs, (name) => (options.to ? name === options.to : name !== from), 60_000);
    process.stdout.write(`${leader} now leads\n`);
  } finally {
    await target.dcs.close();
  }
}

export function registerSwitchover(program: Command): void {
  const common = (cmd: Command) =>
    withTargetOptions(cmd)
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
