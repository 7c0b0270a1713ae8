/**
 * Opening a repository to restore from: its stanza read with the key given,
 * and each way that can go wrong told apart, so that bad input gets its own
 * KEEL_* error before anything is made: no repository, another cluster's
 * repository (its stanza is not the one expected, or the key does not open
 * it), an encrypted one without a key, one without a backup.
 */
import type { BackupRepo } from '../config/backup.js';
import { KeelError } from '../errors.js';
import type { RunAs } from '../postgres/programs.js';
import type { StanzaInfo } from './info.js';
import { Pgbackrest } from './pgbackrest.js';

export interface RepositorySource {
  repo: BackupRepo;
  /** null: no key given (the repository must then be unencrypted) */
  cipherPass: string | null;
  /** the stanza expected (the cluster restored); null: the repository's only one */
  stanza: string | null;
  /** whose repository it should be, for messages (`cluster keel (DIR)`); null for a repository alone */
  owner: string | null;
  /** where the key comes from, for messages: `cluster keel's key (DIR/secrets.json)`, `the key in FILE` */
  keySource: string;
  runAs: RunAs | null;
  /** a directory of PostgreSQL's OS user for pgBackRest's configuration, lock and spool */
  scratch: string;
}

export interface OpenedRepository {
  pgbackrest: Pgbackrest;
  info: StanzaInfo;
}

export function describeRepo(repo: BackupRepo): string {
  return repo.type === 'posix' ? repo.path : `s3://${repo.bucket}${repo.path}`;
}

/** A stanza that the key could not read: an encrypted repository without a key, or a key that is not its own. */
function unreadable(stanza: StanzaInfo): boolean {
  return stanza.statusCode === 99 && /FormatError|CryptoError|decrypt|cipher/i.test(stanza.statusMessage);
}

export async function openRepository(source: RepositorySource): Promise<OpenedRepository> {
  const where = describeRepo(source.repo);
  const lister = await Pgbackrest.forRepository({ ...source, stanza: null });
  const stanzas = await lister.stanzas();
  if (stanzas.length === 0) throw new KeelError('KEEL_BACKUP_NONE', `${where} holds no pgBackRest repository (no stanza in it)`);
  const names = stanzas.map((s) => s.name);
  let name = source.stanza;
  if (name === null) {
    if (stanzas.length > 1) throw new KeelError('KEEL_USAGE', `${where} holds several clusters (${names.join(', ')}): give --stanza NAME`);
    name = names[0]!;
  } else if (!names.includes(name)) {
    const whose = source.owner === null ? '' : `: it is the repository of another cluster than ${source.owner}`;
    throw new KeelError('KEEL_BACKUP_FOREIGN_REPO', `${where} holds stanza ${names.join(', ')}, not ${name}${whose}`);
  }
  const stanza = stanzas.find((s) => s.name === name)!;
  if (unreadable(stanza)) {
    if (source.cipherPass === null) {
      throw new KeelError('KEEL_BACKUP_KEY_MISSING', `${where} is encrypted and no key was given to open it`);
    }
    throw new KeelError('KEEL_BACKUP_FOREIGN_REPO', `${source.keySource} does not open ${where}: the repository belongs to another cluster (or the key is not its own)`);
  }
  if (stanza.statusCode !== 0 && stanza.backups.length === 0) {
    const code = stanza.statusCode === 2 ? 'KEEL_BACKUP_NONE' : 'KEEL_BACKUP_FAILED';
    throw new KeelError(code, `stanza ${name} in ${where} has no backup to restore (pgBackRest says: ${stanza.statusMessage.split('\n')[0]!.replace(/[^\x20-\x7e]/g, '?').slice(0, 200)})`);
  }
  return { pgbackrest: await Pgbackrest.forRepository({ ...source, stanza: name }), info: stanza };
}
