/** Operator requests to change the leader (src/dcs/requests.ts): which targets a switchover and a failover accept, and which one a switchover with none named gets. */
import { describe, expect, it } from 'vitest';
import { checkTarget, requestLeaderChange } from '../../src/dcs/requests.js';
import { MemoryDcs } from '../../src/dcs/memory.js';
import { systemClock } from '../../src/util/clock.js';
import { defaultDynamicConfig } from '../../src/config/schema.js';
import { cluster, leaderKey, member, NOW, primaryMember, SYSID } from './fixtures.js';

// synchronous, ANY 1 of (node2, node3); node3 is behind node2 at this moment, as one standby always is under writes
const view = cluster({
  leader: leaderKey('node1'),
  members: [primaryMember('node1'), member('node2', { receivedLsn: 1000, replayedLsn: 1000 }), member('node3', { receivedLsn: 990, replayedLsn: 990 })],
  sync: { value: { v: 1, leader: 'node1', members: ['node2', 'node3'], quorum: 1 }, modRevision: '1' },
  config: { value: { ...defaultDynamicConfig, synchronous_mode: 'on' }, modRevision: '1' },
});

describe('checkTarget', () => {
  it('a planned switchover from the running leader accepts a standby of the set that is behind for now', () => {
    expect(() => checkTarget(view, 'node3', NOW, true)).not.toThrow();
  });
  it('a failover does not: the leader may not send it what it lacks', () => {
    expect(() => checkTarget(view, 'node3', NOW, false)).toThrow(/node2 of the synchronous set is further ahead/);
  });
  it('neither accepts a member outside the synchronous set', () => {
    const outside = { ...view, sync: { value: { v: 1 as const, leader: 'node1', members: ['node2'], quorum: 1 }, modRevision: '2' } };
    expect(() => checkTarget(outside, 'node3', NOW, true)).toThrow(/not in the synchronous set/);
  });
});

describe('requestLeaderChange', () => {
  it('names the most advanced replica the leader may hand over to when the switchover names none', async () => {
    const dcs = new MemoryDcs({ cluster: 'main', clock: systemClock });
    await dcs.claimInitialize({ v: 1, by: 'node1', systemId: SYSID });
    await dcs.putConfig({ ...defaultDynamicConfig, synchronous_mode: 'off' }, null);
    const lease = await dcs.grantLease(30);
    expect(await dcs.acquireLeader('node1', lease)).toBe(true);
    await dcs.putMember(primaryMember('node1'), lease);
    await dcs.putMember(member('node2', { receivedLsn: 990, replayedLsn: 990 }), lease);
    await dcs.putMember(member('node3', { receivedLsn: 1000, replayedLsn: 1000 }), lease);
    const recorded = await requestLeaderChange(dcs, { failover: false, to: null }, Date.now());
    expect(recorded).toMatchObject({ from: 'node1', to: 'node3' });
    expect((await dcs.readCluster()).switchover?.value.to).toBe('node3');
  });
});
