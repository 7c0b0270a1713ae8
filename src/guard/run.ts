/**
 * Runs one guard from node.yml until SIGTERM or SIGINT. SIGHUP is logged and
 * ignored: a guard that died of a closed terminal would leave its primary
 * unguarded.
 */
import { loadNodeConfig } from '../config/load.js';
import { KeelError } from '../errors.js';
import { Guard } from './guard.js';
import { createGuardLogger } from './log.js';

export interface GuardRunOptions {
  config: string;
  /** overrides guard.hardwareWatchdog from node.yml */
  hardwareWatchdog?: string;
}

export async function runGuard(options: GuardRunOptions): Promise<void> {
  const config = loadNodeConfig(options.config);
  if (config.guard === undefined) {
    throw new KeelError('KEEL_CONFIG_INVALID', `${options.config} has no guard block`, {
      hint: 'add `guard: { socket: /path/in/the/node/directory/guard.sock }` to node.yml',
    });
  }
  const logger = createGuardLogger({ component: 'guard', node: config.name, cluster: config.cluster });
  const guard = new Guard({
    socketPath: config.guard.socket,
    dataDir: config.postgres.dataDir,
    binDir: config.postgres.binDir,
    hardwareWatchdog: options.hardwareWatchdog ?? config.guard.hardwareWatchdog ?? null,
    logger,
  });
  process.on('SIGHUP', () => logger.info({ signal: 'SIGHUP' }, 'ignored SIGHUP: the guard reads node.yml only at start'));
  await guard.start();
  await new Promise<void>((resolve) => {
    const onSignal = (signal: NodeJS.Signals) => {
      logger.info({ signal }, 'guard stopping');
      void guard.stop().finally(resolve);
    };
    process.once('SIGTERM', onSignal);
    process.once('SIGINT', onSignal);
  });
  logger.info({}, 'guard stopped');
}
