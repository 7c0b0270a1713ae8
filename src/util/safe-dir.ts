/**
 * A directory Keel (often root) makes for itself or hands to another OS user:
 * it must be a real directory, never a link someone put in its place, and its
 * mode and owner are set through a descriptor opened without following links.
 */
import { constants } from 'node:fs';
import { lstat, mkdir, open } from 'node:fs/promises';
import { KeelError } from '../errors.js';
import type { FileOwner } from './safe-file.js';

/** Makes `path` (and its parents) if missing, then gives it this mode and owner (none: left as it is). */
export async function ensureDirNoFollow(path: string, mode: number, owner: FileOwner | null): Promise<void> {
  await mkdir(path, { recursive: true, mode });
  if (!(await lstat(path)).isDirectory()) throw new KeelError('KEEL_DIR_UNUSABLE', `${path} is not a directory (a link?)`);
  const handle = await open(path, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
  try {
    await handle.chmod(mode);
    if (owner !== null) await handle.chown(owner.uid, owner.gid);
  } finally {
    await handle.close();
  }
}
