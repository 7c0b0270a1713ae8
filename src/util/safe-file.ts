/**
 * Writing a file Keel (often root) owns or hands to another OS user, without
 * following symlinks: the temporary file is created exclusively with
 * O_NOFOLLOW, its mode and owner are set on the open descriptor, and a rename
 * puts it in place. A user who can write the directory cannot redirect the
 * write, the chmod or the chown to another file.
 */
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { open, rename, rm } from 'node:fs/promises';

export interface FileOwner {
  uid: number;
  gid: number;
}

/**
 * Replaces `path` with `data` (mode and owner set before the file appears under its name). `durable: false`
 * skips the fsync, for a file rebuilt from its sources before anything reads it after a crash: the rename
 * alone already shows readers the old text or the new, never half of one.
 */
export async function writeFileNoFollow(path: string, data: string | Uint8Array, mode: number, owner: FileOwner | null, { durable = true } = {}): Promise<void> {
  const temporary = `${path}.keel-${randomBytes(4).toString('hex')}`;
  const handle = await open(temporary, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, mode);
  try {
    await handle.chmod(mode);
    if (owner) await handle.chown(owner.uid, owner.gid);
    await handle.writeFile(data);
    if (durable) await handle.sync();
  } catch (err) {
    await handle.close().catch(() => undefined);
    await rm(temporary, { force: true });
    throw err;
  } finally {
    await handle.close().catch(() => undefined);
  }
  try {
    await rename(temporary, path);
  } catch (err) {
    await rm(temporary, { force: true });
    throw err;
  }
}
