/**
 * Opening the log files Keel's processes write (agent, guard, router,
 * controller, supervisor, etcd): appended to, mode 0640. The mode is set on
 * the open descriptor, not by path, so an existing file with a wider mode is
 * narrowed and a path swapped between the open and the chmod changes
 * nothing; a symlink in the log's place is refused (O_NOFOLLOW) rather than
 * followed to a file Keel, often root, would then write.
 */
import { closeSync, constants, fchmodSync, openSync } from 'node:fs';

export const logFileMode = 0o640;

/** An append-only descriptor on `path`, created if missing, mode 0640. The caller closes it. */
export function openLogFile(path: string): number {
  const fd = openSync(path, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW, logFileMode);
  try {
    fchmodSync(fd, logFileMode);
  } catch (err) {
    closeSync(fd);
    throw err;
  }
  return fd;
}
