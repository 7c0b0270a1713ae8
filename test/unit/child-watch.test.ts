/** util/child-watch.ts against a real short-lived child (sh): lines, the kept tail, the end reported or not. */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { describe, expect, it } from 'vitest';
import { watchChild } from '../../src/util/child-watch.js';

const run = (script: string) => spawn('/bin/sh', ['-c', script], { stdio: ['ignore', 'pipe', 'pipe'] });

describe('watchChild', () => {
  it('hands on each line cleaned, keeps the last ones, and reports an end on its own once', async () => {
    const child = run('for i in 1 2 3 4; do echo "line $i secret=x"; done; echo oops >&2; exit 3');
    const seen: string[] = [];
    const ends: string[] = [];
    const watch = watchChild(child, { onLine: (l) => seen.push(l), onExit: (how) => ends.push(how), stopping: () => false, clean: (l) => l.replace(/secret=\S+/, 'secret=***'), keep: 3 });
    expect(watch.exited).toBeNull();
    await once(child, 'close');
    expect(seen).toHaveLength(5);
    expect(seen.every((l) => !l.includes('secret=x'))).toBe(true);
    expect(watch.tail().split('\n')).toHaveLength(3);
    expect(watch.tail()).toContain('oops');
    expect(watch.exited).toBe('exit code 3');
    expect(ends).toEqual(['exit code 3']);
  });

  it('an end the caller asked for is not reported', async () => {
    const child = run('sleep 5');
    const ends: string[] = [];
    let stopping = false;
    const watch = watchChild(child, { onLine: () => undefined, onExit: (how) => ends.push(how), stopping: () => stopping });
    stopping = true;
    child.kill('SIGTERM');
    await once(child, 'exit');
    expect(watch.exited).toBe('exit code SIGTERM');
    expect(ends).toEqual([]);
  });
});
