/**
 * Running PostgreSQL's programs as the OS user that owns the cluster, and
 * keeping the files Keel writes owned by that user. PostgreSQL refuses to run
 * as root, so when Keel is root everything happens as `postgres` (or runAs).
 */
import { execFileSync, spawn } from 'node:child_process';
import { constants, existsSync, readFileSync } from 'node:fs';
import { chmod, chown, lstat, mkdir, open, rename, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { NodeConfig } from '../config/schema.js';
import { KeelError, redactSecrets } from '../errors.js';
import { writeFileNoFollow } from '../util/safe-file.js';

export interface RunAs {
  user: string;
  uid: number;
  gid: number;
  home: string;
}

function lookupUser(user: string): RunAs {
  try {
    for (const line of readFileSync('/etc/passwd', 'utf8').split('\n')) {
      const [name, , uid, gid, , home] = line.split(':');
      if (name === user && uid && gid) return { user, uid: Number(uid), gid: Number(gid), home: home || '/' };
    }
  } catch {
    // fall through to id(1), which also sees users from NSS (LDAP and the like)
  }
  try {
    const uid = Number(execFileSync('id', ['-u', user], { encoding: 'utf8' }).trim());
    const gid = Number(execFileSync('id', ['-g', user], { encoding: 'utf8' }).trim());
    return { user, uid, gid, home: '/' };
  } catch {
    throw new KeelError('KEEL_CONFIG_INVALID', `OS user ${JSON.stringify(user)} (postgres.runAs) does not exist`, {
      hint: 'create the user, install PostgreSQL (which creates `postgres`), or set postgres.runAs',
    });
  }
}

/** The identity to switch to, or null when programs run as the current user. */
export function resolveRunAs(config: NodeConfig): RunAs | null {
  const current = process.getuid?.();
  const user = config.postgres.runAs ?? (current === 0 ? 'postgres' : undefined);
  if (user === undefined) return null;
  const runAs = lookupUser(user);
  return runAs.uid === current ? null : runAs;
}

export function lastLines(text: string, count = 10): string {
  const lines = text.trimEnd().split('\n');
  return redactSecrets(lines.slice(-count).join('\n'));
}

export interface RunOptions {
  env?: Record<string, string>;
  /** own session: the child (and what it forks) survives the agent and ignores the terminal's Ctrl-C */
  detached?: boolean;
  /** resolve with the result instead of throwing on a non-zero exit */
  allowFailure?: boolean;
  /** each chunk of output as it comes (progress) */
  onOutput?: (text: string) => void;
  /** ends the program (SIGTERM) when aborted */
  signal?: AbortSignal;
}

export interface RunResult {
  exitCode: number | null;
  output: string;
}

const maxOutputChars = 64 * 1024;

export class Programs {
  constructor(
    private readonly binDir: string,
    private readonly runAs: RunAs | null,
    private readonly cwd: string,
  ) {}

  path(program: string): string {
    const path = join(this.binDir, program);
    if (!existsSync(path)) {
      throw new KeelError('KEEL_BINARY_MISSING', `${path} does not exist (postgres.binDir is ${this.binDir})`);
    }
    return path;
  }

  run(program: string, args: string[], options: RunOptions = {}): Promise<RunResult> {
    const path = this.path(program);
    // Inherited PG* variables (PGHOST, PGPASSWORD, ...) would silently redirect or authenticate our programs.
    const env: Record<string, string> = {};
    for (const [key, value] of Object.entries(process.env)) {
      if (value !== undefined && !key.startsWith('PG')) env[key] = value;
    }
    if (this.runAs) {
      env.HOME = this.runAs.home;
      env.USER = env.LOGNAME = this.runAs.user;
    }
    Object.assign(env, options.env);

    return new Promise((resolve, reject) => {
      const child = spawn(path, args, {
        cwd: this.cwd,
        env,
        detached: options.detached ?? false,
        stdio: ['ignore', 'pipe', 'pipe'],
        ...(this.runAs ? { uid: this.runAs.uid, gid: this.runAs.gid } : {}),
        ...(options.signal ? { signal: options.signal, killSignal: 'SIGTERM' as const } : {}),
      });
      let output = '';
      const collect = (chunk: Buffer): void => {
        const text = chunk.toString('utf8');
        output = (output + text).slice(-maxOutputChars);
        options.onOutput?.(text);
      };
      child.stdout.on('data', collect);
      child.stderr.on('data', collect);
      child.on('error', (err: NodeJS.ErrnoException) => {
        const as = this.runAs ? ` as ${this.runAs.user}` : '';
        reject(new KeelError('KEEL_POSTGRES_FAILED', `cannot run ${program}${as}: ${err.code ?? err.message}`, { cause: err }));
      });
      child.on('close', (exitCode, signal) => {
        if (exitCode === 0 || options.allowFailure) {
          resolve({ exitCode, output });
          return;
        }
        const how = signal ? `killed by ${signal}` : `exit status ${exitCode}`;
        reject(new KeelError('KEEL_POSTGRES_FAILED', `${program} failed (${how}):\n${lastLines(output)}`));
      });
    });
  }
}

export async function chownFor(path: string, runAs: RunAs | null): Promise<void> {
  if (runAs) await chown(path, runAs.uid, runAs.gid);
}

/** Writes through a temporary file and a rename, so PostgreSQL never reads half a file on reload. */
export async function writeOwnedFile(path: string, text: string, mode: number, runAs: RunAs | null, options: { durable?: boolean } = {}): Promise<void> {
  await writeFileNoFollow(path, text, mode, runAs, options);
}

/** Creates the directory when missing and makes sure the run-as user owns it. */
export async function ensureOwnedDir(path: string, mode: number, runAs: RunAs | null): Promise<void> {
  let created = false;
  try {
    await lstat(path);
  } catch {
    // Parents Keel creates must stay traversable for the run-as user; only the leaf is private.
    await mkdir(dirname(path), { recursive: true, mode: 0o755 });
    await mkdir(path, { mode });
    created = true;
  }
  // Mode and owner go through a descriptor opened without following links: a symlink put in the
  // directory's place by a user who can write its parent is refused, never followed.
  let handle;
  try {
    handle = await open(path, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
  } catch (err) {
    throw new KeelError('KEEL_DIR_UNUSABLE', `${path} is not a directory Keel can use (${(err as NodeJS.ErrnoException).code ?? 'error'})`, {
      hint: 'a symlink or a file stands where Keel keeps a directory; remove it',
    });
  }
  try {
    if (created) await handle.chmod(mode);
    if (runAs) {
      const info = await handle.stat();
      if (info.uid !== runAs.uid) await handle.chown(runAs.uid, runAs.gid);
    }
  } finally {
    await handle.close();
  }
}

/** Fails with KEEL_DIR_UNUSABLE unless the run-as user can enter and write the directory. */
export async function checkReachable(dir: string, runAs: RunAs | null): Promise<void> {
  if (!runAs) return;
  const ok = await new Promise<boolean>((resolve) => {
    const child = spawn('/bin/sh', ['-c', 'test -d "$1" && test -x "$1" && test -w "$1"', 'sh', dir], {
      cwd: '/',
      stdio: 'ignore',
      uid: runAs.uid,
      gid: runAs.gid,
    });
    child.on('error', () => resolve(false));
    child.on('close', (code) => resolve(code === 0));
  });
  if (!ok) {
    throw new KeelError(
      'KEEL_DIR_UNUSABLE',
      `OS user ${runAs.user} cannot enter or write ${dir} (a parent directory may be closed to it, e.g. mode 0700)`,
    );
  }
}

/** The last lines of a log file, read from its end so a large log costs nothing. */
export async function tailOfFile(path: string, lineCount = 10): Promise<string> {
  try {
    const file = await open(path, 'r');
    try {
      const { size } = await file.stat();
      const length = Math.min(size, 16 * 1024);
      const buffer = Buffer.alloc(length);
      await file.read(buffer, 0, length, size - length);
      return lastLines(buffer.toString('utf8'), lineCount);
    } finally {
      await file.close();
    }
  } catch {
    return `(no log at ${path})`;
  }
}
