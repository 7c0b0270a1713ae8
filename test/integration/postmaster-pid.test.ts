/**
 * A PID read from postmaster.pid is signalled only when /proc shows it is
 * that data directory's postmaster (a postgres binary working in it): a
 * stale file naming another process, even one working in the data directory
 * or one named postgres elsewhere, never gets a signal. Against a real
 * PostgreSQL for the one that is.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, copyFileSync, mkdtempSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findPostmaster, realPathOr, terminatePostmaster, verifiedPostmasterPid } from '../../src/postgres/postmaster.js';
import { sleep } from '../../src/util/clock.js';
import { isAlive } from '../../src/util/process.js';

const binDir = '/usr/lib/postgresql/15/bin';
const pgPort = 19580;
let dir: string;
const started: ChildProcess[] = [];

/** A long sleep whose working directory is `cwd`, run from a copy of sleep named `name`. */
function sleeper(cwd: string, name = 'sleep'): number {
  const program = join(mkdtempSync(join(dir, 'bin-')), name);
  copyFileSync('/usr/bin/sleep', program);
  chmodSync(program, 0o755);
  const child = spawn(program, ['120'], { cwd, stdio: 'ignore' });
  started.push(child);
  return child.pid!;
}

function writePidFile(dataDir: string, pid: number): void {
  writeFileSync(join(dataDir, 'postmaster.pid'), `${pid}\n${dataDir}\n1700000000\n${pgPort}\n`);
}

beforeAll(() => {
  dir = mkdtempSync('/tmp/keel-postmaster-');
  chmodSync(dir, 0o755);
});

afterAll(async () => {
  for (const child of started) if (child.pid !== undefined && isAlive(child.pid)) child.kill('SIGKILL');
  spawnSync('runuser', ['-u', 'postgres', '--', join(binDir, 'pg_ctl'), 'stop', '-D', join(dir, 'real'), '-m', 'immediate'], { stdio: 'ignore', cwd: '/' });
  await rm(dir, { recursive: true, force: true });
});

describe('a stale postmaster.pid', () => {
  it.each([
    ['a process of another program working in the data directory', 'sleep', true],
    ['a program named postgres working elsewhere', 'postgres', false],
    ['a program named postgres working in the data directory, but not the node binary', 'postgres', true],
  ])('naming %s: refused and never signalled', async (_what, name, inDataDir) => {
    const dataDir = mkdtempSync(join(dir, 'data-'));
    const pid = sleeper(inDataDir ? dataDir : dir, name);
    await sleep(100);
    writePidFile(dataDir, pid);
    const check = findPostmaster(realPathOr(dataDir), realPathOr(join(binDir, 'postgres')));
    expect(check.kind).toBe('refused');
    for (const signal of ['SIGINT', 'SIGKILL'] as const) {
      const outcome = await terminatePostmaster(dataDir, { signal, graceMs: 200, postgresBinary: join(binDir, 'postgres') });
      expect(outcome.kind).toBe('refused');
    }
    if (!inDataDir) {
      // without the node's binary, any program named postgres is taken: the working directory still refuses it
      expect((await terminatePostmaster(dataDir, { signal: 'SIGKILL', graceMs: 200 })).kind).toBe('refused');
      expect(verifiedPostmasterPid(dataDir)).toBeNull();
    }
    await sleep(100);
    expect(isAlive(pid)).toBe(true);
  });

  it('naming no process, or no PID at all: nothing to stop', async () => {
    const dataDir = mkdtempSync(join(dir, 'data-'));
    expect((await terminatePostmaster(dataDir, { signal: 'SIGINT', graceMs: 100 })).kind).toBe('none');
    writeFileSync(join(dataDir, 'postmaster.pid'), 'not a pid\n');
    expect((await terminatePostmaster(dataDir, { signal: 'SIGINT', graceMs: 100 })).kind).toBe('none');
  });
});

describe('a live postmaster', () => {
  it('is verified and stopped (fast shutdown), and a file naming it afterwards is no longer obeyed', async () => {
    const dataDir = join(dir, 'real');
    spawnSync('chown', ['postgres:postgres', dir]);
    const init = spawnSync('runuser', ['-u', 'postgres', '--', join(binDir, 'initdb'), '-D', dataDir, '-A', 'trust'], { encoding: 'utf8', cwd: '/' });
    expect(init.status, init.stderr).toBe(0);
    const start = spawnSync(
      'runuser',
      ['-u', 'postgres', '--', join(binDir, 'pg_ctl'), 'start', '-D', dataDir, '-w', '-t', '60', '-l', join(dir, 'real.log'),
        '-o', `-p ${pgPort} -c listen_addresses=127.0.0.1 -k ${dir}`],
      { encoding: 'utf8', cwd: '/' },
    );
    expect(start.status, start.stderr).toBe(0);
    const pid = verifiedPostmasterPid(dataDir, join(binDir, 'postgres'));
    expect(pid).not.toBeNull();
    expect(verifiedPostmasterPid(dataDir)).toBe(pid);
    const outcome = await terminatePostmaster(dataDir, { signal: 'SIGINT', graceMs: 30_000, postgresBinary: join(binDir, 'postgres') });
    expect(outcome).toEqual({ kind: 'stopped', pid });
    expect(isAlive(pid!)).toBe(false);
    writePidFile(dataDir, pid!);
    expect((await terminatePostmaster(dataDir, { signal: 'SIGKILL', graceMs: 100 })).kind).toBe('none');
  });
});
