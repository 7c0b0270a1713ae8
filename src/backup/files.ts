/**
 * Writes a node's pgBackRest files before its PostgreSQL starts (archive_command
 * names them): the configuration with the repository key and the password
 * file, 0600 for PostgreSQL's OS user, and the directories pgBackRest writes in.
 * A posix repository's directory is made too, 0700 for that user.
 */
import type { NodeConfig } from '../config/schema.js';
import { pgbackrestPaths, type PgbackrestPaths } from '../postgres/archiving.js';
import { nodeLayout } from '../postgres/conf.js';
import { prepareNodeDirs } from '../postgres/datadir.js';
import { ensureOwnedDir, resolveRunAs, writeOwnedFile, type RunAs } from '../postgres/programs.js';
import { buildPgbackrestConf, buildPgbackrestPgpass } from './conf.js';

/** Like ensureOwnedDir, but another agent of this machine making the same directory at the same moment is fine. */
export async function ensureSharedDir(path: string, mode: number, runAs: RunAs | null): Promise<void> {
  try {
    await ensureOwnedDir(path, mode, runAs);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    await ensureOwnedDir(path, mode, runAs);
  }
}

export async function writeBackupFiles(config: NodeConfig): Promise<PgbackrestPaths> {
  if (config.backup === undefined) throw new Error('writeBackupFiles needs a backup block');
  const layout = nodeLayout(config);
  const runAs = resolveRunAs(config);
  const paths = pgbackrestPaths(layout);
  await prepareNodeDirs(layout, runAs);
  for (const dir of [paths.dir, paths.spool, paths.lock, paths.log]) await ensureOwnedDir(dir, 0o700, runAs);
  await writeOwnedFile(paths.conf, buildPgbackrestConf(config, layout), 0o600, runAs);
  await writeOwnedFile(paths.pgpass, buildPgbackrestPgpass(config), 0o600, runAs);
  if (config.backup.repo.type === 'posix') await ensureSharedDir(config.backup.repo.path, 0o700, runAs);
  return paths;
}
