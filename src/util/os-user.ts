/**
 * An OS user's uid and gid from /etc/passwd, for the files Keel hands to the
 * user a program runs as (postgres, etcd). Boot code runs before any name
 * service is configured; /etc/passwd is where Debian's packages put them.
 */
import { readFile } from 'node:fs/promises';
import type { FileOwner } from './safe-file.js';

/** The user's ids, or null when /etc/passwd has no such user. */
export async function systemUser(name: string, passwdFile = '/etc/passwd'): Promise<FileOwner | null> {
  for (const line of (await readFile(passwdFile, 'utf8')).split('\n')) {
    const [user, , uid, gid] = line.split(':');
    if (user === name && uid && gid) return { uid: Number(uid), gid: Number(gid) };
  }
  return null;
}
