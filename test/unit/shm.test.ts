import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { removeOrphanedSegments } from '../support/shm.js';

let dir = '';
afterEach(() => rmSync(dir, { recursive: true, force: true }));

/** A process that maps `path` (as a backend maps a segment) until killed; resolves once mapped. */
function mapper(path: string): Promise<{ kill: () => void }> {
  const code = 'import mmap,sys,time\nf=open(sys.argv[1],"r+b")\nm=mmap.mmap(f.fileno(),0)\nprint("mapped",flush=True)\ntime.sleep(60)';
  const child = spawn('python3', ['-c', code, path], { stdio: ['ignore', 'pipe', 'ignore'] });
  return new Promise((resolve, reject) => {
    child.stdout.once('data', () => resolve({ kill: () => child.kill('SIGKILL') }));
    child.once('exit', () => reject(new Error('the mapping process exited')));
  });
}

describe('removeOrphanedSegments', () => {
  it('removes the segments of this run that nothing maps, and nothing else', async () => {
    dir = mkdtempSync(join(tmpdir(), 'keel-shm-'));
    const since = Date.now() - 60_000;
    const at = (name: string, ms: number) => {
      writeFileSync(join(dir, name), Buffer.alloc(4096));
      utimesSync(join(dir, name), ms / 1000, ms / 1000);
    };
    at('PostgreSQL.100', since - 10_000); // older than the run
    at('PostgreSQL.200', since + 1000); // this run's, orphaned
    at('PostgreSQL.300', since + 1000); // this run's, still mapped
    at('PostgreSQL.400', Date.now() - 500); // being made right now
    at('other.500', since + 1000); // not PostgreSQL's
    const mapping = await mapper(join(dir, 'PostgreSQL.300'));
    try {
      expect(removeOrphanedSegments(since, dir)).toEqual(['PostgreSQL.200']);
      expect(readdirSync(dir).sort()).toEqual(['PostgreSQL.100', 'PostgreSQL.300', 'PostgreSQL.400', 'other.500']);
    } finally {
      mapping.kill();
    }
    // once its last process is gone, the mapped one goes too
    for (let i = 0; i < 50 && removeOrphanedSegments(since, dir).length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(existsSync(join(dir, 'PostgreSQL.300'))).toBe(false);
  });
});
