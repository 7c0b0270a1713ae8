/** Pure judgements on the member keys agents publish (dcs/types.ts MemberValue). */
import type { MemberValue } from './values.js';

/** A member key updated within one ttl, reporting a running replica. */
export function isFreshReplica(member: MemberValue, nowMs: number, ttlSeconds: number): boolean {
  return member.running && member.role === 'replica' && nowMs - member.updatedAtMs <= ttlSeconds * 1000;
}
