/** Operator requests to change the leader (src/dcs/requests.ts): which targets a switchover and a failover accept. */
import { describe, expect, it } from 'vitest';
import { checkTarget } from '../../src/dcs/requests.js';
import { defaultDynamicConfig } from '../../src/config/schema.js';
import { cluster, leaderKey, member, NOW, primaryMember } from './fixtures.js';

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
