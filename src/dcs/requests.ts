/**
 * Operator requests to change the leader, shared by the CLI (`keel
 * switchover|failover`) and the REST API, so both refuse the same targets for
 * the same reasons the agents would (safety rule 3).
 */
import { defaultDynamicConfig } from '../config/schema.js';
import type { ClusterView, SwitchoverValue } from '../model/values.js';
import type { Dcs } from './types.js';
import { KeelError } from '../errors.js';
import { promotionVerdict } from '../model/promotion.js';
import { memberLsn } from '../model/lsn.js';

/**
 * Throws KEEL_UNKNOWN_MEMBER or KEEL_TARGET_INELIGIBLE when `to` may not be
 * promoted now; `handover`: a planned switchover from the running leader.
 */
export function checkTarget(view: ClusterView, to: string, nowMs: number, handover = false): void {
  const member = view.members.find((m) => m.name === to);
  if (member === undefined) {
    throw new KeelError('KEEL_UNKNOWN_MEMBER', `${to} is not a member of the cluster (members: ${view.members.map((m) => m.name).join(', ') || 'none'})`);
  }
  if (view.leader?.value.name === to) throw new KeelError('KEEL_TARGET_INELIGIBLE', `${to} already leads`);
  const config = view.config?.value ?? defaultDynamicConfig;
  const verdict = promotionVerdict(member, view, config, nowMs, { ignoreOthers: true, handover });
  if (!verdict.ok) throw new KeelError('KEEL_TARGET_INELIGIBLE', `cannot promote ${to}: ${verdict.why}`);
  const leader = view.members.find((m) => m.name === view.leader?.value.name);
  if (leader?.walLsn != null) {
    const lagBytes = leader.walLsn - memberLsn(member);
    if (lagBytes > config.maximum_lag_on_failover) {
      throw new KeelError(
        'KEEL_TARGET_INELIGIBLE',
        `cannot promote ${to}: it lags ${lagBytes} bytes behind ${leader.name} (maximum_lag_on_failover ${config.maximum_lag_on_failover})`,
      );
    }
  }
  // A running leader hands over only to a replica that streams from it (decide.ts refuses the others).
  if (view.leader !== null && !member.streaming) {
    throw new KeelError('KEEL_TARGET_INELIGIBLE', `cannot promote ${to}: it does not stream from ${view.leader.value.name}`, {
      hint: 'wait for it to stream (see `keel status`), or pick another replica',
    });
  }
}

export interface LeaderChangeRequest {
  /** true: promote `to` whether or not the leader is healthy; false: planned switchover from a running leader */
  failover: boolean;
  /** the member to promote; null lets the healthiest replica take over (switchover only) */
  to: string | null;
  /** when given, the request is refused unless this member leads (a guard against acting on a stale view) */
  expectLeader?: string;
}

/**
 * Validates the request against one read of the cluster and records it with a
 * create-if-absent write. Returns what was recorded; the agents carry it out.
 */
export async function requestLeaderChange(dcs: Dcs, request: LeaderChangeRequest, nowMs: number): Promise<SwitchoverValue> {
  const view = await dcs.readCluster();
  const from = view.leader?.value.name ?? null;
  if (request.failover && request.to === null) {
    throw new KeelError('KEEL_USAGE', 'a failover needs the member to promote', { hint: 'name a candidate' });
  }
  if (!request.failover && from === null) {
    throw new KeelError('KEEL_NO_LEADER', 'there is no leader to switch over from', { hint: 'request a failover to a named member instead' });
  }
  if (request.expectLeader !== undefined && request.expectLeader !== from) {
    if (!view.members.some((m) => m.name === request.expectLeader)) {
      throw new KeelError('KEEL_UNKNOWN_MEMBER', `${request.expectLeader} is not a member of the cluster`);
    }
    throw new KeelError('KEEL_TARGET_INELIGIBLE', `${request.expectLeader} does not lead (leader: ${from ?? 'none'})`, {
      hint: 'read the cluster again and name the current leader',
    });
  }
  const handover = !request.failover && from !== null;
  if (request.to !== null) checkTarget(view, request.to, nowMs, handover);
  // named in the request: the target then prepares its promotion and the other standbys move to it before the hold
  const to = request.to ?? healthiestEligible(view, nowMs, handover);
  const value: SwitchoverValue = { v: 1, from, to, failover: request.failover, requestedAtMs: nowMs };
  if (!(await dcs.requestSwitchover(value))) {
    throw new KeelError('KEEL_CONFLICT', 'another switchover or failover is pending', { hint: 'wait for it to finish (see `keel status`)' });
  }
  return value;
}

/**
 * The replica a switchover without a named target goes to: the most advanced
 * one the leader would hand over to, as the leader itself would pick.
 */
function healthiestEligible(view: ClusterView, nowMs: number, handover: boolean): string {
  const refusals: string[] = [];
  for (const member of [...view.members].sort((a, b) => memberLsn(b) - memberLsn(a))) {
    if (member.name === view.leader?.value.name) continue;
    try {
      checkTarget(view, member.name, nowMs, handover);
      return member.name;
    } catch (err) {
      refusals.push(err instanceof Error ? err.message : String(err));
    }
  }
  throw new KeelError('KEEL_TARGET_INELIGIBLE', `no replica may take over: ${refusals.join('; ') || 'there is no other member'}`);
}
