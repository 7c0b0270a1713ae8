/**
 * A PID read from postmaster.pid is signalled only when /proc shows it is
 * that data directory's postmaster (a postgres binary working in it): a
 * stale file naming another process, even one working in the data directory
 * or one named postgres elsewhere, never gets a signal. Against a real
 * PostgreSQL for the one that is, and for what a SIGKILLed one started.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { appendFileSync, chmodSync, copyFileSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { descendantsOf, findPostmaster, realPathOr, terminatePostmaster, verifiedPostmasterPid } from '../../src/postgres/postmaster.js';
import { sleep } from '../../src/util/clock.js';
import { commandLine, isAlive } from '../../src/util/process.js';

const binDir = '/usr/lib/postgresql/15/bin';
const pgPort = 19580;
let dir: string;
const started: ChildProcess[] = [];
/** processes a test expected to be gone: killed at the end should one survive */
const strays: number[] = [];

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
  for (const pid of strays) if (isAlive(pid)) process.kill(pid, 'SIGKILL');
  for (const name of ['real', 'archiving']) {
    spawnSync('runuser', ['-u', 'postgres', '--', join(binDir, 'pg_ctl'), 'stop', '-D', join(dir, name), '-m', 'immediate'], { stdio: 'ignore', cwd: '/' });
  }
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
    const dataDir = startPostgres('real', pgPort, '');
    const pid = verifiedPostmasterPid(dataDir, join(binDir, 'postgres'));
    expect(pid).not.toBeNull();
    expect(verifiedPostmasterPid(dataDir)).toBe(pid);
    const outcome = await terminatePostmaster(dataDir, { signal: 'SIGINT', graceMs: 30_000, postgresBinary: join(binDir, 'postgres') });
    expect(outcome).toEqual({ kind: 'stopped', pid });
    expect(isAlive(pid!)).toBe(false);
    writePidFile(dataDir, pid!);
    expect((await terminatePostmaster(dataDir, { signal: 'SIGKILL', graceMs: 100 })).kind).toBe('none');
  });

  it('killed with SIGKILL takes what it started along: an archive_command still running does not outlive it', async () => {
    const marker = `${dir}/archive-wait`;
    const dataDir = startPostgres('archiving', pgPort + 1, `archive_mode = on\narchive_command = 'sleep 300 # ${marker} %p'\n`);
    const psql = spawnSync('runuser', ['-u', 'postgres', '--', join(binDir, 'psql'), '-h', dir, '-p', String(pgPort + 1), '-d', 'postgres', '-Atc', 'CREATE TABLE t AS SELECT 1 AS x; SELECT pg_switch_wal()'], { encoding: 'utf8', cwd: '/' });
    expect(psql.status, psql.stderr).toBe(0);
    const pid = verifiedPostmasterPid(dataDir)!;
    const archiving = (): number[] => descendantsOf(pid).filter((child) => commandLine(child)?.join(' ').includes(marker) === true);
    const deadline = Date.now() + 30_000;
    while (archiving().length === 0 && Date.now() < deadline) await sleep(100);
    const commands = archiving();
    strays.push(...commands);
    expect(commands.length, readFileSync(join(dir, 'archiving.log'), 'utf8')).toBeGreaterThan(0);
    expect((await terminatePostmaster(dataDir, { signal: 'SIGKILL', graceMs: 0 })).kind).toBe('killed');
    await sleep(200);
    expect(commands.filter(isAlive)).toEqual([]);
  });
});

/** initdb and start a PostgreSQL in `dir`/`name` on `port`, with `settings` added to its postgresql.conf; returns its data directory. */
function startPostgres(name: string, port: number, settings: string): string {
  const dataDir = join(dir, name);
  spawnSync('chown', ['postgres:postgres', dir]);
  const init = spawnSync('runuser', ['-u', 'postgres', '--', join(binDir, 'initdb'), '-D', dataDir, '-A', 'trust'], { encoding: 'utf8', cwd: '/' });
  expect(init.status, init.stderr).toBe(0);
  appendFileSync(join(dataDir, 'postgresql.conf'), settings);
  const start = spawnSync(
    'runuser',
    ['-u', 'postgres', '--', join(binDir, 'pg_ctl'), 'start', '-D', dataDir, '-w', '-t', '60', '-l', join(dir, `${name}.log`),
      '-o', `-p ${port} -c listen_addresses=127.0.0.1 -k ${dir}`],
    { encoding: 'utf8', cwd: '/' },
  );
  expect(start.status, start.stderr).toBe(0);
  return dataDir;
}
