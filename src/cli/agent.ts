import type { Command } from 'commander';
import { config as zodConfig } from 'zod';
import { Agent } from '../agent/agent.js';
import { LoadMeter } from '../agent/load.js';
import { splitHostPort } from '../agent/member.js';
import { apiLimits } from '../api/limits.js';
import { ArchiveMonitor } from '../backup/archive-monitor.js';
import { writeBackupFiles } from '../backup/files.js';
import { ReplicaFromBackup } from '../backup/replica.js';
import { readApiTlsFiles, startApi, type RunningApi } from '../api/server.js';
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
      // zod compiles a parser for each object schema the first time it parses one: faster for a server
      // parsing thousands a second, but the agent parses a few a second and the code would stay in its heap
      zodConfig({ jitless: true });
      const config = loadNodeConfig(options.config);
      checkPostgresBinaries(config.postgres.binDir);
      const logger = createLogger({ node: config.name, cluster: config.cluster });
      // A closed terminal or a reload habit must not kill the agent (SIGHUP's default) and orphan its PostgreSQL.
      // SIGHUP reloads the API's certificate (renewed in place); node.yml itself is read only at start.
      let api: RunningApi | null = null;
      let reloadEtcd: (() => Promise<void>) | null = null;
      process.on('SIGHUP', () => {
        try {
          const reloaded = api?.reloadTls() ?? false;
          logger.info({ signal: 'SIGHUP' }, reloaded ? "reloaded the REST API's certificate; node.yml is read only at start" : 'SIGHUP: nothing to reload (node.yml is read only at start)');
        } catch (err) {
          logger.error({ signal: 'SIGHUP', err: describeError(err) }, "kept the REST API's certificate in use");
        }
        reloadEtcd?.().then(
          () => logger.info({ signal: 'SIGHUP' }, "etcd client certificate read again: new connections use it"),
          (err: unknown) => logger.error({ signal: 'SIGHUP', err: describeError(err) }, 'kept the etcd client certificate in use'),
        );
      });
      // Checked before anything starts: failing later would mean stopping a PostgreSQL we just started.
      const apiAddress = splitHostPort(config.api.listen);
      if (!(await isPortFree(apiAddress.host, apiAddress.port))) {
        throw new KeelError('KEEL_PORT_IN_USE', `the REST API cannot listen on ${config.api.listen}: the port is in use`, {
          hint: 'stop what listens there (another agent of this node?) or change api.listen in the node config',
        });
      }
      if (config.tls !== undefined) readApiTlsFiles(config.tls);
      const dcs = new EtcdDcs({
        endpoints: config.etcd.endpoints,
        cluster: config.cluster,
        requestTimeoutMs: config.etcd.requestTimeoutMs,
        logger,
        credentials: config.etcd,
      });
      if (config.etcd.tls !== undefined) reloadEtcd = () => dcs.reloadCredentials();
      const pg = new LocalPostgres(config, logger);
      // archive_command names pgBackRest's files: they exist before PostgreSQL starts
      if (config.backup !== undefined) await writeBackupFiles(config);
      const archive = config.backup === undefined ? undefined : new ArchiveMonitor(config, dcs, systemClock, logger);
      const fromBackup = config.backup === undefined ? undefined : new ReplicaFromBackup(config, dcs, systemClock, logger);
      const agent = new Agent(config, dcs, pg, systemClock, logger, new LoadMeter(pg, systemClock), archive, fromBackup && ((systemId, leader) => fromBackup.restore(systemId, leader)));
      logger.info({ dataDir: config.postgres.dataDir, etcd: config.etcd.endpoints }, 'agent starting');
      await agent.start();
      archive?.start();
      const apiOptions = {
        node: { name: config.name, cluster: config.cluster, tags: config.tags },
        token: config.api.token,
        ...(config.tls === undefined ? {} : { certificateFile: config.tls.cert }),
        readAuth: config.api.readAuth,
        dcs,
        clock: systemClock,
        logger,
      };
      const apiSettings = { listen: config.api.listen, ...(config.tls === undefined ? {} : { tls: config.tls }), limits: apiLimits(config.api) };
      const running = await startApi(agent, apiOptions, apiSettings).catch(async (err: unknown) => {
        await agent.stop();
        throw err;
      });
      api = running;
      if (config.tls === undefined) logger.warn('the REST API serves plain HTTP: give the node a certificate (node.yml tls) for HTTPS');
      logger.info({ listen: running.address, scheme: running.scheme, readAuth: config.api.readAuth }, 'REST API listening');
      await new Promise<void>((resolve) => {
        let stopping = false;
        const onSignal = (signal: NodeJS.Signals) => {
          if (stopping) return;
          stopping = true;
          logger.info({ signal }, 'stopping: the REST API, then PostgreSQL, then the lease');
          // The API goes first so load balancers mark this node down before PostgreSQL stops.
          void running
            .close()
            .catch((err: unknown) => logger.warn({ err: describeError(err) }, 'could not close the REST API'))
            .then(() => archive?.stop())
            .then(() => agent.stop())
            .finally(resolve);
        };
        process.on('SIGTERM', onSignal);
        process.on('SIGINT', onSignal);
      });
      logger.info('agent stopped');
    });
}
