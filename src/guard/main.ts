/**
 * The guard's own entry point (`node dist/guard/main.js --config node.yml`):
 * what the providers start on every node. It loads the guard alone, without
 * the CLI's other commands (etcd client, REST API, pino), so the process
 * that must outlive everything else on the node stays small.
 * `keel guard` runs the same code through the CLI.
 */
import { parseArgs } from 'node:util';
import { isKeelError, KeelError } from '../errors.js';
import { runGuard } from './run.js';

async function main(argv: string[]): Promise<number> {
  let values: { config?: string; 'hardware-watchdog'?: string; help?: boolean };
  try {
    ({ values } = parseArgs({
      args: argv,
      options: { config: { type: 'string' }, 'hardware-watchdog': { type: 'string' }, help: { type: 'boolean' } },
      strict: true,
    }));
  } catch (err) {
    values = {};
    process.stderr.write(`${new KeelError('KEEL_USAGE', (err as Error).message).render()}\n`);
    return 2;
  }
  if (values.help) {
    process.stdout.write('usage: guard --config node.yml [--hardware-watchdog /dev/watchdog]\n');
    return 0;
  }
  if (values.config === undefined) {
    process.stderr.write(`${new KeelError('KEEL_USAGE', "required option '--config <file>' not specified").render()}\n`);
    return 2;
  }
  try {
    await runGuard({ config: values.config, hardwareWatchdog: values['hardware-watchdog'] });
    return 0;
  } catch (err) {
    if (isKeelError(err)) {
      process.stderr.write(`${err.render()}\n`);
      return err.exitStatus;
    }
    process.stderr.write(`guard: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    return 1;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`guard: ${String(err)}\n`);
    process.exitCode = 1;
  },
);
