/** When a leader handing over may stop waiting for the routers (src/agent/actions.ts, routersHolding). */
import { describe, expect, it } from 'vitest';
import { routersHolding } from '../../src/agent/actions.js';
import type { RouterValue } from '../../src/model/values.js';

const router = (id: string, holding: number | null): RouterValue => ({ v: 1, id, holding, atMs: 1 });

describe('routersHolding', () => {
  it('is true once every registered router holds for this very request', () => {
    expect(routersHolding([router('a:6400', 500), router('b:6400', 500)], 500)).toBe(true);
  });

  it('waits for a router that holds for nothing yet, or for an older request', () => {
    expect(routersHolding([router('a:6400', 500), router('b:6400', null)], 500)).toBe(false);
    expect(routersHolding([router('a:6400', 500), router('b:6400', 400)], 500)).toBe(false);
  });

  it('with no router registered, or no request, it never says yes: the leader waits its whole grace', () => {
    expect(routersHolding([], 500)).toBe(false);
    expect(routersHolding([router('a:6400', 500)], null)).toBe(false);
  });
});
