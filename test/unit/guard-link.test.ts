import { describe, expect, it } from 'vitest';
import { guardDeadlineMs } from '../../src/agent/guard-link.js';
import { grantedLease, lostLease, moveStarted } from '../../src/model/lease.js';

const NOW = 1_000_000;

describe('the deadline an agent feeds its guard', () => {
  it('is nothing before the first grant: an unfed guard never fences', () => {
    expect(guardDeadlineMs(null, NOW)).toBeNull();
  });

  it("is the lease's own deadline: last renewal sent + granted ttl - margin", () => {
    expect(guardDeadlineMs(grantedLease('L1', 10, NOW - 1000, 2000), NOW)).toBe(NOW + 7000);
    expect(guardDeadlineMs(grantedLease('L1', 30, NOW - 1000, 2000), NOW)).toBe(NOW + 27_000);
  });

  it('is the earlier of both leases while the keys move to a new one', () => {
    const lease = moveStarted(grantedLease('L1', 30, NOW - 1000, 2000), { id: 'L2', ttlSeconds: 10, lastRenewalMs: NOW - 500 });
    expect(guardDeadlineMs(lease, NOW)).toBe(NOW + 7500);
  });

  it('is now once etcd said the lease is gone, even if its times would allow more', () => {
    expect(guardDeadlineMs(lostLease(grantedLease('L1', 10, NOW - 1000, 2000)), NOW)).toBe(NOW);
    expect(guardDeadlineMs(lostLease(grantedLease('L1', 10, NOW - 20_000, 2000)), NOW)).toBe(NOW - 12_000);
  });
});
