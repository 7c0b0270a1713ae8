/**
 * Fakes for the lease tests that run on fake timers: the in-memory store with
 * keep-alives and lease moves that can be slowed, failed or held, and a
 * PostgreSQL that only remembers what it was asked to do.
 */
import { MemoryDcs } from '../../src/dcs/memory.js';
import type { LeaseMove } from '../../src/dcs/types.js';
import { KeelError } from '../../src/errors.js';
import type { BusyClients, ControlData, DataDirState, Postgres, PromoteOptions, RuntimeState, StartOptions, StopMode, UpstreamTarget } from '../../src/postgres/types.js';
import { primaryRuntime, replicaRuntime, SYSID } from './fixtures.js';

export class ScriptedDcs extends MemoryDcs {
  readonly keepAlivesSent: { id: string; atMs: number }[] = [];
  keepAliveDelayMs = 0;
  /** keep-alives of the leases it says true for fail as if etcd did not answer */
  keepAliveFails: (leaseId: string) => boolean = () => false;
  /** while set, a lease move waits for it before reaching the store */
  moveGate: Promise<void> | null = null;
  /** the move reaches the store but its answer is lost */
  loseMoveAnswer = false;

  override async keepAlive(leaseId: string): Promise<boolean> {
    this.keepAlivesSent.push({ id: leaseId, atMs: Date.now() });
    if (this.keepAliveDelayMs > 0) await new Promise((r) => setTimeout(r, this.keepAliveDelayMs));
    if (this.keepAliveFails(leaseId)) throw new KeelError('KEEL_ETCD_UNREACHABLE', 'keep-alive failed (scripted)');
    return super.keepAlive(leaseId);
  }

  override async moveLease(move: LeaseMove): Promise<boolean> {
    if (this.moveGate !== null) await this.moveGate;
    const moved = await super.moveLease(move);
    if (this.loseMoveAnswer) throw new KeelError('KEEL_ETCD_UNREACHABLE', 'the answer to the lease move was lost (scripted)');
    return moved;
  }
}

export function gate(): { promise: Promise<void>; open: () => void } {
  let open = (): void => undefined;
  const promise = new Promise<void>((resolve) => (open = resolve));
  return { promise, open };
}

/**
 * A PostgreSQL with a data directory of the cluster (SYSID) that starts,
 * stops, promotes and follows at once, and records each stop with its time.
 * A running instance reports this test process as its postmaster, so the
 * agent's postmaster-death check sees it alive.
 */
export class FakePostgres implements Postgres {
  readonly dataDir: string;
  running: boolean;
  inRecovery: boolean;
  timeline = 1;
  walLsn = 5000;
  upstream: UpstreamTarget | null = null;
  slots: string[] = [];
  readonly stops: { mode: StopMode; atMs: number }[] = [];
  promotedAtMs: number | null = null;

  constructor(
    private readonly name: string,
    state: { running: boolean; primary: boolean },
  ) {
    this.dataDir = `/fake/${name}`;
    this.running = state.running;
    this.inRecovery = !state.primary;
  }

  async dataDirState(): Promise<DataDirState> {
    return 'present';
  }

  async controlData(): Promise<ControlData> {
    return {
      systemId: SYSID,
      clusterState: this.inRecovery ? 'in archive recovery' : 'in production',
      timeline: this.timeline,
      checkpointLsn: 900,
      minRecoveryLsn: 900,
      dataChecksums: true,
      backupLabel: false,
    };
  }

  async postmasterPid(): Promise<number | null> {
    return this.running ? process.pid : null;
  }

  /** while set, a runtime reading answers only once it resolves, with what was true when it was asked */
  readGate: Promise<void> | null = null;
  /** runtime readings asked for so far */
  runtimeReads = 0;

  async runtimeState(): Promise<RuntimeState | null> {
    this.runtimeReads += 1;
    const { running, inRecovery } = this;
    if (this.readGate !== null) await this.readGate;
    if (!running) return null;
    if (!inRecovery) return primaryRuntime({ timeline: this.timeline, walLsn: this.walLsn, slots: this.slots });
    const up = this.upstream;
    return replicaRuntime({
      timeline: this.timeline,
      receivedLsn: this.walLsn,
      replayedLsn: this.walLsn,
      streaming: up !== null,
      upstreamHost: up?.host ?? null,
      upstreamPort: up?.port ?? null,
      primaryConninfo: up === null ? '' : `host=${up.host} port=${up.port} user=replicator application_name=${this.name}`,
      primarySlotName: up === null ? '' : this.name,
      slots: this.slots,
    });
  }

  async start(options: StartOptions): Promise<void> {
    this.running = true;
    this.inRecovery = options.replica;
    this.upstream = options.upstream;
  }

  /** while set, a stop ends only once it resolves */
  stopGate: Promise<void> | null = null;

  async stop(mode: StopMode): Promise<void> {
    if (this.stopGate !== null) await this.stopGate;
    if (this.running) this.stops.push({ mode, atMs: Date.now() });
    this.running = false;
  }

  async promote(options?: PromoteOptions): Promise<void> {
    // as the real one: the request waits for what must be in etcd first
    await options?.recorded;
    this.inRecovery = false;
    this.upstream = null;
    this.timeline += 1;
    this.promotedAtMs = Date.now();
  }

  async reserveTimelines(): Promise<void> {
    // the fake numbers no timelines
  }

  async newestTimeline(): Promise<number> {
    return this.timeline;
  }
  /** where the last promotion switched, as PostgreSQL's history file would say */
  switchPoints = new Map<number, number>();

  async switchPoint(timeline: number): Promise<number | null> {
    return this.switchPoints.get(timeline) ?? null;
  }


  async follow(options: StartOptions): Promise<void> {
    this.upstream = options.upstream;
  }

  async syncSlots(wanted: string[]): Promise<void> {
    this.slots = [...wanted];
  }

  async initdb(): Promise<void> {
    throw new Error('FakePostgres: initdb is not part of these tests');
  }
  async createClusterObjects(): Promise<void> {}
  async basebackup(): Promise<void> {
    throw new Error('FakePostgres: basebackup is not part of these tests');
  }
  async rewind(): Promise<void> {
    throw new Error('FakePostgres: rewind is not part of these tests');
  }
  async removeDataDir(): Promise<void> {
    throw new Error('FakePostgres: removeDataDir is not part of these tests');
  }
  async checkpoint(): Promise<void> {}
  async busyClients(): Promise<BusyClients> {
    return { nowMs: Date.now(), sessions: [] };
  }
  async setSynchronousStandbyNames(): Promise<void> {}
  async close(): Promise<void> {}
}
