import type { Command } from 'commander';
import type { EventValue } from '../model/values.js';
import { KeelError } from '../errors.js';
import { resolveTarget, targetHelp, type TargetOptions } from './target.js';

function line(event: EventValue): string {
  return `${new Date(event.atMs).toISOString()}  ${event.source.padEnd(10)} ${event.kind.padEnd(14)} ${event.message}`;
}

const identity = (e: EventValue) => `${e.atMs}|${e.source}|${e.kind}|${e.message}`;

async function events(options: TargetOptions & { follow?: boolean; limit: string; json?: boolean }): Promise<void> {
  const limit = Number(options.limit);
  if (!Number.isInteger(limit) || limit < 0 || limit > 1000) {
    throw new KeelError('KEEL_USAGE', `--limit must be a whole number from 0 to 1000 (got ${JSON.stringify(options.limit)})`);
  }
  const target = resolveTarget(options);
  const print = (e: EventValue) => process.stdout.write(`${options.json ? JSON.stringify(e) : line(e)}\n`);
  try {
    // the watch starts before the listing, so nothing falls between the two
    const early: EventValue[] = [];
    let live: ((e: EventValue) => void) | null = null;
    const stop = options.follow ? await target.dcs.watchEvents((e) => (live ? live(e) : early.push(e))) : null;
    const listed = await target.dcs.listEvents(limit);
    listed.forEach(print);
    if (stop === null) return;
    const seen = new Set(listed.map(identity));
    early.filter((e) => !seen.has(identity(e))).forEach(print);
    live = print;
    await new Promise<void>((resolve) => {
      process.once('SIGINT', resolve);
      process.once('SIGTERM', resolve);
    });
    await stop();
  } finally {
    await target.dcs.close();
  }
}

export function registerEvents(program: Command): void {
  program
    .command('events')
    .description('what happened and why: decisions and actions of agents and the controller, oldest first')
    .option('--dir <dir>', targetHelp.dir)
    .option('--etcd <url>', targetHelp.etcd)
    .option('--cluster <name>', targetHelp.cluster)
    .option('--etcd-cacert <file>', targetHelp.etcdCacert)
    .option('--etcd-cert <file>', targetHelp.etcdCert)
    .option('--etcd-key <file>', targetHelp.etcdKey)
    .option('--limit <n>', 'how many of the latest events', '50')
    .option('-f, --follow', 'keep printing new events until Ctrl-C')
    .option('--json', 'one JSON object per line')
    .action(events);
}
