/**
 * Which reading of PostgreSQL a promotion records its switch point from
 * (actions.ts, promotionReading): a switchover's target whose snapshot shows
 * the old leader's shutdown checkpoint replayed takes no other reading in the
 * pause; one behind it reads until it is past (and fails when it never gets
 * there); a failover reads again. Against the in-memory store and a fake
 * PostgreSQL that counts its readings.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { runAction, type ActionContext } from '../../src/agent/actions.js';
import type { Action } from '../../src/agent/snapshot.js';
import { nodeConfigSchema } from '../../src/config/schema.js';
import { LeaseKeeper } from '../../src/dcs/lease-keeper.js';
import { MemoryDcs } from '../../src/dcs/memory.js';
import { leaseMarginMs } from '../../src/model/lease.js';
import { systemClock } from '../../src/util/clock.js';
import { silentLogger } from '../../src/util/log.js';
import { cluster, replicaRuntime, snapshot, SYSID } from './fixtures.js';
import { FakePostgres } from './lease-fakes.js';

let dcs: MemoryDcs;
let pg: FakePostgres;
let lease: LeaseKeeper;
let ctx: ActionContext;
/** readings of PostgreSQL taken before it was asked to promote */
let readsBeforePromote: number | null;

beforeEach(async () => {
  dcs = new MemoryDcs({ cluster: 'main', clock: systemClock });
  await dcs.claimInitialize({ v: 1, by: 'node1', systemId: SYSID });
  pg = new FakePostgres('node2', { running: true, primary: false });
  readsBeforePromote = null;
  const promote = pg.promote.bind(pg);
  pg.promote = async (options) => {
    readsBeforePromote = pg.runtimeReads;
    return promote(options);
  };
  lease = new LeaseKeeper({ dcs, clock: systemClock, logger: silentLogger(), marginMs: (ttl) => leaseMarginMs(ttl, 1000), onLost: () => undefined });
  await lease.grant(10);
  ctx = {
    config: nodeConfigSchema.parse({
      name: 'node2',
      cluster: 'main',
      etcd: { endpoints: ['http://127.0.0.1:2379'] },
      api: { listen: '127.0.0.1:8002' },
      postgres: { dataDir: pg.dataDir, port: 5502, superuser: { password: 'superuser-pw' }, replication: { password: 'replication-pw' } },
    }),
    dcs,
    pg,
    lease,
    logger: silentLogger(),
    now: () => Date.now(),
    setWritable: () => undefined,
  };
});

afterEach(() => lease.stopTimer());

/** node2 promoting with the key free, as decide() asks; `handover`: the old leader's shutdown checkpoint starts there */
function promotion(handover?: { afterLsn: number; timeoutMs: number }): Action {
  return { kind: 'promote', reason: 'test', sync: null, acquire: true, ...(handover === undefined ? {} : { handover }) };
}

/** The snapshot of node2 that decided it, its reading replayed up to `replayedLsn`, the leader key free. */
function decidedAt(replayedLsn: number) {
  return snapshot({ cluster: cluster({ leader: null }), pg: { runtime: replicaRuntime({ receivedLsn: replayedLsn, replayedLsn }) } });
}

async function switchLsn(): Promise<number | undefined> {
  return (await dcs.readCluster()).history?.value.entries.at(-1)?.switchLsn;
}

describe('the reading a promotion goes by', () => {
  it("a switchover's target whose snapshot replayed the old leader's shutdown checkpoint reads nothing more: its switch point is the snapshot's", async () => {
    // PostgreSQL says more now than the snapshot did; with nothing after the shutdown checkpoint that cannot happen, and the
    // figure shows which reading was used
    pg.walLsn = 9000;
    await runAction(promotion({ afterLsn: 1500, timeoutMs: 1000 }), decidedAt(1600), ctx);
    expect(readsBeforePromote).toBe(0);
    expect(pg.promotedAtMs).not.toBeNull();
    expect(await switchLsn()).toBe(1600);
    expect((await dcs.readCluster()).leader?.value.name).toBe('node2');
  });

  it('one whose snapshot is short of it reads until it is past, and records that reading', async () => {
    pg.walLsn = 1400;
    setTimeout(() => (pg.walLsn = 1700), 60);
    await runAction(promotion({ afterLsn: 1500, timeoutMs: 5000 }), decidedAt(1400), ctx);
    expect(readsBeforePromote).toBeGreaterThan(1);
    expect(await switchLsn()).toBe(1700);
    expect(pg.promotedAtMs).not.toBeNull();
  });

  it('one that never gets past it does not promote, and neither takes the key nor writes a history entry', async () => {
    pg.walLsn = 1400;
    await expect(runAction(promotion({ afterLsn: 1500, timeoutMs: 100 }), decidedAt(1400), ctx)).rejects.toThrow(/replayed WAL up to 1400 only, not past the old leader's shutdown checkpoint at 1500/);
    expect(pg.promotedAtMs).toBeNull();
    const view = await dcs.readCluster();
    expect(view.leader).toBeNull();
    expect(view.history).toBeNull();
  });

  it('a failover reads again: WAL may have come since the snapshot', async () => {
    pg.walLsn = 2500;
    await runAction(promotion(), decidedAt(2000), ctx);
    expect(readsBeforePromote).toBe(1);
    expect(await switchLsn()).toBe(2500);
  });
});

describe('the switchover request a promotion carries out', () => {
  /** node2's snapshot, decided with the request to hand over to it in view */
  async function decidedWithRequest(leader: 'free' | 'mine') {
    expect(await dcs.requestSwitchover({ v: 1, from: 'node1', to: 'node2', failover: false, requestedAtMs: Date.now() })).toBe(true);
    if (leader === 'mine') expect(await dcs.acquireLeader('node2', lease.id!)).toBe(true);
    const view = await dcs.readCluster();
    return snapshot({ cluster: view, pg: { runtime: replicaRuntime({ receivedLsn: 1600, replayedLsn: 1600 }) } });
  }

  it('goes with the transaction that takes the key: no write of its own after the promotion', async () => {
    let clears = 0;
    const clear = dcs.clearSwitchover.bind(dcs);
    dcs.clearSwitchover = (expect) => ((clears += 1), clear(expect));
    const snap = await decidedWithRequest('free');
    await runAction(promotion({ afterLsn: 1500, timeoutMs: 1000 }), snap, ctx);
    const view = await dcs.readCluster();
    expect(view.leader?.value.name).toBe('node2');
    expect(view.switchover).toBeNull();
    expect(clears).toBe(0);
  });

  it('is cleared after the promotion by a node that held the key already', async () => {
    let clears = 0;
    const clear = dcs.clearSwitchover.bind(dcs);
    dcs.clearSwitchover = (expect) => ((clears += 1), clear(expect));
    const snap = await decidedWithRequest('mine');
    await runAction({ kind: 'promote', reason: 'test', sync: null }, snap, ctx);
    expect((await dcs.readCluster()).switchover).toBeNull();
    expect(clears).toBe(1);
    expect(pg.promotedAtMs).not.toBeNull();
  });
});
