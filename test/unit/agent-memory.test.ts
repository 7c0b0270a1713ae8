/** What an agent remembers between loops (src/agent/memory.ts): a table of observations and the memory after each. */
import { describe, expect, it } from 'vitest';
import { decide } from '../../src/agent/decide.js';
import { emptyAgentMemory, recentlyGone, remember, type AgentMemory, type MemoryInput } from '../../src/agent/memory.js';
import { cluster, member, NOW, primaryMember, primaryRuntime, replicaRuntime, snapshot } from './fixtures.js';

const base = (over: Partial<MemoryInput> & { memory?: Partial<AgentMemory> }): MemoryInput => ({
  nowMs: NOW,
  cluster: cluster({ members: [primaryMember('node1'), member('node2')] }),
  runtime: replicaRuntime(),
  memberSlotsTtlSeconds: 1800,
  lastJob: null,
  ...over,
  memory: { ...emptyAgentMemory(), lastSeenMs: {}, ...over.memory },
});

const rows: { name: string; input: MemoryInput; expect: Partial<AgentMemory> }[] = [
  {
    name: 'a replica that stops streaming starts its count now',
    input: base({ runtime: replicaRuntime({ streaming: false }) }),
    expect: { notStreamingSinceMs: NOW },
  },
  {
    name: 'a replica still not streaming keeps the count it started',
    input: base({ runtime: replicaRuntime({ streaming: false }), memory: { notStreamingSinceMs: NOW - 4000 } }),
    expect: { notStreamingSinceMs: NOW - 4000 },
  },
  {
    name: 'streaming again ends the count and forgets the former primary position',
    input: base({ memory: { notStreamingSinceMs: NOW - 4000, formerPrimary: { timeline: 1, walLsn: 900 } } }),
    expect: { notStreamingSinceMs: null, formerPrimary: null },
  },
  {
    name: 'a running primary records where it writes',
    input: base({ runtime: primaryRuntime({ timeline: 3, walLsn: 4242 }) }),
    expect: { formerPrimary: { timeline: 3, walLsn: 4242 }, notStreamingSinceMs: null },
  },
  {
    name: 'a job that finished since restarts the count',
    input: base({ runtime: replicaRuntime({ streaming: false }), memory: { notStreamingSinceMs: NOW - 9000, jobSeen: 1 }, lastJob: { seq: 2, actions: ['follow'], ok: true } }),
    expect: { notStreamingSinceMs: NOW, jobSeen: 2 },
  },
  {
    name: 'a job already seen changes nothing',
    input: base({ runtime: replicaRuntime({ streaming: false }), memory: { notStreamingSinceMs: NOW - 9000, jobSeen: 2 }, lastJob: { seq: 2, actions: ['follow'], ok: true } }),
    expect: { notStreamingSinceMs: NOW - 9000, jobSeen: 2 },
  },
  {
    name: 'a rewind that succeeded forgets the former primary position',
    input: base({ runtime: replicaRuntime({ streaming: false }), memory: { formerPrimary: { timeline: 1, walLsn: 900 } }, lastJob: { seq: 1, actions: ['stopPostgres', 'rewind', 'startPostgres'], ok: true } }),
    expect: { formerPrimary: null },
  },
  {
    name: 'a rewind that failed keeps it',
    input: base({ runtime: replicaRuntime({ streaming: false }), memory: { formerPrimary: { timeline: 1, walLsn: 900 } }, lastJob: { seq: 1, actions: ['stopPostgres', 'rewind'], ok: false } }),
    expect: { formerPrimary: { timeline: 1, walLsn: 900 } },
  },
  {
    name: 'members seen now are stamped; one gone recently is kept; one gone longer than member_slots_ttl is dropped',
    input: base({ memory: { lastSeenMs: { node1: NOW - 5000, node3: NOW - 60_000, node4: NOW - 1_800_000 } } }),
    expect: { lastSeenMs: { node1: NOW, node2: NOW, node3: NOW - 60_000 } },
  },
  {
    name: 'a primary records its WAL position when it first sees synchronous_standby_names take a value',
    input: base({ runtime: primaryRuntime({ walLsn: 5000, synchronousStandbyNames: 'ANY 1 ("node2")' }), memory: { syncBarrier: { names: 'ANY 1 ("node2","node3")', lsn: 100 } } }),
    expect: { syncBarrier: { names: 'ANY 1 ("node2")', lsn: 5000 } },
  },
  {
    name: 'the position stays while the names stay, however far the primary writes',
    input: base({ runtime: primaryRuntime({ walLsn: 9000, synchronousStandbyNames: 'ANY 1 ("node2")' }), memory: { syncBarrier: { names: 'ANY 1 ("node2")', lsn: 5000 } } }),
    expect: { syncBarrier: { names: 'ANY 1 ("node2")', lsn: 5000 } },
  },
  {
    name: 'a replica has no synchronous barrier',
    input: base({ memory: { syncBarrier: { names: 'ANY 1 ("node2")', lsn: 5000 } } }),
    expect: { syncBarrier: null },
  },
  {
    name: 'without a read of etcd every sighting is kept as it was',
    input: base({ cluster: null, memory: { lastSeenMs: { node1: NOW - 5000, node4: NOW - 1_800_000 } } }),
    expect: { lastSeenMs: { node1: NOW - 5000, node4: NOW - 1_800_000 } },
  },
];

describe('agent memory', () => {
  for (const row of rows) {
    it(row.name, () => {
      expect(remember(row.input)).toMatchObject(row.expect);
    });
  }

  it('recently gone: remembered members without a key now', () => {
    const memory = { ...emptyAgentMemory(), lastSeenMs: { node1: NOW, node2: NOW, node3: NOW - 60_000 } };
    expect(recentlyGone(memory, cluster({ members: [primaryMember('node1'), member('node2')] }))).toEqual(['node3']);
  });

  it('decide() returns the memory the next loop starts from', () => {
    const first = decide(snapshot({ pg: { runtime: replicaRuntime({ streaming: false }) } }));
    expect(first.memory.notStreamingSinceMs).toBe(NOW);
    const later = decide(snapshot({ nowMs: NOW + 3000, pg: { runtime: replicaRuntime({ streaming: false }) }, memory: first.memory }));
    expect(later.memory.notStreamingSinceMs).toBe(NOW);
    expect(later.memory.lastSeenMs).toMatchObject({ node1: NOW + 3000, node2: NOW + 3000, node3: NOW + 3000 });
  });
});
