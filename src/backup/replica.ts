/**
 * A new replica's data from the repository instead of the leader: pgBackRest
 * restores the newest backup as a standby (`--type=standby`, with `--delta`),
 * the WAL since comes from the archive, then the replica streams the rest
 * from the leader. The leader only serves what the archive does not hold yet,
 * which matters when its zone is far or its disk is busy.
 *
 * Taken when the spec says `replicaSource: backup` (the default) and the
 * cluster's repository holds a backup of this very database; otherwise, and
 * when the restore fails, the replica is cloned from the leader as before.
 */
import { readFile, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { NodeConfig } from '../config/schema.js';
import type { Dcs } from '../dcs/types.js';
import { describeError } from '../errors.js';
import { nodeLayout, withSynchronousStandbyNames } from '../postgres/conf.js';
import { dataDirState, prepareNodeDirs } from '../postgres/datadir.js';
import { ensureOwnedDir, resolveRunAs, writeOwnedFile } from '../postgres/programs.js';
import type { Clock } from '../util/clock.js';
import type { Logger } from '../util/log.js';
import { formatBytes } from './info.js';
import { Pgbackrest } from './pgbackrest.js';
import { withoutRecoverySettings } from './recovery.js';

export class ReplicaFromBackup {
  constructor(
    private readonly config: NodeConfig,
    private readonly dcs: Pick<Dcs, 'readSpec' | 'addEvent'>,
    private readonly clock: Clock,
    private readonly logger: Logger,
  ) {}

  /**
   * Restores the newest backup of the cluster whose system identifier is `systemId` into the (missing
   * or empty) data directory, as a standby; false, touching nothing, when the replica should be cloned
   * from the leader instead (the spec says so, no backup of this database, data already there).
   */
  async restore(systemId: string | null, leader: string): Promise<boolean> {
    const spec = await this.dcs.readSpec().catch(() => null);
    if ((spec?.value.backup?.replicaSource ?? 'backup') === 'leader' || systemId === null) return false;
    const layout = nodeLayout(this.config);
    const state = await dataDirState(layout.dataDir);
    if (state !== 'missing' && state !== 'empty') return false;
    const pgbackrest = Pgbackrest.forNode(this.config);
    const info = await pgbackrest.info().catch((err: unknown) => {
      this.logger.info({ err: describeError(err) }, 'the repository cannot be read: cloning from the leader');
      return null;
    });
    const newest = info?.backups[info.backups.length - 1];
    // a repository of another database (restored elsewhere, or reused) would make a replica of nothing here
    if (info === null || newest === undefined || info.systemId !== systemId) return false;

    const runAs = resolveRunAs(this.config);
    await prepareNodeDirs(layout, runAs);
    await ensureOwnedDir(layout.dataDir, 0o700, runAs);
    const startedMs = this.clock.now();
    this.logger.info({ backup: newest.label }, 'restoring the newest backup as a standby');
    try {
      await pgbackrest.run('restore', [`--pg1-path=${layout.dataDir}`, '--delta', '--type=standby', `--set=${newest.label}`]);
      // the restored conf names the standbys of the node the backup came from's leader: not this node's
      const confPath = join(layout.dataDir, 'postgresql.conf');
      await writeOwnedFile(confPath, withSynchronousStandbyNames(await readFile(confPath, 'utf8'), ''), 0o600, runAs);
      // Keel's conf sets restore_command and the timeline; pgBackRest's copy of them would win over it
      const autoConf = join(layout.dataDir, 'postgresql.auto.conf');
      const auto = await readFile(autoConf, 'utf8').catch(() => null);
      if (auto !== null) await writeOwnedFile(autoConf, withoutRecoverySettings(auto), 0o600, runAs);
    } catch (err) {
      this.logger.warn({ err: describeError(err) }, 'restoring the backup failed: cloning from the leader instead');
      for (const entry of await readdir(layout.dataDir).catch(() => [] as string[])) await rm(join(layout.dataDir, entry), { recursive: true, force: true });
      return false;
    }
    const seconds = Math.round((this.clock.now() - startedMs) / 100) / 10;
    const message = `${this.config.name} restored backup ${newest.label} (${formatBytes(newest.sizeBytes)}) in ${seconds} s; it replays the archived WAL, then streams from ${leader}`;
    this.logger.info(message);
    await this.dcs.addEvent({ atMs: this.clock.now(), source: this.config.name, kind: 'replica-from-backup', message });
    return true;
  }
}
