/**
 * A program Keel runs as a child (HAProxy, PgBouncer): each line it prints is
 * handed to the caller (to log it at the level it deserves) and the last ones
 * are kept for an error message; its end is remembered, and reported unless
 * the caller was stopping it.
 */
import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { terminate } from './process.js';

export interface ChildWatch {
  /** how it ended ("exit code 1", a spawn error...), null while it runs */
  readonly exited: string | null;
  /** the last lines it printed, one per line */
  tail(): string;
}

export function watchChild(
  child: ChildProcess,
  options: {
    onLine: (line: string) => void;
    /** called once when it ends on its own, not when `stopping()` says it was asked to */
    onExit: (how: string) => void;
    stopping: () => boolean;
    /** applied to every line before it is kept or handed on (secrets out) */
    clean?: (line: string) => string;
    keep?: number;
  },
): ChildWatch {
  const lines: string[] = [];
  const keep = options.keep ?? 20;
  let exited: string | null = null;
  for (const stream of [child.stdout, child.stderr]) {
    if (stream === null) continue;
    createInterface({ input: stream }).on('line', (raw) => {
      const line = options.clean?.(raw) ?? raw;
      lines.push(line);
      if (lines.length > keep) lines.shift();
      options.onLine(line);
    });
  }
  child.once('error', (err) => (exited = err.message));
  child.once('exit', (code, signal) => {
    exited = `exit code ${code ?? ''}${signal ?? ''}`;
    if (!options.stopping()) options.onExit(exited);
  });
  return {
    get exited() {
      return exited;
    },
    tail: () => lines.join('\n'),
  };
}

/**
 * Stops a program run under a guard shell (the shell that stops the program
 * if Keel dies): SIGTERM to the program, then the guard, each given 5 s.
 */
export async function stopGuarded(programPid: number | null, guard: ChildProcess | null): Promise<void> {
  if (programPid !== null) await terminate(programPid, 5000);
  guard?.stdin?.end();
  if (guard?.pid !== undefined) await terminate(guard.pid, 5000);
}
