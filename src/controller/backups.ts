/**
 * The controller's backup schedule: while it is the active controller, it
 * takes the backup the spec's schedule makes due (backup-plan.ts), one at a
 * time under the cluster's `backup` key, from a streaming replica when there
 * is one. A backup that fails (a failover under it, a replica gone) is taken
 * again, from the members there are then, after a delay that grows with each
 * failure in a row. It runs beside the controller's loop, never in it.
 *
 * Backups run where the nodes' files are: only a provider that can give a
 * node's configuration on this machine (the local one) can take them.
 */
import type { NodeConfig } from '../config/schema.js';
import type { Dcs } from '../dcs/types.js';
import { describeError, isKeelError, KeelError } from '../errors.js';
import type { BackupPolicy } from '../model/values.js';
import type { Clock } from '../util/clock.js';
import type { Logger } from '../util/log.js';
import type { Provider } from '../providers/types.js';
import { Pgbackrest } from '../backup/pgbackrest.js';
import { runBackup } from '../backup/runner.js';
import { dueBackup, retryDelayMs, type TakenBackup } from './backup-plan.js';

export interface BackupSchedulerOptions {
  /** the controller's name: the runner of its backups is `controller NAME` */
  name: string;
  dcs: Dcs;
  /** the node.yml of a node whose files are on this machine; null when there is none */
  nodeConfig: (name: string) => NodeConfig | null;
  clock: Clock;
  logger: Logger;
  /** how often the repository's list of backups is read again when nothing ran */
  infoEveryMs?: number;
}

/** The scheduler of a controller whose provider keeps its nodes' files on this machine; null for any other. */
export function backupScheduler(o: { name: string; dcs: Dcs; provider: Provider | null; clock: Clock; logger: Logger }): BackupScheduler | null {
  const provider = o.provider;
  if (provider?.localNodeConfig === undefined) return null;
  return new BackupScheduler({ name: o.name, dcs: o.dcs, clock: o.clock, logger: o.logger, nodeConfig: (name) => provider.localNodeConfig!(name) });
}

/** A busy lock (someone's `keel backup now`) is tried again this soon, and not counted as a failure. */
const busyRetryMs = 15_000;

export class BackupScheduler {
  private running: Promise<void> | null = null;
  private stop: AbortController | null = null;
  private taken: TakenBackup[] | null = null;
  private infoAtMs = 0;
  private reading = false;
  private failuresInARow = 0;
  private notBeforeMs = 0;
  private readonly infoEveryMs: number;

  constructor(private readonly o: BackupSchedulerOptions) {
    this.infoEveryMs = o.infoEveryMs ?? 60_000;
  }

  /** One look at the schedule; starts the due backup beside the caller. `members`: the cluster's member names. */
  tick(policy: BackupPolicy | undefined, members: readonly string[]): void {
    if (policy === undefined || this.running !== null || this.reading) return;
    if (policy.full === null && policy.diff === null && policy.incr === null) return;
    const now = this.o.clock.now();
    if (this.taken === null || now - this.infoAtMs >= this.infoEveryMs) {
      this.readRepository(members);
      return;
    }
    if (now < this.notBeforeMs) return;
    const due = dueBackup(policy, this.taken, now);
    if (due === null) return;
    this.start(due.type, due.reason, policy.retentionFull);
  }

  /** Stops a backup in progress (the controller stands down or stops); resolves once it ended. */
  async abort(): Promise<void> {
    this.stop?.abort();
    await this.running?.catch(() => undefined);
  }

  private readRepository(members: readonly string[]): void {
    const config = members.map((name) => this.o.nodeConfig(name)).find((c): c is NodeConfig => c?.backup !== undefined);
    if (config === undefined) return;
    this.reading = true;
    void Pgbackrest.forNode(config)
      .info()
      .then((info) => {
        this.taken = info.backups.map((b) => ({ type: b.type, startMs: b.startMs }));
        this.infoAtMs = this.o.clock.now();
      })
      .catch((err: unknown) => this.o.logger.warn({ err: describeError(err) }, 'cannot read the backup repository'))
      .finally(() => {
        this.reading = false;
      });
  }

  private start(type: TakenBackup['type'], reason: string, retentionFull: number): void {
    const stop = new AbortController();
    this.stop = stop;
    const by = `controller ${this.o.name}`;
    let shown = -1;
    this.o.logger.info({ type }, `scheduled backup: ${reason}`);
    this.running = runBackup({
      dcs: this.o.dcs,
      by,
      type,
      retentionFull,
      configOf: (member) => {
        const config = this.o.nodeConfig(member);
        if (config === null) throw new KeelError('KEEL_BACKUP_UNCONFIGURED', `no configuration of ${member} on this machine`);
        return config;
      },
      clock: this.o.clock,
      logger: this.o.logger,
      signal: stop.signal,
      onProgress: (percent) => {
        const step = Math.floor(percent / 10) * 10;
        if (step > shown) this.o.logger.info({ type, percent: step }, `backup progress: ${step} % of the files copied`);
        shown = Math.max(shown, step);
      },
    })
      .then(() => {
        this.failuresInARow = 0;
        this.notBeforeMs = 0;
      })
      .catch(async (err: unknown) => {
        if (isKeelError(err) && err.code === 'KEEL_BACKUP_BUSY') {
          this.notBeforeMs = this.o.clock.now() + busyRetryMs;
          this.o.logger.info({ err: describeError(err) }, 'the scheduled backup waits for the one running');
          return;
        }
        this.failuresInARow += 1;
        const delayMs = retryDelayMs(this.failuresInARow);
        this.notBeforeMs = this.o.clock.now() + delayMs;
        const message = `the scheduled ${type} backup failed (${this.failuresInARow} in a row): taking it again in ${Math.round(delayMs / 1000)} s`;
        this.o.logger.warn({ err: describeError(err) }, message);
        if (!stop.signal.aborted) await this.o.dcs.addEvent({ atMs: this.o.clock.now(), source: by, kind: 'backup-retry', message });
      })
      .finally(() => {
        // what the repository holds now decides the next one
        this.taken = null;
        this.running = null;
        this.stop = null;
      });
  }
}
