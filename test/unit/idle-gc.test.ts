/** When the agent collects its garbage (src/agent/idle-gc.ts): once quiet after work, then at most every 10 s while steady. */
import { describe, expect, it } from 'vitest';
import { IdleCollector } from '../../src/agent/idle-gc.js';

describe('IdleCollector', () => {
  it('collects 3 s after the last work (twice: the second gives back the pages the first emptied), then once every 10 s while steady, and again 3 s after new work', () => {
    let now = 0;
    let collections = 0;
    const c = new IdleCollector(() => (collections += 1), () => now);
    now = 2_999;
    expect(c.maybeCollect()).toBe(false); // start-up counts as work
    now = 3_000;
    expect(c.maybeCollect()).toBe(true);
    expect(collections).toBe(2);
    now = 12_999;
    expect(c.maybeCollect()).toBe(false);
    now = 13_000;
    expect(c.maybeCollect()).toBe(true);
    expect(collections).toBe(3);
    now = 21_000;
    c.worked();
    now = 23_000;
    expect(c.maybeCollect()).toBe(false); // 10 s after the last collection, but only 2 s after the work
    now = 24_000;
    expect(c.maybeCollect()).toBe(true);
    expect(collections).toBe(5);
  });

  it('does nothing without --expose-gc', () => {
    let now = 0;
    const c = new IdleCollector(undefined, () => now);
    now = 100_000;
    expect(c.maybeCollect()).toBe(false);
  });
});
