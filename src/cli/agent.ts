import type { Command } from 'commander';
import { Agent } from '../agent/agent.js';
import { loadNodeConfig } from '../config/load.js';
import { EtcdDcs } from '../dcs/etcd.js';
import { LocalPostgres } from '../postgres/local.js';
import { checkPostgresBinaries } from '../postgres/binaries.js';
import { systemClock } from '../util/clock.js';
import { createLogger } from '../util/log.js';

export function registerAgent(program: Command): void {
  program
    .command('agent')
    .description('run the agent of one PostgreSQL node (its loop, lease and PostgreSQL)')
    .requiredOption('--config <file>', 'node configuration (YAML)')
    .action(async (options: { config: string }) => {
      const config = loadNodeConfig(options.config);
      checkPostgresBinaries(config.postgres.binDir);
      const logger = createLogger({ node: config.name, cluster: config.cluster });
      const dcs = new EtcdDcs({
        endpoints: config.etcd.endpoints,
        cluster: config.cluster,
        requestTimeoutMs: config.etcd.requestTimeoutMs,
        logger,
      });
      const pg = new LocalPostgres(config, logger);
      const agent = new Agent(config, dcs, pg, systemClock, logger);
      logger.info({ dataDir: config.postgres.dataDir, etcd: config.etcd.endpoints }, 'agent starting');
      await agent.start();
      await new Promise<void>((resolve) => {
        let stopping = false;
        const onSignal = (signal: NodeJS.Signals) => {
          if (stopping) return;
          stopping = true;
          logger.info({ signal }, 'stopping: PostgreSQL first, then the lease');
          void agent.stop().finally(resolve);
        };
        process.on('SIGTERM', onSignal);
        process.on('SIGINT', onSignal);
      });
      logger.info('agent stopped');
    });
}
