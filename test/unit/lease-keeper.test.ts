/**
 * LeaseKeeper on fake timers against the in-memory store: when it renews,
 * how it retries, where the deadline counts from, what a lost lease does, and
 * when a ttl change starts to count.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { LeaseKeeper } from '../../src/dcs/lease-keeper.js';
import { leaseMarginMs } from '../../src/model/lease.js';
import { systemClock } from '../../src/util/clock.js';
import { silentLogger } from '../../src/util/log.js';
import { member } from './fixtures.js';
import { gate, ScriptedDcs } from './lease-fakes.js';

const T0 = 1_000_000;

let dcs: ScriptedDcs;
let lost: number;
let keeper: LeaseKeeper;

beforeEach(() => {
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date'] });
  vi.setSystemTime(T0);
  dcs = new ScriptedDcs({ cluster: 'main', clock: systemClock });
  lost = 0;
  keeper = new LeaseKeeper({
    dcs,
    clock: systemClock,
    logger: silentLogger(),
    marginMs: (ttlSeconds) => leaseMarginMs(ttlSeconds, 1000),
    onLost: () => lost++,
  });
});

afterEach(() => {
  keeper.stopTimer();
  vi.useRealTimers();
});

const sentAt = (id: string | null) => dcs.keepAlivesSent.filter((k) => k.id === id).map((k) => k.atMs - T0);

describe('LeaseKeeper', () => {
  it('renews every third of the granted ttl', async () => {
    await keeper.grant(9);
    await vi.advanceTimersByTimeAsync(9_100);
    expect(sentAt(keeper.id)).toEqual([3000, 6000, 9000]);
    expect(keeper.lastRenewalMs).toBe(T0 + 9000);
    expect(keeper.renewals).toBe(3);
  });

  it('retries a failed renewal about 300 ms later, not one interval later', async () => {
    await keeper.grant(9);
    dcs.keepAliveFails = () => true;
    await vi.advanceTimersByTimeAsync(3300);
    expect(sentAt(keeper.id)).toEqual([3000, 3300]);
    dcs.keepAliveFails = () => false;
    await vi.advanceTimersByTimeAsync(300);
    expect(sentAt(keeper.id)).toEqual([3000, 3300, 3600]);
    expect(keeper.renewalFailures).toBe(2);
    expect(keeper.lastRenewalMs).toBe(T0 + 3600);
    // the retries stop once one got through; the regular interval goes on
    await vi.advanceTimersByTimeAsync(2500);
    expect(sentAt(keeper.id)).toEqual([3000, 3300, 3600, 6000]);
  });

  it('counts the deadline from the time the keep-alive was sent, not answered', async () => {
    await keeper.grant(9);
    dcs.keepAliveDelayMs = 1500;
    await vi.advanceTimersByTimeAsync(4600);
    expect(keeper.renewals).toBe(1);
    expect(keeper.lastRenewalMs).toBe(T0 + 3000);
    // granted ttl 9 s, margin 2 s
    expect(keeper.deadlineMs()).toBe(T0 + 3000 + 9000 - 2000);
  });

  it('stops trusting the lease at its deadline when keep-alives keep failing', async () => {
    await keeper.grant(10);
    dcs.keepAliveFails = () => true;
    await vi.advanceTimersByTimeAsync(7999);
    expect(keeper.trusted()).toBe(true);
    await vi.advanceTimersByTimeAsync(1);
    expect(keeper.trusted()).toBe(false);
    expect(keeper.deadlineMs()).toBe(T0 + 8000);
    // the lease is still ours as far as the keeper knows; it has not been told it is gone
    expect(keeper.id).not.toBeNull();
    expect(lost).toBe(0);
  });

  it('fires onLost once when etcd says the lease is gone, and tells the listeners', async () => {
    let changes = 0;
    keeper.onChange(() => changes++);
    await keeper.grant(9);
    const id = keeper.id!;
    await dcs.revokeLease(id);
    await vi.advanceTimersByTimeAsync(3000);
    expect(lost).toBe(1);
    expect(keeper.id).toBeNull();
    expect(keeper.trusted()).toBe(false);
    // the times of the lost lease remain: they tell when it ran out
    expect(keeper.lastRenewalMs).toBe(T0);
    expect(changes).toBe(2);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(sentAt(id)).toEqual([3000]);
    expect(lost).toBe(1);
  });

  it('a lease etcd expired while it could not be reached is lost once etcd answers again', async () => {
    await keeper.grant(10);
    dcs.setUnreachable(true);
    await vi.advanceTimersByTimeAsync(12_000);
    expect(lost).toBe(0);
    dcs.setUnreachable(false);
    await vi.advanceTimersByTimeAsync(400);
    expect(lost).toBe(1);
  });
});

describe('LeaseKeeper: a ttl change', () => {
  async function leading(ttlSeconds: number): Promise<string> {
    await keeper.grant(ttlSeconds);
    expect(await dcs.acquireLeader('node1', keeper.id!)).toBe(true);
    await dcs.putMember(member('node1'), keeper.id!);
    return keeper.id!;
  }
  const keys = { name: 'node1', member: member('node1'), leader: true };

  it('uses the new granted ttl only once the move committed', async () => {
    const oldId = await leading(10);
    await vi.advanceTimersByTimeAsync(1000);
    const held = gate();
    dcs.moveGate = held.promise;
    const moving = keeper.move(30, keys);
    await vi.advanceTimersByTimeAsync(500);
    // the new lease is granted, the transaction has not committed: the old lease's deadline rules
    expect(keeper.current()?.ttlSeconds).toBe(10);
    expect(keeper.current()?.moving?.ttlSeconds).toBe(30);
    expect(keeper.deadlineMs()).toBe(T0 + 10_000 - 2000);
    held.open();
    expect(await moving).toBe(true);
    expect(keeper.current()).toMatchObject({ ttlSeconds: 30, lastRenewalMs: T0 + 1000, marginMs: 2000 });
    expect(keeper.current()?.moving).toBeUndefined();
    expect(keeper.deadlineMs()).toBe(T0 + 1000 + 30_000 - 2000);
    const view = await dcs.readCluster();
    expect(view.leader?.leaseId).toBe(keeper.id);
    expect(keeper.id).not.toBe(oldId);
    // the old lease was revoked; the new one is renewed every 10 s
    expect(await dcs.keepAlive(oldId)).toBe(false);
    dcs.keepAlivesSent.length = 0;
    await vi.advanceTimersByTimeAsync(10_100);
    expect(sentAt(keeper.id)).toEqual([11_500]);
  });

  it('while a lowered ttl is being moved to, the new lease may run out first: its deadline rules', async () => {
    await leading(30);
    const held = gate();
    dcs.moveGate = held.promise;
    const moving = keeper.move(5, keys);
    await vi.advanceTimersByTimeAsync(100);
    // margin of the held lease (2 s) over the earlier expiry: the 5 s lease granted at T0
    expect(keeper.deadlineMs()).toBe(T0 + 5000 - 2000);
    held.open();
    expect(await moving).toBe(true);
    expect(keeper.current()).toMatchObject({ ttlSeconds: 5, lastRenewalMs: T0 });
    expect(keeper.deadlineMs()).toBe(T0 + 5000 - 2000);
  });

  it('a refused move keeps the old lease and revokes the new one', async () => {
    const oldId = await leading(10);
    // another member took the key meanwhile
    await dcs.releaseLeader('node1');
    const other = await dcs.grantLease(10);
    expect(await dcs.acquireLeader('node2', other)).toBe(true);
    const granted: string[] = [];
    const grant = dcs.grantLease.bind(dcs);
    dcs.grantLease = async (ttl) => {
      const id = await grant(ttl);
      granted.push(id);
      return id;
    };
    expect(await keeper.move(30, keys)).toBe(false);
    expect(keeper.id).toBe(oldId);
    expect(keeper.current()).toMatchObject({ ttlSeconds: 10 });
    expect(keeper.current()?.moving).toBeUndefined();
    expect(await dcs.keepAlive(granted[0]!)).toBe(false);
    expect((await dcs.readCluster()).leader?.value.name).toBe('node2');
  });

  it('a move whose answer was lost keeps both leases alive and is settled by the next move, without a new grant', async () => {
    const oldId = await leading(9);
    dcs.loseMoveAnswer = true;
    await expect(keeper.move(30, keys)).rejects.toMatchObject({ code: 'KEEL_ETCD_UNREACHABLE' });
    const pending = keeper.current()?.moving;
    expect(pending?.ttlSeconds).toBe(30);
    expect(keeper.id).toBe(oldId);
    // the keys may be on either lease: both are renewed, and the earlier deadline rules
    await vi.advanceTimersByTimeAsync(3100);
    expect(sentAt(oldId)).toEqual([3000]);
    expect(sentAt(pending!.id)).toEqual([3000]);
    expect(keeper.deadlineMs()).toBe(T0 + 3000 + 9000 - 2000);
    dcs.loseMoveAnswer = false;
    const grants = vi.spyOn(dcs, 'grantLease');
    expect(await keeper.move(30, keys)).toBe(true);
    expect(grants).not.toHaveBeenCalled();
    expect(keeper.id).toBe(pending!.id);
    expect(keeper.current()).toMatchObject({ ttlSeconds: 30, lastRenewalMs: T0 + 3000 });
    expect(await dcs.keepAlive(oldId)).toBe(false);
  });

  it('writes bound to the lease wait for a move under way, then use the new lease', async () => {
    await leading(10);
    const held = gate();
    dcs.moveGate = held.promise;
    const moving = keeper.move(30, keys);
    await vi.advanceTimersByTimeAsync(10);
    const used: string[] = [];
    const write = keeper.withLease(async (id) => {
      used.push(id);
      await dcs.putMember(member('node1'), id);
      return id;
    });
    await vi.advanceTimersByTimeAsync(10);
    expect(used).toEqual([]);
    held.open();
    await moving;
    expect(await write).toBe(keeper.id);
    expect(used).toEqual([keeper.id]);
  });
});
