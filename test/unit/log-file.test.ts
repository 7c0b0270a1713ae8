/**
 * Log files Keel creates are 0640, set on the descriptor; an older, wider
 * file is narrowed; a symlink in a log's place is refused, not followed.
 */
import { chmodSync, closeSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { openLogFile } from '../../src/util/log-file.js';

const dir = mkdtempSync('/tmp/keel-logfile-');
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const modeOf = (path: string): number => statSync(path).mode & 0o777;

describe('openLogFile', () => {
  it('creates the file 0640 whatever the umask, and appends', () => {
    const path = join(dir, 'agent.log');
    const old = process.umask(0);
    try {
      const fd = openLogFile(path);
      writeSync(fd, 'one\n');
      closeSync(fd);
    } finally {
      process.umask(old);
    }
    const fd = openLogFile(path);
    writeSync(fd, 'two\n');
    closeSync(fd);
    expect(modeOf(path)).toBe(0o640);
    expect(readFileSync(path, 'utf8')).toBe('one\ntwo\n');
  });

  it('narrows a log left world-readable by an older version', () => {
    const path = join(dir, 'router.log');
    writeFileSync(path, 'old\n');
    chmodSync(path, 0o666);
    closeSync(openLogFile(path));
    expect(modeOf(path)).toBe(0o640);
  });

  it('refuses a symlink in the log\'s place and leaves its target alone', () => {
    const target = join(dir, 'precious');
    writeFileSync(target, 'keep\n');
    chmodSync(target, 0o600);
    const path = join(dir, 'guard.log');
    symlinkSync(target, path);
    expect(() => openLogFile(path)).toThrow(/ELOOP/);
    expect(readFileSync(target, 'utf8')).toBe('keep\n');
    expect(modeOf(target)).toBe(0o600);
  });
});
