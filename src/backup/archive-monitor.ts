/**
 * The agent's eye on WAL archiving. On its own timer (the loop must stay
 * quick), while this node's PostgreSQL runs as primary, it makes sure the
 * stanza exists in the repository (after a bootstrap, and after each
 * promotion: creating it again is a check), reads pg_stat_archiver, and turns
 * a failure into an event; the agent publishes the status in its member key
 * and the REST API's /metrics shows it.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { NodeConfig } from '../config/schema.js';
import type { Dcs } from '../dcs/types.js';
import { describeError } from '../errors.js';
import type { MemberArchive } from '../model/values.js';
import { parseLsn } from '../model/lsn.js';
import { stanzaOf } from '../postgres/archiving.js';
import { nodeLayout } from '../postgres/conf.js';
import { LocalSession, Unreachable } from '../postgres/sql.js';
import type { Clock } from '../util/clock.js';
import type { Logger } from '../util/log.js';
import { fillArchiveGap } from './archive-gap.js';
import { archiveStatus, archiveTransition, type ArchiverReading } from './archive-status.js';
import { isLockBusy, Pgbackrest } from './pgbackrest.js';

/** samples (2 s apart) a new failure waits for pgBackRest's reason before it is reported without one */
const detailWaitSamples = 3;

const archiverQuery = `
SELECT pg_is_in_recovery() AS in_recovery,
       a.archived_count::text AS archived_count, a.last_archived_wal,
       (extract(epoch FROM a.last_archived_time) * 1000)::bigint::text AS last_archived_ms,
       a.failed_count::text AS failed_count, a.last_failed_wal,
       (extract(epoch FROM a.last_failed_time) * 1000)::bigint::text AS last_failed_ms,
       CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END AS current_lsn,
       (SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name ~ '^[0-9A-F]{24}\\.ready$')::int AS ready_segments,
       (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size')::text AS segment_bytes
FROM pg_stat_archiver a`;

interface ArchiverRow {
  in_recovery: boolean;
  archived_count: string;
  last_archived_wal: string | null;
  last_archived_ms: string | null;
  failed_count: string;
  last_failed_wal: string | null;
  last_failed_ms: string | null;
  current_lsn: string | null;
  ready_segments: number;
  segment_bytes: string;
}

const stanzaRetryMs = 30_000;
/** the lock of the archiving already under way after a promotion: taken again shortly, not news */
const lockedRetryMs = 2000;

export class ArchiveMonitor {
  private readonly session: LocalSession;
  private readonly pgbackrest: Pgbackrest;
  private latest: MemberArchive | undefined;
  private timer: NodeJS.Timeout | null = null;
  private sampling = false;
  /** the stanza was created or confirmed since this node last became primary */
  private stanzaReady = false;
  /**
   * The last sample found a replica. The first sample of a primary after one (a promotion) leaves pgBackRest
   * alone: `pgbackrest info` and the gap's pushes take 40-100 ms of CPU, and the first second after a
   * promotion is when every held client logs in to the new leader. The next sample, 2 s on, asks.
   */
  private wasReplica = false;
  /** failures before this were pushes made before the stanza existed */
  private stanzaReadyAtMs = 0;
  private stanzaBusy = false;
  private nextStanzaAttemptMs = 0;
  private lastStanzaError = '';
  /** the last archive event said archiving fails */
  private reportedFailing = false;
  /** samples in a row that saw a new failure but not pgBackRest's reason for it */
  private samplesWithoutDetail = 0;

  constructor(
    private readonly config: NodeConfig,
    private readonly dcs: Pick<Dcs, 'addEvent'>,
    private readonly clock: Clock,
    private readonly logger: Logger,
    private readonly intervalMs = 2000,
  ) {
    const layout = nodeLayout(config);
    const { superuser } = config.postgres;
    this.session = new LocalSession({ host: layout.socketDir, port: config.postgres.port, user: superuser.username, password: superuser.password }, logger, layout.dataDir);
    this.pgbackrest = Pgbackrest.forNode(config);
  }

  start(): void {
    this.timer = setInterval(() => void this.sample(), this.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.session.close();
  }

  /** The last reading, while this node is primary and the reading is recent. */
  current(): MemberArchive | undefined {
    if (this.latest === undefined || this.clock.now() - this.latest.atMs > 3 * this.intervalMs) return undefined;
    return this.latest;
  }

  async sample(): Promise<void> {
    if (this.sampling) return;
    this.sampling = true;
    try {
      const reading = await this.read();
      if (reading === null || reading === 'replica') {
        // a replica (or a stopped node): a promotion makes sure of the stanza again
        this.latest = undefined;
        this.stanzaReady = false;
        if (reading === 'replica') this.wasReplica = true;
        return;
      }
      const next = archiveStatus(reading, this.clock.now());
      this.latest = next;
      if (!this.stanzaReady) {
        // pushes fail until the stanza exists (right after a bootstrap): that is stanza-create's to report;
        // promoted since the last sample (a replica reading left stanzaReady false): the next sample asks
        if (!this.wasReplica) this.ensureStanza();
        else this.logger.info('promoted since the last reading: the stanza is looked at in the next one, clear of the clients logging in now');
        this.wasReplica = false;
        return;
      }
      // PostgreSQL retries a push that failed before the stanza existed within a minute: not news
      if (next.state === 'failing' && (next.lastFailedAtMs ?? 0) < this.stanzaReadyAtMs) return;
      const detail = next.state === 'failing' && !this.reportedFailing ? await this.failureDetail(next.lastFailedWal) : null;
      // pgBackRest writes its reason a moment after PostgreSQL counts the failure, and clears it as a push starts
      // again: a few samples more for it before the event goes out without one
      this.samplesWithoutDetail = next.state === 'failing' && !this.reportedFailing && detail === null ? this.samplesWithoutDetail + 1 : 0;
      if (this.samplesWithoutDetail > 0 && this.samplesWithoutDetail < detailWaitSamples) return;
      const event = archiveTransition(this.config.name, this.reportedFailing, next, detail);
      if (event !== null) {
        this.reportedFailing = event.kind === 'archive-failed';
        this.logger.warn({ kind: event.kind }, event.message);
        await this.dcs.addEvent({ atMs: this.clock.now(), source: this.config.name, kind: event.kind, message: event.message });
      }
    } catch (err) {
      this.logger.warn({ err: describeError(err) }, 'could not read the WAL archiver');
    } finally {
      this.sampling = false;
    }
  }

  /** 'replica' when PostgreSQL is in recovery, null when it does not answer. */
  private async read(): Promise<ArchiverReading | 'replica' | null> {
    let row: ArchiverRow | undefined;
    try {
      [row] = await this.session.query<ArchiverRow>(archiverQuery);
    } catch (err) {
      if (err instanceof Unreachable) return null;
      throw err;
    }
    if (row?.in_recovery === true) return 'replica';
    if (row === undefined || row.current_lsn === null) return null;
    const ms = (text: string | null) => (text === null ? null : Number(text));
    return {
      archivedCount: Number(row.archived_count),
      lastArchivedWal: row.last_archived_wal,
      lastArchivedAtMs: ms(row.last_archived_ms),
      failedCount: Number(row.failed_count),
      lastFailedWal: row.last_failed_wal,
      lastFailedAtMs: ms(row.last_failed_ms),
      currentLsn: parseLsn(row.current_lsn),
      readySegments: row.ready_segments,
      segmentBytes: Number(row.segment_bytes),
    };
  }

  /**
   * In the background, the repository learns of this database: stanza-create, unless `pgbackrest info` (which
   * takes no lock) shows the stanza there for this database already, as after every promotion but a
   * bootstrap's. stanza-create holds the archive lock: an asynchronous push that starts meanwhile gives up
   * without a word for the segment it was to push, and PostgreSQL's archive_command waits out pgBackRest's
   * archive-timeout (60 s), and a shutdown with it (a switchover's old leader stayed up a minute).
   */
  private ensureStanza(): void {
    if (this.stanzaBusy || this.clock.now() < this.nextStanzaAttemptMs) return;
    this.stanzaBusy = true;
    void (async () => {
      if (!(await this.stanzaKnown().catch(() => false))) await this.pgbackrest.stanzaCreate();
    })()
      .then(async () => {
        this.stanzaReady = true;
        this.stanzaReadyAtMs = this.clock.now();
        this.lastStanzaError = '';
        this.logger.info({ stanza: this.pgbackrest.stanza }, 'the stanza is ready in the repository: WAL archiving can run');
        await this.wakeArchiver();
        await this.dcs.addEvent({ atMs: this.clock.now(), source: this.config.name, kind: 'stanza', message: `${this.config.name} is primary: stanza ${this.pgbackrest.stanza} is ready in the repository` });
        await this.fillGap();
      })
      .catch(async (err: unknown) => {
        const message = describeError(err).replace(/\s*\n\s*/g, '; ');
        if (isLockBusy(message)) {
          this.nextStanzaAttemptMs = this.clock.now() + lockedRetryMs;
          this.logger.info('stanza-create waits for the archiving under way (its lock)');
          return;
        }
        this.nextStanzaAttemptMs = this.clock.now() + stanzaRetryMs;
        this.logger.warn({ err: message }, 'stanza-create failed; trying again in 30 s');
        if (message === this.lastStanzaError) return;
        this.lastStanzaError = message;
        await this.dcs.addEvent({ atMs: this.clock.now(), source: this.config.name, kind: 'stanza-failed', message: `${this.config.name} cannot create the stanza: ${message}` });
      })
      .finally(() => {
        this.stanzaBusy = false;
      });
  }

  /** The repository holds the stanza (with or without backups), and its database is this one. */
  private async stanzaKnown(): Promise<boolean> {
    const [row] = await this.session.query<{ id: string }>('SELECT system_identifier::text AS id FROM pg_control_system()');
    const stanza = await this.pgbackrest.info();
    return (stanza.statusCode === 0 || stanza.statusCode === 2) && row !== undefined && stanza.systemId === row.id;
  }

  /**
   * PostgreSQL's archiver sleeps up to a minute after three failed pushes in a
   * row, which is what every push made before the stanza existed does; any
   * signal wakes it, and a configuration reload is a harmless one.
   */
  private async wakeArchiver(): Promise<void> {
    await this.session.query('SELECT pg_reload_conf()').catch((err: unknown) => this.logger.warn({ err: describeError(err) }, 'could not wake the WAL archiver'));
  }

  /** After a promotion: the segments of the previous timeline the old leader had not archived (archive-gap.ts). */
  private async fillGap(): Promise<void> {
    try {
      const [row] = await this.session.query<{ tli: number; segment_bytes: string }>(
        "SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int AS tli, pg_size_bytes(current_setting('wal_segment_size'))::text AS segment_bytes",
      );
      const outcome = row === undefined ? null : await fillArchiveGap(nodeLayout(this.config).dataDir, row.tli, Number(row.segment_bytes), this.pgbackrest);
      if (outcome === null) return;
      this.logger.info({ timeline: outcome.timeline, pushed: outcome.pushed.length, present: outcome.present }, 'previous timeline checked against the archive');
      if (outcome.pushed.length === 0) return;
      const range = outcome.pushed.length === 1 ? outcome.pushed[0] : `${outcome.pushed[0]} to ${outcome.pushed[outcome.pushed.length - 1]}`;
      const message = `${this.config.name} archived ${outcome.pushed.length} segment(s) of timeline ${outcome.timeline} that the old leader had not (${range})`;
      await this.dcs.addEvent({ atMs: this.clock.now(), source: this.config.name, kind: 'archive-gap', message });
    } catch (err) {
      const message = `${this.config.name} could not archive what the old leader had not: ${describeError(err).replace(/\s*\n\s*/g, '; ')}`;
      this.logger.warn(message);
      await this.dcs.addEvent({ atMs: this.clock.now(), source: this.config.name, kind: 'archive-gap-failed', message });
    }
  }

  /** pgBackRest's reason for a failed push, from the status file its asynchronous push leaves. */
  private async failureDetail(wal: string | null): Promise<string | null> {
    if (this.pgbackrest.paths === null) return null;
    const out = join(this.pgbackrest.paths.spool, 'archive', stanzaOf(this.config), 'out');
    // an error of one WAL file, or one of the whole push (the repository unreachable)
    let text: string | null = null;
    for (const name of [...(wal === null ? [] : [`${wal}.error`]), 'global.error']) {
      text ??= await readFile(join(out, name), 'utf8').catch(() => null);
    }
    if (text === null) return null;
    // first line: the error code; then the message, its most precise cause last, then hints
    const lines = text.split('\n').slice(1).map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('HINT:'));
    if (lines.length === 0) return null;
    const said = lines.length === 1 ? lines[0]! : `${lines[0]} ... ${lines[lines.length - 1]}`;
    return said.slice(0, 400);
  }
}
