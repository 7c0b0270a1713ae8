/**
 * The files Keel writes into a node's data directory and beside it:
 * postgresql.conf (including the base conf an initdb or a copy brought),
 * pg_hba.conf, the signal files that decide how the next start goes, and the
 * pgpass file of connections to the upstream. Owned by PostgreSQL's OS user,
 * 0600.
 */
import { existsSync, lstatSync, readFileSync } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { NodeConfig } from '../config/schema.js';
import {
  buildPgHba,
  buildPgpass,
  buildPostgresqlConf,
  readSynchronousStandbyNames,
  withPromotionRetry,
  withSynchronousStandbyNames,
  type NodeLayout,
} from './conf.js';
import { readSmallFile } from './datadir.js';
import { instanceClassParameters } from './instance-class.js';
import { writeOwnedFile, type RunAs } from './programs.js';
import type { StartOptions, UpstreamTarget } from './types.js';

export class NodeFiles {
  private readonly confPath: string;

  constructor(
    private readonly config: NodeConfig,
    private readonly layout: NodeLayout,
    private readonly runAs: RunAs | null,
  ) {
    this.confPath = join(layout.dataDir, 'postgresql.conf');
  }

  /**
   * A data directory just made (initdb) or copied (pg_basebackup, pg_rewind): the conf it brought is kept as
   * the base Keel's includes, and Keel's is written for a start from `upstream` (null: a primary), with no
   * synchronous_standby_names (a copied one is the upstream's, not this node's).
   */
  async adopt(upstream: UpstreamTarget | null): Promise<void> {
    const base = join(this.layout.dataDir, 'postgresql.base.conf');
    if (!existsSync(base) && existsSync(this.confPath)) await rename(this.confPath, base);
    await this.writeConf({ replica: upstream !== null, upstream, slotName: this.config.name, parameters: {} }, '');
  }

  /** Conf files plus the signal file that decides whether the next start is a standby. */
  async writeRole(options: StartOptions): Promise<void> {
    await this.writeConf(options, options.synchronousStandbyNames);
    const standbySignal = join(this.layout.dataDir, 'standby.signal');
    if (options.replica) await this.write(standbySignal, '');
    else await rm(standbySignal, { force: true });
    // Keel never does targeted recovery; a stray recovery.signal would promote at the end of WAL.
    await rm(join(this.layout.dataDir, 'recovery.signal'), { force: true });
  }

  /** postgresql.conf with synchronous_standby_names set to `value`, the rest as it is. */
  async writeSynchronousStandbyNames(value: string): Promise<void> {
    const text = readFileSync(this.confPath, 'utf8');
    await this.write(this.confPath, withSynchronousStandbyNames(text, value));
  }

  /**
   * postgresql.conf with the promotion's short retry interval (and, streamOnly, no restore_command) added or
   * removed (conf.ts), and synchronous_standby_names set when given: one write.
   */
  async writePromotionRetry(on: boolean, streamOnly = false, synchronousStandbyNames?: string): Promise<boolean> {
    const text = readFileSync(this.confPath, 'utf8');
    const retry = withPromotionRetry(text, on, streamOnly);
    return this.write(this.confPath, synchronousStandbyNames === undefined ? retry : withSynchronousStandbyNames(retry, synchronousStandbyNames));
  }

  async writePgpass(upstream: UpstreamTarget | null): Promise<void> {
    await this.write(this.layout.pgpassPath, buildPgpass(this.config, upstream));
  }

  /**
   * A file that already holds `text`, with Keel's mode and owner, is left as it is. True when written.
   * Without an fsync: each cost tens of ms while PostgreSQL writes too, several of them on a switchover's path,
   * and these files are derived: every start of PostgreSQL writes them again from node.yml and etcd first.
   */
  private async write(path: string, text: string): Promise<boolean> {
    const owner = this.runAs;
    // read synchronously, as datadir.ts says why
    const current = lstatSync(path, { throwIfNoEntry: false });
    const kept =
      current !== undefined &&
      current.isFile() &&
      (current.mode & 0o777) === 0o600 &&
      (owner === null || (current.uid === owner.uid && current.gid === owner.gid)) &&
      readSmallFile(path) === text;
    if (!kept) await writeOwnedFile(path, text, 0o600, owner, { durable: false });
    return !kept;
  }

  /** postgresql.conf, pg_hba.conf and pgpass; synchronous_standby_names kept from the conf unless given. */
  private async writeConf(options: StartOptions, synchronousStandbyNames?: string): Promise<void> {
    let sync = synchronousStandbyNames;
    if (sync === undefined) {
      const current = readSmallFile(this.confPath) ?? '';
      sync = readSynchronousStandbyNames(current) ?? '';
    }
    // the node's instance class first: the cluster's explicit parameters win over it
    const parameters = { ...instanceClassParameters(this.config.tags), ...options.parameters };
    const text = buildPostgresqlConf(this.config, this.layout, { ...options, parameters }, sync);
    await Promise.all([
      this.write(this.confPath, text),
      this.write(join(this.layout.dataDir, 'pg_hba.conf'), buildPgHba(this.config)),
      this.writePgpass(options.replica ? options.upstream : null),
    ]);
  }
}
