/**
 * An etcd lease as its holder knows it, and when the holder must stop acting
 * on it. Pure: no I/O, no timers, no clock of its own.
 *
 * etcd expires a lease `ttl` after the last keep-alive it RECEIVED. The holder
 * records when it SENT the grant or keep-alive, which is never later, so
 * `lastRenewalMs + ttl` is never after the server's expiry. The holder stops
 * acting (a leader stops accepting writes, a controller stops acting) `marginMs`
 * before that: time to stop PostgreSQL and slack for clocks that run apart.
 *
 * The ttl is the one etcd GRANTED the lease with: keep-alives renew a lease to
 * its granted ttl, whatever the configuration says now.
 */

/** Timing of one granted lease. */
export interface LeaseTerms {
  id: string;
  /** the ttl etcd granted this lease with */
  ttlSeconds: number;
  /** when the grant or the last acknowledged keep-alive was SENT */
  lastRenewalMs: number;
}

export interface Lease {
  /** null once etcd said the lease is gone; the times below still say when it ran out */
  id: string | null;
  ttlSeconds: number;
  lastRenewalMs: number;
  /** how long before the earliest server-side expiry the holder stops acting */
  marginMs: number;
  /**
   * A lease granted with another ttl that the holder's keys are being moved to.
   * Until the move is known to have committed the keys may be bound to either
   * lease, so the earlier of the two deadlines rules.
   */
  moving?: LeaseTerms;
}

/** The margin never falls below this: stopping PostgreSQL and a clock step must fit in it. */
export const minLeaseMarginMs = 2000;
/** After a failed keep-alive the next one goes this soon, not one renewal interval later. */
export const renewRetryMs = 300;
/** Renewals never come closer together than this, whatever the ttl. */
const minRenewIntervalMs = 200;

/**
 * The margin for a lease of `ttlSeconds` whose holder loops every
 * `loopIntervalMs`: two loops or 2 s, whichever is longer, but never more than
 * half the ttl, so that renewing every ttl/3 keeps a healthy holder acting.
 */
export function leaseMarginMs(ttlSeconds: number, loopIntervalMs: number): number {
  return Math.min(Math.max(minLeaseMarginMs, 2 * loopIntervalMs), (ttlSeconds * 1000) / 2);
}

/** Keep-alives go every ttl/3 of the granted ttl: two may fail before the margin is reached. */
export function renewIntervalMs(ttlSeconds: number): number {
  return Math.max(minRenewIntervalMs, (ttlSeconds * 1000) / 3);
}

export function grantedLease(id: string, ttlSeconds: number, sentAtMs: number, marginMs: number): Lease {
  return { id, ttlSeconds, lastRenewalMs: sentAtMs, marginMs };
}

/**
 * The lease after etcd acknowledged a keep-alive for `id` sent at `sentAtMs`
 * (the held lease or the one being moved to). A late answer to an older
 * keep-alive never moves the renewal time back.
 */
export function renewedLease(lease: Lease, id: string, sentAtMs: number, marginMs: number = lease.marginMs): Lease {
  if (lease.id === id) return { ...lease, lastRenewalMs: Math.max(lease.lastRenewalMs, sentAtMs), marginMs };
  if (lease.moving?.id === id) {
    return { ...lease, moving: { ...lease.moving, lastRenewalMs: Math.max(lease.moving.lastRenewalMs, sentAtMs) } };
  }
  return lease;
}

/** etcd said the lease is gone: nothing bound to it exists any more. */
export function lostLease(lease: Lease): Lease {
  const { moving: _moving, ...rest } = lease;
  return { ...rest, id: null };
}

/** A move to the lease `terms` has started: from now on the keys may be bound to it. */
export function moveStarted(lease: Lease, terms: LeaseTerms): Lease {
  return { ...lease, moving: terms };
}

/** The move committed: the keys are bound to the new lease only, whose own ttl rules from now on. */
export function moveCommitted(lease: Lease, marginMs: number): Lease {
  if (lease.moving === undefined) return lease;
  return grantedLease(lease.moving.id, lease.moving.ttlSeconds, lease.moving.lastRenewalMs, marginMs);
}

/** The move was refused: the keys stayed on the held lease. */
export function moveAbandoned(lease: Lease): Lease {
  const { moving: _moving, ...rest } = lease;
  return rest;
}

/** The earliest moment etcd may expire the lease (or, during a move, either lease). */
export function leaseExpiryMs(lease: Lease): number {
  const own = lease.lastRenewalMs + lease.ttlSeconds * 1000;
  if (lease.moving === undefined) return own;
  return Math.min(own, lease.moving.lastRenewalMs + lease.moving.ttlSeconds * 1000);
}

/**
 * The moment from which the holder must no longer act or accept writes
 * (safety rule 1). Never granted: already passed.
 */
export function leaseDeadlineMs(lease: Lease | null): number {
  if (lease === null) return Number.NEGATIVE_INFINITY;
  return leaseExpiryMs(lease) - lease.marginMs;
}

/** Whether the holder may still act on the lease at `nowMs`. */
export function leaseTrusted(lease: Lease | null, nowMs: number): boolean {
  return lease !== null && lease.id !== null && nowMs < leaseDeadlineMs(lease);
}

/**
 * The granted ttl and the wanted one when the holder's keys should move to a
 * new lease: the ttls differ, or a move's outcome is still unknown (moving it
 * again settles which lease the keys are on).
 */
export function ttlChange(lease: Lease | null, wantedTtlSeconds: number): { fromSeconds: number; toSeconds: number } | null {
  if (lease === null || lease.id === null) return null;
  if (lease.ttlSeconds === wantedTtlSeconds && lease.moving === undefined) return null;
  return { fromSeconds: lease.ttlSeconds, toSeconds: wantedTtlSeconds };
}
