/**
 * `keel router --pool`: the flags of the pooled rw endpoint (PgBouncer in
 * transaction mode beside the router's rw and ro) and its start.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { describeError, KeelError } from '../errors.js';
import type { RouteSink } from '../router/control.js';
import type { RouterEngine } from '../router/engines/types.js';
import type { Routes } from '../router/route.js';
import { loginsFromPassfile } from '../router/pool/config.js';
import { defaultPgbouncerBinary, Pgbouncer } from '../router/pool/pgbouncer.js';
import { PooledEndpoint } from '../router/pool/pool.js';
import type { Logger } from '../util/log.js';
import { systemUser } from '../util/os-user.js';
import type { FileOwner } from '../util/safe-file.js';
import { parseListenAddress } from './router.js';

export interface PoolFlags {
  pool?: string;
  poolCert?: string;
  poolKey?: string;
  poolCacert?: string;
  poolPassfile?: string;
  poolDatabases: string;
  poolSize: string;
  poolOsUser?: string;
  pgbouncer: string;
}

export interface PoolSettings {
  listen: { host: string; port: number };
  tls: { cert: string; key: string; ca: string };
  passfile: string;
  databases: string[];
  poolSize: number;
  /** the OS user PgBouncer runs as (postgres when the router is root) */
  osUser: string | null;
  binary: string;
}

/** The pool's settings, or null without --pool; flags that need --pool, or each other, are usage errors. */
export function poolSettings(flags: PoolFlags): PoolSettings | null {
  const files = { '--pool-cert': flags.poolCert, '--pool-key': flags.poolKey, '--pool-cacert': flags.poolCacert, '--pool-passfile': flags.poolPassfile };
  if (flags.pool === undefined) {
    const stray = Object.entries(files).find(([, value]) => value !== undefined);
    if (stray !== undefined) throw new KeelError('KEEL_USAGE', `${stray[0]} needs --pool host:port`);
    return null;
  }
  const missing = Object.entries(files).filter(([, value]) => value === undefined).map(([flag]) => flag);
  if (missing.length > 0) {
    throw new KeelError('KEEL_USAGE', `--pool needs ${missing.join(', ')}`, {
      hint: "the pool serves TLS with --pool-cert/--pool-key, checks PostgreSQL's certificate against --pool-cacert and takes its logins from --pool-passfile (a libpq password file)",
    });
  }
  const databases = flags.poolDatabases.split(',').map((d) => d.trim());
  if (databases.some((d) => !/^[A-Za-z_][A-Za-z0-9_]{0,62}$/.test(d))) {
    throw new KeelError('KEEL_USAGE', `--pool-databases ${JSON.stringify(flags.poolDatabases)} is not a list of database names`, { hint: 'e.g. --pool-databases app,reports' });
  }
  const poolSize = Number(flags.poolSize);
  if (!/^\s*\d+\s*$/.test(flags.poolSize) || poolSize < 1 || poolSize > 10_000) {
    throw new KeelError('KEEL_USAGE', `--pool-size must be a whole number from 1 to 10000 (got ${JSON.stringify(flags.poolSize)})`);
  }
  return {
    listen: parseListenAddress(flags.pool, '--pool'),
    tls: { cert: resolve(flags.poolCert!), key: resolve(flags.poolKey!), ca: resolve(flags.poolCacert!) },
    passfile: resolve(flags.poolPassfile!),
    databases,
    poolSize,
    osUser: flags.poolOsUser ?? (process.getuid?.() === 0 ? 'postgres' : null),
    binary: flags.pgbouncer,
  };
}

/** The pool's own OS user, by its ids; none when it is this process's. */
async function poolOwner(osUser: string | null): Promise<FileOwner | null> {
  if (osUser === null) return null;
  const owner = await systemUser(osUser);
  if (owner === null) throw new KeelError('KEEL_CONFIG_INVALID', `OS user ${JSON.stringify(osUser)} (--pool-os-user) does not exist`, { hint: 'PgBouncer refuses to run as root: give it a user, e.g. postgres' });
  return owner.uid === process.getuid?.() ? null : owner;
}

export interface RunningPool {
  endpoint: PooledEndpoint;
  stop(): Promise<void>;
}

/** Starts PgBouncer (without a database until the first rw route) and the endpoint that steers it. */
export async function startPool(settings: PoolSettings, limits: { maxConnections: number; connectTimeoutMs: number; waitTimeoutMs: number }, logger: Logger, onExit: (detail: string) => void): Promise<RunningPool> {
  let text: string;
  try {
    text = readFileSync(settings.passfile, 'utf8');
  } catch (err) {
    throw new KeelError('KEEL_CONFIG_UNREADABLE', `--pool-passfile ${settings.passfile} cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  const bouncer = new Pgbouncer(
    {
      binary: settings.binary,
      listen: settings.listen,
      databases: settings.databases,
      tls: settings.tls,
      logins: loginsFromPassfile(text, settings.passfile),
      runAs: await poolOwner(settings.osUser),
      maxClientConnections: limits.maxConnections,
      poolSize: settings.poolSize,
      connectTimeoutMs: limits.connectTimeoutMs,
      // a query waits in the pool as long as a new connection waits at rw
      queryWaitTimeoutMs: Math.max(limits.waitTimeoutMs, 1000),
      onExit,
    },
    logger.child({ pool: 'pgbouncer' }),
  );
  await bouncer.start();
  // keel certs rotate renews --pool-cert in place and sends SIGHUP
  process.on('SIGHUP', () => {
    bouncer.reloadTls().then(
      () => logger.info({ signal: 'SIGHUP' }, "the pool's certificate read again: new connections use it"),
      (err: unknown) => logger.error({ signal: 'SIGHUP', err: describeError(err) }, "kept the pool's certificate in use"),
    );
  });
  const endpoint = new PooledEndpoint(bouncer, logger.child({ pool: 'rw' }));
  logger.info({ pool: `${settings.listen.host}:${settings.listen.port}`, databases: settings.databases }, 'pooled rw endpoint listening (PgBouncer, transaction mode)');
  return {
    endpoint,
    stop: async () => {
      await endpoint.stop();
      await bouncer.stop();
    },
  };
}

/** The engine, then the pool: the pool never delays the engine (a PAUSE may wait for transactions in flight). */
export function withPool(engine: RouterEngine, pool: RunningPool | null): RouteSink {
  if (pool === null) return engine;
  return {
    apply: async (routes) => {
      void pool.endpoint.follow(routes);
      await engine.apply(routes);
    },
  };
}

/**
 * What the router's key reports after each apply: with a pool, a hold counts
 * only once PgBouncer is paused as well (new queries wait there too). A report
 * overtaken by a newer apply is dropped, so an old hold never overwrites a
 * newer state.
 */
export function holdReporter(pool: RunningPool | null, report: (holding: number | null) => void): (routes: Routes) => void {
  let latest = 0;
  return (routes) => {
    const seq = ++latest;
    const ready = routes.holdingFor !== null && pool !== null ? pool.endpoint.follow(routes).catch(() => undefined) : Promise.resolve();
    void ready.then(() => {
      if (seq === latest) report(routes.holdingFor);
    });
  };
}

export function addPoolOptions(command: Command): Command {
  return command
    .option('--pool <host:port>', 'also serve a pooled read-write endpoint there: PgBouncer in transaction mode, paused and moved on a switchover')
    .option('--pool-cert <file>', "with --pool: the certificate the pool presents to clients (TLS is required)")
    .option('--pool-key <file>', 'with --pool: the key of --pool-cert')
    .option('--pool-cacert <file>', "with --pool: the CA PostgreSQL's certificates are checked against (verify-full)")
    .option('--pool-passfile <file>', 'with --pool: a libpq password file naming each user the pool lets in (SCRAM) and logs in as')
    .option('--pool-databases <names>', 'with --pool: the databases served, comma-separated', 'app')
    .option('--pool-size <n>', 'with --pool: server connections per database and user', '20')
    .option('--pool-os-user <user>', 'with --pool: the OS user PgBouncer runs as (default: postgres when the router runs as root)')
    .option('--pgbouncer <path>', 'with --pool: the PgBouncer binary', defaultPgbouncerBinary);
}
