import type { DynamicConfig } from '../config/schema.js';
import type { Lease } from '../model/lease.js';
import type { ClusterView, MemberValue } from '../model/values.js';
import type { ControlData, DataDirState, RuntimeState, UpstreamTarget } from '../postgres/types.js';
import type { AgentMemory } from './memory.js';
import type { State } from './states.js';

/** Everything one decision looks at, gathered once and never changed. */
export interface Snapshot {
  nowMs: number;
  me: { name: string; nofailover: boolean };
  state: State;
  /** null when etcd could not be read this loop */
  cluster: ClusterView | null;
  /** the config key's value, else the last one seen, else defaults */
  config: DynamicConfig;
  /** this agent's lease as its keeper knows it (granted ttl, last renewal sent, margin); null before the first grant */
  lease: Lease | null;
  pg: {
    dataDir: DataDirState;
    control: ControlData | null;
    postmasterPid: number | null;
    /** null when PostgreSQL does not accept connections */
    runtime: RuntimeState | null;
  };
  /** what the previous decision remembered (memory.ts); decide() returns the next one */
  memory: AgentMemory;
  /** the node's fencing guard: absent or 'none' when node.yml configures none */
  guard?: 'connected' | 'disconnected' | 'none';
  /** the outcome of the last job, kept until the next one starts */
  lastJob: {
    /** counts the agent's jobs: a memory that saw job N knows what it did */
    seq: number;
    kind: ActionKind;
    ok: boolean;
    error: string | null;
    finishedAtMs: number;
    /** every action the job had */
    actions: ActionKind[];
  } | null;
}

/** Where a switchover's old leader stopped: its target replays past the start of that shutdown checkpoint before it promotes. */
export interface Handover {
  afterLsn: number;
  timeoutMs: number;
}

export type Action =
  | { kind: 'grantLease' }
  /** move the member key (and the leader key when `leader`) to a new lease granted with ttlSeconds */
  | { kind: 'moveLease'; ttlSeconds: number; leader: boolean }
  | { kind: 'claimInitialize'; systemId: string | null }
  | { kind: 'deleteInitialize'; expectModRevision: string }
  | { kind: 'bootstrap' }
  | { kind: 'acquireLeader' }
  | { kind: 'rebindLeader'; expectModRevision: string }
  /** handover: with the status of the shutdown checkpoint just written, in the same transaction */
  | { kind: 'releaseLeader'; handover?: boolean }
  | { kind: 'clone'; from: UpstreamTarget }
  | { kind: 'rewind'; from: UpstreamTarget }
  | { kind: 'removeDataDir' }
  | { kind: 'startPostgres'; replica: boolean; upstream: UpstreamTarget | null }
  /** handover: a leader stepping down for a switchover, which records where its shutdown checkpoint starts */
  | { kind: 'stopPostgres'; mode: 'fast' | 'immediate'; handover?: boolean }
  /**
   * A switchover prepared while writes go on: a checkpoint (the shutdown's is short then), the standbys in
   * `cascade` gone to the target (waited for, bounded); then the request says routers hold from now.
   */
  | { kind: 'prepareHandover'; cascade: string[] }
  /** waits for the routers to hold and the busy sessions to end; when not prepared (a failover request), the checkpoint and cascade too */
  | { kind: 'drainClients'; timeoutMs: number; prepared: boolean; cascade: string[] }
  /** sync: the widened sync key and synchronous_standby_names set before the first write (sync.ts promotionSyncSet) */
  /**
   * handover: a switchover's target, whose old leader recorded where its shutdown checkpoint starts (afterLsn),
   * first replays WAL past it (fails after timeoutMs), then promotes without the WAL archive (conf.ts, streamOnlyLine)
   */
  /** acquire: take the leader key in the transaction that records the history entry (the key is free) */
  | { kind: 'promote'; reason: string; sync: { key: { members: string[]; quorum: number }; standbyNames: string } | null; handover?: Handover; acquire?: boolean }
  /** shortRetry: retry the upstream every few ms (a standby streaming from a switchover's target; conf.ts promotionRetryLine) */
  /** synchronousStandbyNames: a switchover's target names the standbys its promotion will name (decide-follower.ts) */
  | { kind: 'follow'; upstream: UpstreamTarget; shortRetry?: boolean; synchronousStandbyNames?: string }
  | { kind: 'syncSlots'; names: string[] }
  | { kind: 'clearSwitchover'; expectModRevision: string }
  | { kind: 'putSync'; set: { members: string[]; quorum: number } }
  | { kind: 'setSynchronousStandbys'; value: string }
  | { kind: 'event'; eventKind: string; message: string };

export type ActionKind = Action['kind'];

/** What the agent will do next and the one sentence that says why. */
export interface Decision {
  to: State;
  reason: string;
  actions: Action[];
}

export function upstreamOf(member: MemberValue): UpstreamTarget {
  return { name: member.name, host: member.pgHost, port: member.pgPort };
}

