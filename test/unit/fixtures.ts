import { defaultDynamicConfig } from '../../src/config/schema.js';
import type { ClusterView, MemberValue } from '../../src/model/values.js';
import type { ControlData, RuntimeState } from '../../src/postgres/types.js';
import { emptyAgentMemory, type AgentMemory } from '../../src/agent/memory.js';
import type { Snapshot } from '../../src/agent/snapshot.js';
import type { Lease } from '../../src/model/lease.js';

export const NOW = 1_000_000;
export const SYSID = '7300000000000000001';

export function member(name: string, over: Partial<MemberValue> = {}): MemberValue {
  return {
    v: 1,
    name,
    role: 'replica',
    state: 'replica',
    running: true,
    streaming: true,
    timeline: 1,
    walLsn: null,
    receivedLsn: 1000,
    replayedLsn: 1000,
    upstream: 'node1',
    zone: 'a',
    tags: {},
    apiUrl: `http://127.0.0.1:80${name.slice(-1)}`,
    pgHost: '127.0.0.1',
    pgPort: 5500 + Number(name.slice(-1)),
    reason: '',
    systemId: SYSID,
    agentPid: 1,
    postmasterPid: 2,
    dataDir: `/d/${name}`,
    updatedAtMs: NOW - 500,
    ...over,
  };
}

export function primaryMember(name: string, over: Partial<MemberValue> = {}): MemberValue {
  return member(name, { role: 'primary', state: 'primary', walLsn: 1000, receivedLsn: null, replayedLsn: null, upstream: null, ...over });
}

export function cluster(over: Partial<ClusterView> = {}): ClusterView {
  return {
    revision: '10',
    initialize: { value: { v: 1, by: 'node1', systemId: SYSID }, modRevision: '2' },
    config: null,
    leader: null,
    members: [],
    status: null,
    sync: null,
    switchover: null,
    history: null,
    draining: [],
    creations: [],
    routers: [],
    ...over,
  };
}

export function leaderKey(name: string, leaseId = 'L1'): ClusterView['leader'] {
  return { value: { v: 1, name }, modRevision: '5', leaseId };
}

export function control(over: Partial<ControlData> = {}): ControlData {
  return {
    systemId: SYSID,
    clusterState: 'shut down in recovery',
    timeline: 1,
    checkpointLsn: 900,
    minRecoveryLsn: 900,
    dataChecksums: true,
    backupLabel: false,
    ...over,
  };
}

export function replicaRuntime(over: Partial<RuntimeState> = {}): RuntimeState {
  return {
    inRecovery: true,
    timeline: 1,
    walLsn: null,
    receivedLsn: 1000,
    replayedLsn: 1000,
    streaming: true,
    upstreamHost: '127.0.0.1',
    upstreamPort: 5501,
    replicas: [],
    slots: [],
    primaryConninfo: "host=127.0.0.1 port=5501 user=replicator application_name=node2 passfile='/d/pgpass'",
    primarySlotName: 'node2',
    synchronousStandbyNames: '',
    walRetrieveRetryMs: 1000,
    ...over,
  };
}

export function primaryRuntime(over: Partial<RuntimeState> = {}): RuntimeState {
  return replicaRuntime({
    inRecovery: false,
    walLsn: 1000,
    receivedLsn: null,
    replayedLsn: null,
    streaming: false,
    upstreamHost: null,
    upstreamPort: null,
    primaryConninfo: '',
    primarySlotName: '',
    ...over,
  });
}

/** This agent's lease: granted with the default 10 s ttl, renewed 1 s ago, 2 s margin (deadline NOW + 7 s). */
export function heldLease(over: Partial<Lease> = {}): Lease {
  return { id: 'L2', ttlSeconds: 10, lastRenewalMs: NOW - 1000, marginMs: 2000, ...over };
}

/** A snapshot of node2 by default: a running, streaming replica of node1. */
export function snapshot(
  over: Omit<Partial<Snapshot>, 'memory' | 'lastJob'> & { pg?: Partial<Snapshot['pg']>; memory?: Partial<AgentMemory>; lastJob?: TestJob | null } = {},
): Snapshot {
  const { pg, memory, lastJob, ...rest } = over;
  return {
    nowMs: NOW,
    me: { name: 'node2', nofailover: false },
    state: 'replica',
    cluster: cluster({ leader: leaderKey('node1'), members: [primaryMember('node1'), member('node2'), member('node3')] }),
    // the table rows are written for asynchronous replication unless they say otherwise
    config: { ...defaultDynamicConfig, synchronous_mode: 'off' },
    lease: heldLease(),
    // a job given by a row is the one that just finished: the memory has not seen it yet
    lastJob: lastJob ? { seq: 1, actions: [lastJob.kind], ...lastJob } : null,
    ...rest,
    memory: { ...emptyAgentMemory(), ...memory },
    pg: {
      dataDir: 'present',
      control: control(),
      postmasterPid: 42,
      runtime: replicaRuntime(),
      ...pg,
    },
  };
}

/** A finished job as a row writes it; seq and the job's actions default to one job of that kind. */
type TestJob = Omit<NonNullable<Snapshot['lastJob']>, 'seq' | 'actions'> & Partial<Pick<NonNullable<Snapshot['lastJob']>, 'seq' | 'actions'>>;
