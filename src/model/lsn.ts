/**
 * WAL positions. PostgreSQL prints them as two hex halves `X/Y`; Keel keeps
 * them as byte offsets in a number. 2^53 bytes of WAL is far beyond any real
 * cluster's lifetime, so a double represents every position exactly.
 */

const lsnPattern = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/;
const halfSize = 2 ** 32;

/** Parses `X/Y` into a byte position; throws on anything else. */
export function parseLsn(text: string): number {
  const match = lsnPattern.exec(text.trim());
  if (!match) throw new Error(`not a WAL position: ${JSON.stringify(text)}`);
  return parseInt(match[1]!, 16) * halfSize + parseInt(match[2]!, 16);
}

/** Like parseLsn, but null for SQL NULL (pg returns null for absent positions). */
export function parseLsnOrNull(text: string | null | undefined): number | null {
  return text === null || text === undefined ? null : parseLsn(text);
}

/** Formats a byte position the way PostgreSQL prints it (upper-case hex, no padding). */
export function formatLsn(lsn: number): string {
  if (!Number.isSafeInteger(lsn) || lsn < 0) throw new Error(`not a WAL position: ${lsn}`);
  const high = Math.floor(lsn / halfSize);
  const low = lsn % halfSize;
  return `${high.toString(16).toUpperCase()}/${low.toString(16).toUpperCase()}`;
}

/** The WAL positions a member publishes (see MemberValue). */
export interface PublishedPositions {
  walLsn: number | null;
  receivedLsn: number | null;
  replayedLsn: number | null;
}

/**
 * The furthest WAL position a member has: written (primary), or received or
 * replayed (replica). What a failover could keep of it is what it received.
 */
export function memberLsn(member: PublishedPositions): number {
  return Math.max(member.walLsn ?? 0, member.receivedLsn ?? 0, member.replayedLsn ?? 0);
}

/**
 * Replication lag, the one definition Keel uses everywhere (status, API,
 * router, controller, failover checks): bytes of WAL between the leader's
 * position and the furthest this member has (received or replayed). Null
 * when the leader's position is unknown.
 */
export function lagBytes(leaderLsn: number | null, member: PublishedPositions): number | null {
  if (leaderLsn === null) return null;
  return Math.max(0, leaderLsn - memberLsn(member));
}
