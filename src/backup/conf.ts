/**
 * The text of a node's pgBackRest files: pgbackrest.conf (the repository, its
 * key, this node as pg1) and the password file pgBackRest's connections use.
 * Pure: files.ts writes them, 0600 for PostgreSQL's OS user.
 */
import type { BackupRepo } from '../config/backup.js';
import type { NodeConfig } from '../config/schema.js';
import { KeelError } from '../errors.js';
import { pgbackrestPaths, stanzaOf } from '../postgres/archiving.js';
import type { NodeLayout } from '../postgres/conf.js';

/** Full backups kept when the spec says nothing (the spec's retentionFull goes on each backup's command line). */
export const defaultRetentionFull = 2;

/** One line of pgbackrest.conf; a line break would smuggle in another option. */
export function confOption(name: string, value: string | number): string {
  const text = String(value);
  if (/[\r\n]/.test(text)) throw new KeelError('KEEL_CONFIG_INVALID', `pgBackRest option ${name} holds a line break`);
  return `${name}=${text}`;
}

/** repo1-* options of a repository (the key aside). */
export function repoOptions(repo: BackupRepo): [string, string | number][] {
  if (repo.type === 'posix') return [['repo1-type', 'posix'], ['repo1-path', repo.path]];
  const [host, port] = repo.endpoint.split(':');
  return [
    ['repo1-type', 's3'],
    ['repo1-path', repo.path],
    ['repo1-s3-bucket', repo.bucket],
    ['repo1-s3-endpoint', host!],
    ...(port === undefined ? [] : ([['repo1-storage-port', Number(port)]] as [string, number][])),
    ['repo1-s3-region', repo.region],
    ['repo1-s3-uri-style', repo.uriStyle],
    ...(repo.caFile === undefined ? [] : ([['repo1-storage-ca-file', repo.caFile]] as [string, string][])),
    ['repo1-s3-key', repo.key],
    ['repo1-s3-key-secret', repo.keySecret],
  ];
}

/** The node's PostgreSQL as pgBackRest's pg<index>: its data directory and its local socket. */
export function pgOptions(config: NodeConfig, layout: Pick<NodeLayout, 'dataDir' | 'socketDir'>, index: number): [string, string | number][] {
  return [
    [`pg${index}-path`, layout.dataDir],
    [`pg${index}-port`, config.postgres.port],
    [`pg${index}-socket-path`, layout.socketDir],
    [`pg${index}-user`, config.postgres.superuser.username],
  ];
}

export function buildPgbackrestConf(config: NodeConfig, layout: NodeLayout): string {
  const backup = config.backup;
  if (backup === undefined) throw new Error('buildPgbackrestConf needs a backup block');
  const paths = pgbackrestPaths(layout);
  const cipher: [string, string][] =
    backup.cipher === 'none' ? [['repo1-cipher-type', 'none']] : [['repo1-cipher-type', backup.cipher], ['repo1-cipher-pass', backup.cipherPass!]];
  const global: [string, string | number][] = [
    ...repoOptions(backup.repo),
    ...cipher,
    ['repo1-retention-full', defaultRetentionFull],
    ['spool-path', paths.spool],
    ['lock-path', paths.lock],
    ['log-path', paths.log],
    ['log-level-file', 'info'],
    ['log-level-console', 'warn'],
    ['process-max', backup.processMax],
    ['compress-type', 'lz4'],
    ['start-fast', 'y'],
  ];
  return [
    `# Written by Keel for node ${config.name} of cluster ${config.cluster}; Keel rewrites this file when the agent starts.`,
    '[global]',
    ...global.map(([name, value]) => confOption(name, value)),
    '',
    // archive-push returns as soon as the WAL is queued in the spool; a background process sends it
    '[global:archive-push]',
    confOption('archive-async', 'y'),
    '',
    `[${stanzaOf(config)}]`,
    ...pgOptions(config, layout, 1).map(([name, value]) => confOption(name, value)),
    '',
  ].join('\n');
}

function pgpassField(value: string): string {
  if (/[\r\n]/.test(value)) throw new KeelError('KEEL_CONFIG_INVALID', 'a user name or password contains a line break');
  return value.replace(/\\/g, '\\\\').replace(/:/g, '\\:');
}

/**
 * pgBackRest connects over local sockets only (any node's, for a backup from a standby), as the
 * superuser, whose password every node of the cluster shares.
 */
export function buildPgbackrestPgpass(config: NodeConfig): string {
  const { username, password } = config.postgres.superuser;
  return `*:*:*:${pgpassField(username)}:${pgpassField(password)}\n`;
}
