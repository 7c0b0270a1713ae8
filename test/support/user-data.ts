/**
 * Checks shared by the tests of generated user data (database nodes, etcd
 * members): the script written to a file, bash's syntax check and
 * shellcheck, and a builder's refusal of bad options.
 */
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'vitest';
import { KeelError } from '../../src/errors.js';

/** The script in a new file under `dir`; its path. */
export function scriptFile(dir: string, text: string): string {
  const path = join(dir, `user-data-${Math.random().toString(36).slice(2)}.sh`);
  writeFileSync(path, text);
  return path;
}

/** bash -n, then shellcheck (which `make setup` installs: its absence fails, never skips). */
export function expectCleanShell(dir: string, script: string): void {
  const syntax = spawnSync('bash', ['-n', scriptFile(dir, script)], { encoding: 'utf8' });
  expect(syntax.stderr).toBe('');
  expect(syntax.status).toBe(0);
  const which = spawnSync('sh', ['-c', 'command -v shellcheck'], { encoding: 'utf8' });
  expect(which.status, 'shellcheck is not installed: run make setup (apt-get install shellcheck)').toBe(0);
  const result = spawnSync('shellcheck', [scriptFile(dir, script)], { encoding: 'utf8' });
  expect(result.stdout).toBe('');
  expect(result.status).toBe(0);
}

/** The KeelError `build` throws for `input`; fails when it accepts it. */
export function refusalOf<I>(build: (input: I) => unknown, input: unknown): KeelError {
  try {
    build(input as I);
  } catch (err) {
    expect(err).toBeInstanceOf(KeelError);
    return err as KeelError;
  }
  throw new Error(`accepted ${JSON.stringify(input).slice(0, 200)}`);
}
