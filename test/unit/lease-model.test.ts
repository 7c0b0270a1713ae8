/**
 * The pure lease model: granted ttl, last renewal sent, margin, and the
 * deadline after which a holder must stop acting.
 */
import { describe, expect, it } from 'vitest';
import {
  grantedLease,
  leaseDeadlineMs,
  leaseExpiryMs,
  leaseMarginMs,
  leaseTrusted,
  lostLease,
  moveAbandoned,
  moveCommitted,
  moveStarted,
  renewedLease,
  renewIntervalMs,
  ttlChange,
} from '../../src/model/lease.js';

const T = 1_000_000;

describe('lease margin and renewal interval', () => {
  it.each([
    // ttlSeconds, loopIntervalMs, margin
    [10, 1000, 2000],
    [10, 200, 2000],
    [10, 1500, 3000],
    [30, 5000, 10_000],
    // never more than half the ttl: a holder renewing every ttl/3 keeps acting
    [5, 2500, 2500],
    [10, 4000, 5000],
  ])('ttl %i s, loop %i ms: margin %i ms', (ttlSeconds, loopMs, marginMs) => {
    expect(leaseMarginMs(ttlSeconds, loopMs)).toBe(marginMs);
  });

  it('renews every third of the granted ttl, never closer than 200 ms', () => {
    expect(renewIntervalMs(9)).toBe(3000);
    expect(renewIntervalMs(30)).toBe(10_000);
    expect(renewIntervalMs(0.3)).toBe(200);
  });
});

describe('the deadline', () => {
  it('is last renewal sent + granted ttl - margin; a never granted lease is past it', () => {
    const lease = grantedLease('L1', 10, T, 2000);
    expect(leaseExpiryMs(lease)).toBe(T + 10_000);
    expect(leaseDeadlineMs(lease)).toBe(T + 8000);
    expect(leaseDeadlineMs(null)).toBe(Number.NEGATIVE_INFINITY);
    expect(leaseTrusted(lease, T + 7999)).toBe(true);
    expect(leaseTrusted(lease, T + 8000)).toBe(false);
    expect(leaseTrusted(null, T)).toBe(false);
  });

  it('a renewal moves it on from the time the keep-alive was sent; a late answer never moves it back', () => {
    const lease = renewedLease(grantedLease('L1', 10, T, 2000), 'L1', T + 3000);
    expect(leaseDeadlineMs(lease)).toBe(T + 11_000);
    expect(leaseDeadlineMs(renewedLease(lease, 'L1', T + 1000))).toBe(T + 11_000);
    // an answer about another lease changes nothing
    expect(renewedLease(lease, 'L9', T + 6000)).toEqual(lease);
  });

  it('a lost lease is never trusted, but keeps the times that say when it ran out', () => {
    const lost = lostLease(grantedLease('L1', 10, T, 2000));
    expect(lost.id).toBeNull();
    expect(leaseDeadlineMs(lost)).toBe(T + 8000);
    expect(leaseTrusted(lost, T)).toBe(false);
  });
});

describe('a move to a lease with another ttl', () => {
  const held = grantedLease('L1', 10, T, 2000);

  it('until it commits the keys may be on either lease: the earlier deadline rules', () => {
    // ttl raised: the old lease's deadline is the earlier one
    const raised = moveStarted(held, { id: 'L2', ttlSeconds: 30, lastRenewalMs: T + 1000 });
    expect(leaseDeadlineMs(raised)).toBe(T + 8000);
    // ttl lowered: the new lease may run out first
    const lowered = moveStarted(renewedLease(held, 'L1', T + 4000), { id: 'L2', ttlSeconds: 5, lastRenewalMs: T + 4500 });
    expect(leaseDeadlineMs(lowered)).toBe(T + 4500 + 5000 - 2000);
    // renewing the lease being moved to moves its part of the deadline
    expect(leaseDeadlineMs(renewedLease(lowered, 'L2', T + 6000))).toBe(T + 6000 + 5000 - 2000);
  });

  it('committed: the new lease alone rules, with its own granted ttl and margin', () => {
    const moved = moveCommitted(moveStarted(held, { id: 'L2', ttlSeconds: 30, lastRenewalMs: T + 1000 }), 2000);
    expect(moved).toEqual({ id: 'L2', ttlSeconds: 30, lastRenewalMs: T + 1000, marginMs: 2000 });
    expect(leaseDeadlineMs(moved)).toBe(T + 29_000);
  });

  it('refused: the old lease alone rules', () => {
    expect(moveAbandoned(moveStarted(held, { id: 'L2', ttlSeconds: 30, lastRenewalMs: T }))).toEqual(held);
  });

  it('is wanted when the config ttl differs from the granted one, or while a move is unsettled', () => {
    expect(ttlChange(held, 10)).toBeNull();
    expect(ttlChange(held, 30)).toEqual({ fromSeconds: 10, toSeconds: 30 });
    expect(ttlChange(moveStarted(held, { id: 'L2', ttlSeconds: 10, lastRenewalMs: T }), 10)).toEqual({ fromSeconds: 10, toSeconds: 10 });
    expect(ttlChange(null, 30)).toBeNull();
    expect(ttlChange(lostLease(held), 30)).toBeNull();
  });
});
