/**
 * Where a node keeps its pgBackRest files, and the archiving settings of its
 * postgresql.conf. Pure: the files are written by backup/files.ts.
 *
 * The repository key lives only in pgbackrest.conf (0600, PostgreSQL's OS
 * user): the commands PostgreSQL runs name the configuration directory, never
 * a secret.
 */
import { join } from 'node:path';
import type { NodeConfig } from '../config/schema.js';
import type { NodeLayout } from './conf.js';

export interface PgbackrestPaths {
  /** pgBackRest's own directory in PostgreSQL's: its --config-path */
  dir: string;
  conf: string;
  /** the superuser's password for pgBackRest's connections over the local socket */
  pgpass: string;
  spool: string;
  lock: string;
  log: string;
}

export function pgbackrestPaths(layout: Pick<NodeLayout, 'nodeDir'>): PgbackrestPaths {
  const dir = join(layout.nodeDir, 'pgbackrest');
  return { dir, conf: join(dir, 'pgbackrest.conf'), pgpass: join(dir, 'pgpass'), spool: join(dir, 'spool'), lock: join(dir, 'lock'), log: join(dir, 'log') };
}

/** The cluster's name in the repository. */
export function stanzaOf(config: Pick<NodeConfig, 'cluster' | 'backup'>): string {
  return config.backup?.stanza ?? config.cluster;
}

/** One word for /bin/sh: single-quoted unless it is plainly safe. */
export function shellWord(word: string): string {
  return /^[A-Za-z0-9_\/.:=%@+-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}

/** A pgbackrest command line for PostgreSQL to run through /bin/sh (archive_command, restore_command). */
export function pgbackrestShellCommand(config: NodeConfig, layout: Pick<NodeLayout, 'nodeDir'>, words: string[]): string {
  const backup = config.backup;
  if (backup === undefined) throw new Error('pgbackrestShellCommand needs a backup block');
  const head = [backup.binary, `--config-path=${pgbackrestPaths(layout).dir}`, `--stanza=${stanzaOf(config)}`].map(shellWord);
  return [...head, ...words].join(' ');
}

/**
 * archive_mode `on`: only the primary archives; a standby that is promoted
 * starts archiving at once, its new timeline's history file first. Every node
 * can fetch WAL from the repository (a replica made from a backup, one whose
 * slot was lost), so restore_command is set everywhere.
 */
export function archiveParameters(config: NodeConfig, layout: Pick<NodeLayout, 'nodeDir'>): [string, string | number][] {
  const backup = config.backup;
  if (backup === undefined) return [];
  return [
    ['archive_mode', 'on'],
    ['archive_command', pgbackrestShellCommand(config, layout, ['archive-push', '"%p"'])],
    ['archive_timeout', `${backup.archiveTimeoutSeconds}s`],
    ['restore_command', pgbackrestShellCommand(config, layout, ['archive-get', '%f', '"%p"'])],
  ];
}
