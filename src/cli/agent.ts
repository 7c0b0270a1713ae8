import type { Command } from 'commander';
import { Agent } from '../agent/agent.js';
import { LoadMeter } from '../agent/load.js';
import { splitHostPort } from '../agent/member.js';
import { startApi } from '../api/server.js';
import { loadNodeConfig } from '../config/load.js';
import { EtcdDcs } from '../dcs/etcd.js';
import { LocalPostgres } from '../postgres/local.js';
import { checkPostgresBinaries } from '../postgres/binaries.js';
import { systemClock } from '../util/clock.js';
import { createLogger } from '../util/log.js';
import { isPortFree } from '../util/ports.js';
import { describeError, KeelError } from '../errors.js';

export function registerAgent(program: Command): void {
  program
    .command('agent')
    .description('run the agent of one PostgreSQL node (its loop, lease and PostgreSQL)')
    .requiredOption('--config <file>', 'node configuration (YAML)')
    .action(async (options: { config: string }) => {
      const config = loadNodeConfig(options.config);
      checkPostgresBinaries(config.postgres.binDir);
      const logger = createLogger({ node: config.name, cluster: config.cluster });
      // a closed terminal or a reload habit must not kill the agent (SIGHUP's default) and orphan its PostgreSQL
      process.on('SIGHUP', () => logger.info({ signal: 'SIGHUP' }, 'ignored SIGHUP: the agent reads node.yml only at start'));
      // Checked before anything starts: failing later would mean stopping a PostgreSQL we just started.
      const apiAddress = splitHostPort(config.api.listen);
      if (!(await isPortFree(apiAddress.host, apiAddress.port))) {
        throw new KeelError('KEEL_PORT_IN_USE', `the REST API cannot listen on ${config.api.listen}: the port is in use`, {
          hint: 'stop what listens there (another agent of this node?) or change api.listen in the node config',
        });
      }
      const dcs = new EtcdDcs({
        endpoints: config.etcd.endpoints,
        cluster: config.cluster,
        requestTimeoutMs: config.etcd.requestTimeoutMs,
        logger,
      });
      const pg = new LocalPostgres(config, logger);
      const agent = new Agent(config, dcs, pg, systemClock, logger, new LoadMeter(pg, systemClock));
      logger.info({ dataDir: config.postgres.dataDir, etcd: config.etcd.endpoints }, 'agent starting');
      await agent.start();
      const apiOptions = { node: { name: config.name, cluster: config.cluster, tags: config.tags }, token: config.api.token, dcs, clock: systemClock, logger };
      const api = await startApi(agent, apiOptions, config.api.listen).catch(async (err: unknown) => {
        await agent.stop();
        throw err;
      });
      logger.info({ listen: api.address }, 'REST API listening');
      await new Promise<void>((resolve) => {
        let stopping = false;
        const onSignal = (signal: NodeJS.Signals) => {
          if (stopping) return;
          stopping = true;
          logger.info({ signal }, 'stopping: the REST API, then PostgreSQL, then the lease');
          // The API goes first so load balancers mark this node down before PostgreSQL stops.
          void api
            .close()
            .catch((err: unknown) => logger.warn({ err: describeError(err) }, 'could not close the REST API'))
            .then(() => agent.stop())
            .finally(resolve);
        };
        process.on('SIGTERM', onSignal);
        process.on('SIGINT', onSignal);
      });
      logger.info('agent stopped');
    });
}
