/**
 * The agent's handle on the PostgreSQL of this node: runs PostgreSQL's
 * programs as the cluster's OS user, keeps its conf files (node-files.ts), and reads state
 * over one local superuser connection.
 */
import { existsSync, readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { defaultWalSegmentMb, type NodeConfig } from '../config/schema.js';
import { KeelError, redactSecrets } from '../errors.js';
import type { Logger } from '../util/log.js';
import { sleep } from '../util/clock.js';
import { buildConninfo, nodeLayout, primaryConninfo, shortRetryMs, tlsConninfo, tlsEnvironment, socketPath, type NodeLayout } from './conf.js';
import { ControlDataCache } from './controldata.js';
import { historyFileName, historyFileText, readSwitchPoint } from './history.js';
import { dataDirState, isPostmasterAlive, livePostmasterPid, newestHistoryTimeline, prepareNodeDirs, removeLocksOfZombiePostmaster, signalShutdown } from './datadir.js';
import { NodeFiles } from './node-files.js';
import { reloadConf, settingsAre, type SessionQuery } from './reload.js';
import { ArchiverWait } from './archiver-wait.js';
import { acceptQueue, startingBackends } from './postmaster.js';
import { ensureOwnedDir, lastLines, Programs, resolveRunAs, tailOfFile, writeOwnedFile, type RunAs } from './programs.js';
import { busyClientsQuery, checkpointIfTimelineLags, ensureClusterObjects, LocalSession, physicalSlotsQuery, runtimeStateQuery, toBusyClients, toRuntimeState, Unreachable, type BusyRow, type Connection, type RuntimeRow } from './sql.js';
import type { BusyClients, ControlData, DataDirState, Postgres, PromoteOptions, RuntimeState, StartOptions, StopMode, UpstreamTarget } from './types.js';

const waitSeconds = '60';
/** how long a stop may take, and how often the waits below look again */
const stopWaitMs = 65_000;
/** How long a fast stop lets a postmaster past its shutdown checkpoint wait on its archiver alone (archiver-wait.ts). */
const archiverGraceMs = 5000;
const pollMs = 20;
/** the end of a promotion is looked for more often: the routers wait for it */
const promotionPollMs = 5;
/**
 * A standby is ready once consistent, which needs its upstream; while that
 * is unreachable the start would block the agent for the whole wait. The
 * postmaster keeps trying by itself and the loop watches it.
 */
const standbyStartWaitSeconds = '10';

function sqlFailure(what: string, err: unknown): KeelError {
  if (err instanceof KeelError) return err;
  const reason = err instanceof Unreachable ? `cannot connect: ${err.message}` : (err as Error).message;
  return new KeelError('KEEL_POSTGRES_FAILED', `${what} failed: ${redactSecrets(reason)}`, { cause: err });
}

export class LocalPostgres implements Postgres {
  readonly dataDir: string;
  private readonly layout: NodeLayout;
  private readonly runAs: RunAs | null;
  private readonly programs: Programs;
  private readonly session: LocalSession;
  private readonly logger: Logger;
  private readonly files: NodeFiles;
  private dirsReady = false;
  private readonly control: ControlDataCache;

  constructor(
    private readonly config: NodeConfig,
    logger: Logger,
  ) {
    this.layout = nodeLayout(config);
    this.dataDir = this.layout.dataDir;
    this.runAs = resolveRunAs(config);
    this.programs = new Programs(config.postgres.binDir, this.runAs, this.layout.nodeDir);
    this.files = new NodeFiles(config, this.layout, this.runAs);
    // the labels parseControlData looks for are only stable in the C locale
    const runControlData = async () => (await this.programs.run('pg_controldata', ['-D', this.dataDir], { env: { LC_ALL: 'C' } })).output;
    this.control = new ControlDataCache(join(this.dataDir, 'global', 'pg_control'), runControlData);
    this.logger = logger.child({ component: 'postgres', dataDir: this.dataDir });
    if (!config.tls) this.logger.warn('TLS is off: node.yml has no tls block, so PostgreSQL accepts scram-sha-256 over plain TCP and connections to other nodes are not verified');
    this.session = new LocalSession(this.localConnection(), this.logger, this.dataDir);
  }

  private localConnection(): Connection {
    return this.connectionTo(this.layout.socketDir, this.config.postgres.port);
  }

  private connectionTo(host: string, port: number): Connection {
    const { superuser } = this.config.postgres;
    return { host, port, user: superuser.username, password: superuser.password };
  }

  /** pg_rewind's role on another node (the superuser only when no rewind role is configured), verify-full with TLS. */
  private rewindSource(from: UpstreamTarget): Connection {
    const { rewind, superuser } = this.config.postgres;
    const role = rewind ?? superuser;
    const caPem = this.config.tls ? readFileSync(this.config.tls.ca, 'utf8') : undefined;
    return { host: from.host, port: from.port, user: role.username, password: role.password, ...(caPem === undefined ? {} : { caPem }) };
  }

  // ---- observing -----------------------------------------------------------

  dataDirState(): Promise<DataDirState> {
    return dataDirState(this.dataDir);
  }

  async controlData(): Promise<ControlData | null> {
    const control = await this.control.read();
    return control === null ? null : { ...control, backupLabel: existsSync(join(this.dataDir, 'backup_label')) };
  }

  postmasterPid(): Promise<number | null> {
    return livePostmasterPid(this.dataDir);
  }

  async runtimeState(): Promise<RuntimeState | null> {
    try {
      const [row] = await this.session.query<RuntimeRow>(runtimeStateQuery);
      return row ? toRuntimeState(row) : null;
    } catch (err) {
      if (err instanceof Unreachable) return null;
      throw sqlFailure('reading the runtime state', err);
    }
  }

  // ---- creating a data directory ---------------------------------------------

  async initdb(): Promise<void> {
    await this.requireNoData('initdb');
    await this.prepareDirs();
    await ensureOwnedDir(this.dataDir, 0o700, this.runAs);
    const pwfile = join(this.layout.nodeDir, `.initdb-pwfile-${process.pid}`);
    await writeOwnedFile(pwfile, `${this.config.postgres.superuser.password}\n`, 0o600, this.runAs);
    try {
      this.logger.info('initdb');
      await this.programs.run('initdb', [
        '-D', this.dataDir, '-U', this.config.postgres.superuser.username, `--pwfile=${pwfile}`,
        '-k', '-E', 'UTF8', '--locale=C.UTF-8',
        '--auth-local=scram-sha-256', '--auth-host=scram-sha-256',
        `--wal-segsize=${this.config.bootstrap.walSegmentMb ?? defaultWalSegmentMb}`,
      ]);
    } finally {
      await rm(pwfile, { force: true });
    }
    await this.files.adopt(null);
  }

  async basebackup(from: UpstreamTarget): Promise<void> {
    await this.requireNoData('pg_basebackup');
    await this.prepareDirs();
    await this.files.writePgpass(from);
    await ensureOwnedDir(this.dataDir, 0o700, this.runAs);
    this.logger.info({ upstream: from.name, host: from.host, port: from.port }, 'pg_basebackup');
    try {
      await this.programs.run(
        'pg_basebackup',
        ['-D', this.dataDir, '-h', from.host, '-p', String(from.port), '-U', this.config.postgres.replication.username,
          '-X', 'stream', '--checkpoint=fast', '--no-password'],
        { env: { PGPASSFILE: this.layout.pgpassPath, PGCONNECT_TIMEOUT: '10', PGAPPNAME: this.config.name, ...tlsEnvironment(this.config, this.config.postgres.replication) } },
      );
    } catch (err) {
      // Only ever a fresh clone of our own cluster: a partial copy is worth nothing.
      await rm(this.dataDir, { recursive: true, force: true });
      throw err;
    }
    // the upstream's conf (and its synchronous_standby_names) came along: it is not ours
    await this.files.adopt(from);
  }

  async rewind(from: UpstreamTarget): Promise<void> {
    const pid = await this.postmasterPid();
    if (pid !== null) throw new KeelError('KEEL_POSTGRES_FAILED', `pg_rewind needs a stopped instance, but postmaster ${pid} runs`);
    await this.prepareDirs();
    await this.files.writePgpass(from);
    const sourceRole = this.rewindSource(from);
    const source = buildConninfo([
      ['host', from.host],
      ['port', from.port],
      ['user', sourceRole.user],
      ['dbname', 'postgres'],
      ['passfile', this.layout.pgpassPath],
      ...tlsConninfo(this.config),
      ['connect_timeout', 10],
    ]);
    try {
      await checkpointIfTimelineLags(sourceRole, this.logger);
    } catch (err) {
      throw sqlFailure(`preparing ${from.name} as the pg_rewind source`, err);
    }
    this.logger.info({ upstream: from.name, host: from.host, port: from.port }, 'pg_rewind');
    await this.programs.run('pg_rewind', ['-D', this.dataDir, `--source-server=${source}`]);
    // pg_rewind copied the source's conf files; make them this node's again.
    await this.files.adopt(from);
  }

  async removeDataDir(): Promise<void> {
    const pid = await this.postmasterPid();
    if (pid !== null) throw new KeelError('KEEL_POSTGRES_FAILED', `will not remove ${this.dataDir}: postmaster ${pid} runs on it`);
    this.logger.warn('removing the data directory');
    await rm(this.dataDir, { recursive: true, force: true });
  }

  // ---- running -----------------------------------------------------------------

  async start(options: StartOptions): Promise<void> {
    if ((await this.dataDirState()) !== 'present') {
      throw new KeelError('KEEL_POSTGRES_FAILED', `cannot start: ${this.dataDir} holds no data directory`);
    }
    await this.prepareDirs();
    const running = await this.postmasterPid();
    if (running !== null) {
      const state = await this.runtimeState().catch(() => null);
      if (state && state.inRecovery === options.replica) {
        this.logger.info({ pid: running }, 'already running in the wanted role: rewriting conf and reloading');
        await this.files.writeRole(options);
        await reloadConf(this.query, this.logger);
        return;
      }
      // Recovery mode only changes with a restart (and rule 5: never keep a primary we were not told to be).
      this.logger.warn({ pid: running, inRecovery: state?.inRecovery ?? null }, 'running in another role: restarting');
      await this.stop('fast');
    }
    await this.files.writeRole(options);
    await removeLocksOfZombiePostmaster(this.dataDir, `${socketPath(this.layout.socketDir, this.config.postgres.port)}.lock`, this.logger);
    this.logger.info({ replica: options.replica, upstream: options.upstream?.name ?? null }, 'pg_ctl start');
    // Detached: the postmaster must outlive the agent and not see the terminal's Ctrl-C.
    const result = await this.programs.run(
      'pg_ctl',
      ['start', '-D', this.dataDir, '-l', this.layout.logPath, '-w', '-t', options.replica ? standbyStartWaitSeconds : waitSeconds],
      { detached: true, allowFailure: true },
    );
    if (result.exitCode === 0) return;
    const pid = await this.postmasterPid();
    if (pid === null) {
      throw new KeelError('KEEL_POSTGRES_FAILED', `PostgreSQL did not start:\n${await this.logTail()}`);
    }
    // A standby that cannot become consistent (upstream unreachable) is still alive; the loop watches it.
    this.logger.warn({ pid, output: lastLines(result.output, 3) }, 'PostgreSQL runs but did not become ready in time');
  }

  /** A fast stop ends a wait on the archiver alone after archiverGraceMs. */
  async stop(mode: StopMode, options: { untilCheckpointed?: boolean } = {}): Promise<void> {
    // The agent's own session ends with the others: its backend's exit (40-130 ms of a switchover's pause) is
    // waited for after the signal, not before. close() never rejects.
    const closing = this.session.close();
    const pid = await this.postmasterPid();
    if (pid === null) return closing;
    // The signal pg_ctl stop -m MODE sends, without starting pg_ctl; and the wait below looks every
    // few ms where pg_ctl looks every 100 ms: a switchover waits on both.
    this.logger.info({ pid, mode }, 'stopping PostgreSQL');
    signalShutdown(pid, mode);
    const archiver = mode === 'fast' ? new ArchiverWait(pid, archiverGraceMs, this.logger) : null;
    const stopped = async () => {
      if (!isPostmasterAlive(pid)) return true;
      if ((options.untilCheckpointed !== true && archiver === null) || (await this.control.state()) !== 'shut down') return false;
      archiver?.endOnceOverdue();
      return options.untilCheckpointed === true;
    };
    if (!(await this.waitFor(stopped, stopWaitMs))) {
      throw new KeelError('KEEL_POSTGRES_FAILED', `postmaster ${pid} still runs ${stopWaitMs / 1000} s after a ${mode} shutdown was asked:\n${await this.logTail()}`);
    }
    await closing;
  }

  async promote({ synchronousStandbyNames, streamOnly = false, recorded = Promise.resolve(), inRecovery: known }: PromoteOptions = {}): Promise<void> {
    const inRecovery = known ?? (await this.inRecovery());
    if (inRecovery !== true) await recorded;
    if (inRecovery === null) throw new KeelError('KEEL_POSTGRES_FAILED', 'cannot promote: PostgreSQL does not accept connections');
    if (!inRecovery) return;
    // read beside the rest: only the wait after the request needs it
    const postmaster = this.postmasterPid().catch(() => null);
    this.logger.info(synchronousStandbyNames === undefined ? {} : { synchronousStandbyNames }, 'promoting');
    // One write and one reload for both, while `recorded` is written: the short retry interval reaches the startup
    // process before the request does (conf.ts, promotionRetryLine; a switchover's target has it already), and the
    // new primary names its standbys before it can take a write.
    const prepared = (async () => {
      const names: Record<string, string> = synchronousStandbyNames === undefined ? {} : { synchronous_standby_names: synchronousStandbyNames };
      const expected: Record<string, string> = { wal_retrieve_retry_interval: `${shortRetryMs}ms`, ...(streamOnly ? { restore_command: '' } : {}), ...names };
      const written = await this.files.writePromotionRetry(true, streamOnly, synchronousStandbyNames);
      // a switchover's target wrote and loaded all of it while the switchover was pending (decide-follower.ts)
      if (!written && (await settingsAre(this.query, expected))) return;
      await reloadConf(this.query, this.logger, expected);
    })();
    try {
      await Promise.all([prepared, recorded]);
    } catch (err) {
      await prepared.catch(() => undefined);
      await this.standbyAgain();
      throw err;
    }
    // Not waiting here (the wait below notices a fence that stopped the postmaster at once), nor a pg_ctl process to start.
    await this.sql('SELECT pg_promote(false)', [], 'promoting');
    const pid = await postmaster;
    let gone = false;
    const done = await this.waitFor(async () => {
      gone = pid === null || !isPostmasterAlive(pid);
      return gone || (await this.inRecovery()) === false;
    }, 60_000, promotionPollMs);
    if (gone) throw new KeelError('KEEL_POSTGRES_FAILED', `the postmaster stopped during promotion:\n${await this.logTail()}`);
    if (!done) {
      await this.standbyAgain();
      throw new KeelError('KEEL_POSTGRES_FAILED', `still in recovery 60 s after promotion:\n${await this.logTail()}`);
    }
  }

  /** A standby it stays: back to retrying its sources once a second, with restore_command. */
  private async standbyAgain(): Promise<void> {
    await this.files.writePromotionRetry(false).then(() => reloadConf(this.query, this.logger)).catch(() => undefined);
  }

  /** controlTimeline: the control file's timeline, when just read (saves running pg_controldata again) */
  async newestTimeline(controlTimeline?: number): Promise<number> {
    return Math.max(controlTimeline ?? (await this.controlData())?.timeline ?? 1, await newestHistoryTimeline(this.dataDir));
  }
  switchPoint = (timeline: number): Promise<number | null> => readSwitchPoint(this.dataDir, timeline);

  async reserveTimelines(next: number, known: readonly { timeline: number; switchLsn: number }[]): Promise<void> {
    const own = await this.newestTimeline();
    for (let timeline = own + 1; timeline < next; timeline++) {
      const path = join(this.dataDir, 'pg_wal', historyFileName(timeline));
      if (existsSync(path)) continue;
      this.logger.info({ timeline }, 'writing the history file of a timeline another node started, so this promotion takes a new one');
      await writeOwnedFile(path, historyFileText(timeline, known), 0o600, this.runAs);
    }
  }

  async follow(options: StartOptions): Promise<void> {
    if ((await this.dataDirState()) !== 'present') {
      throw new KeelError('KEEL_POSTGRES_FAILED', `cannot follow: ${this.dataDir} holds no data directory`);
    }
    await this.prepareDirs();
    await this.files.writeRole(options);
    if ((await this.postmasterPid()) === null) return;
    const expected = options.replica && options.upstream ? primaryConninfo(this.config, this.layout, options.upstream) : '';
    this.logger.info({ upstream: options.upstream?.name ?? null }, 'following: reloading conf');
    await reloadConf(this.query, this.logger, { primary_conninfo: expected });
  }

  // ---- SQL ---------------------------------------------------------------------

  async createClusterObjects(): Promise<void> {
    try {
      await ensureClusterObjects(this.localConnection(), this.config.postgres, this.logger);
    } catch (err) {
      throw sqlFailure('creating the cluster objects', err);
    }
  }

  async checkpoint(): Promise<void> {
    await this.sql('CHECKPOINT', [], 'checkpoint');
  }

  async busyClients({ acceptQueue: queue = true }: { acceptQueue?: boolean } = {}): Promise<BusyClients> {
    // listed first: one that logs in meanwhile is in the query's rows, one that finished meanwhile costs a poll
    const unaccepted = queue ? acceptQueue(this.config.postgres.port) : 0;
    const pid = await this.postmasterPid();
    const starting = pid === null ? [] : startingBackends(pid);
    return toBusyClients(await this.sql<BusyRow>(busyClientsQuery, [], 'listing busy client sessions'), starting, unaccepted);
  }

  async syncSlots(wanted: string[]): Promise<void> {
    const existing = await this.sql<{ name: string; active: boolean }>(physicalSlotsQuery, [], 'listing replication slots');
    const names = new Set(existing.map((slot) => slot.name));
    for (const name of wanted) {
      if (names.has(name)) continue;
      this.logger.info({ slot: name }, 'creating physical replication slot');
      // Reserve WAL at once so the replica's first connection finds what it needs.
      await this.sql('SELECT pg_create_physical_replication_slot($1, true)', [name], `creating slot ${name}`, ['42710']);
    }
    for (const slot of existing) {
      if (wanted.includes(slot.name) || slot.active) continue;
      this.logger.info({ slot: slot.name }, 'dropping physical replication slot');
      // 55006: it became active meanwhile; 42704: someone else dropped it.
      await this.sql('SELECT pg_drop_replication_slot($1)', [slot.name], `dropping slot ${slot.name}`, ['55006', '42704']);
    }
  }

  async setSynchronousStandbyNames(value: string): Promise<void> {
    await this.files.writeSynchronousStandbyNames(value);
    if ((await this.postmasterPid()) === null) return;
    this.logger.info({ synchronousStandbyNames: value }, 'setting synchronous_standby_names');
    await reloadConf(this.query, this.logger, { synchronous_standby_names: value });
  }

  /** Counters for agent/load.ts: transactions ever ended (all databases) and client backends now; null when unreachable. */
  async loadCounters(): Promise<{ transactions: number; connections: number } | null> {
    try {
      const [row] = await this.session.query<{ transactions: string | null; connections: string }>(
        `SELECT (SELECT sum(xact_commit + xact_rollback) FROM pg_stat_database)::text AS transactions,
                (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::text AS connections`,
      );
      return row ? { transactions: Number(row.transactions ?? 0), connections: Number(row.connections) } : null;
    } catch (err) {
      if (err instanceof Unreachable) return null;
      throw sqlFailure('reading load counters', err);
    }
  }

  async close(): Promise<void> {
    await this.session.close();
  }

  /** The one fact a promotion polls for, every few ms while the startup process needs the CPU; null: no answer. */
  private async inRecovery(): Promise<boolean | null> {
    return (await this.session.query<{ r: boolean }>('SELECT pg_is_in_recovery() AS r').catch(() => null))?.[0]?.r ?? null;
  }

  // ---- helpers -------------------------------------------------------------------

  private readonly query: SessionQuery = (text, values, what) => this.sql(text, values, what);
  private async sql<Row extends object>(text: string, values: unknown[], what: string, ignoredCodes: string[] = []): Promise<Row[]> {
    try {
      return await this.session.query<Row>(text, values);
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      if (typeof code === 'string' && ignoredCodes.includes(code)) return [];
      throw sqlFailure(what, err);
    }
  }


  private async waitFor(check: () => boolean | Promise<boolean>, timeoutMs: number, intervalMs = pollMs): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        if (await check()) return true;
      } catch {
        // not yet answerable: keep waiting
      }
      if (Date.now() >= deadline) return false;
      await sleep(intervalMs);
    }
  }

  private async requireNoData(what: string): Promise<void> {
    if ((await this.dataDirState()) === 'present') {
      throw new KeelError('KEEL_POSTGRES_FAILED', `${what} needs a missing or empty data directory, but ${this.dataDir} has files`);
    }
  }

  private async prepareDirs(): Promise<void> {
    if (this.dirsReady) return;
    await prepareNodeDirs(this.layout, this.runAs);
    this.dirsReady = true;
  }

  private logTail(): Promise<string> {
    return tailOfFile(this.layout.logPath);
  }
}
