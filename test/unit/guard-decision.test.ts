import { describe, expect, it } from 'vitest';
import { applyFeed, guardVerdict, watchdogKeepAlive, type GuardFacts, type GuardVerdict } from '../../src/guard/decision.js';

const facts = (over: Partial<GuardFacts>): GuardFacts => ({
  deadlineMonoMs: 10_000,
  nowMonoMs: 5_000,
  standby: false,
  postmasterRunning: true,
  tripped: false,
  ...over,
});

describe('the guard fences only a postmaster that may write after an unfed deadline', () => {
  const cases: [string, Partial<GuardFacts>, GuardVerdict][] = [
    ['never fed: never fences, even long after start', { deadlineMonoMs: null, nowMonoMs: 1e9 }, { kind: 'unfed' }],
    ['never fed, no standby.signal, a primary runs: still never fences', { deadlineMonoMs: null, standby: false }, { kind: 'unfed' }],
    ['within the deadline', { nowMonoMs: 9_999 }, { kind: 'armed', remainingMs: 1 }],
    ['within the deadline, already tripped once before', { nowMonoMs: 4_000, tripped: true }, { kind: 'armed', remainingMs: 6_000 }],
    ['deadline reached exactly, a primary runs: fence', { nowMonoMs: 10_000 }, { kind: 'fence', first: true }],
    ['deadline passed, a primary runs: fence', { nowMonoMs: 60_000 }, { kind: 'fence', first: true }],
    ['deadline passed, standby.signal present: a standby cannot write', { nowMonoMs: 60_000, standby: true }, { kind: 'lapsed', why: 'standby' }],
    ['deadline passed, standby.signal present, tripped before', { nowMonoMs: 60_000, standby: true, tripped: true }, { kind: 'lapsed', why: 'standby' }],
    ['deadline passed, no postmaster runs', { nowMonoMs: 60_000, postmasterRunning: false }, { kind: 'lapsed', why: 'no-postmaster' }],
    ['tripped, and a primary was started again without a feed: stop it too', { nowMonoMs: 60_000, tripped: true }, { kind: 'fence', first: false }],
  ];
  it.each(cases)('%s', (_name, over, verdict) => {
    expect(guardVerdict(facts(over))).toEqual(verdict);
  });
});

describe('feeds', () => {
  const now = 6_000;
  it('the first feed arms the guard', () => {
    expect(applyFeed({ deadlineMonoMs: null, tripped: false }, 8_000, now)).toEqual({ deadlineMonoMs: 8_000, tripped: false });
  });

  it('a later deadline still ahead moves the deadline and ends a trip', () => {
    expect(applyFeed({ deadlineMonoMs: 8_000, tripped: false }, 11_000, now)).toEqual({ deadlineMonoMs: 11_000, tripped: false });
    expect(applyFeed({ deadlineMonoMs: 5_000, tripped: true }, 11_000, now)).toEqual({ deadlineMonoMs: 11_000, tripped: false });
  });

  it('an earlier or equal deadline (a lost lease) is taken, but ends no trip', () => {
    expect(applyFeed({ deadlineMonoMs: 8_000, tripped: false }, 5_000, now)).toEqual({ deadlineMonoMs: 5_000, tripped: false });
    expect(applyFeed({ deadlineMonoMs: 5_000, tripped: true }, 5_000, now)).toEqual({ deadlineMonoMs: 5_000, tripped: true });
    expect(applyFeed({ deadlineMonoMs: 5_000, tripped: true }, 4_000, now)).toEqual({ deadlineMonoMs: 4_000, tripped: true });
  });

  it('a later deadline that has passed already ends no trip', () => {
    expect(applyFeed({ deadlineMonoMs: 5_000, tripped: true }, 5_500, now)).toEqual({ deadlineMonoMs: 5_500, tripped: true });
    expect(applyFeed({ deadlineMonoMs: 5_000, tripped: true }, now, now)).toEqual({ deadlineMonoMs: now, tripped: true });
  });
});

describe('hardware watchdog keep-alives', () => {
  it('go only from a fed guard that has not tripped', () => {
    expect(watchdogKeepAlive({ deadlineMonoMs: null, tripped: false })).toBe(false);
    expect(watchdogKeepAlive({ deadlineMonoMs: 8_000, tripped: false })).toBe(true);
    expect(watchdogKeepAlive({ deadlineMonoMs: 8_000, tripped: true })).toBe(false);
  });
});
