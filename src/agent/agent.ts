import { defaultDynamicConfig, type DynamicConfig, type NodeConfig } from '../config/schema.js';
import { memberEssentials, type ClusterView, type MemberArchive } from '../model/values.js';
import type { Dcs } from '../dcs/types.js';
import { describeError, KeelError } from '../errors.js';
import type { Postgres } from '../postgres/types.js';
import type { Clock } from '../util/clock.js';
import type { Logger } from '../util/log.js';
import { isAlive } from '../util/process.js';
import { runAction, type ActionContext } from './actions.js';
import { decide, nextMemory } from './decide.js';
import { GuardLink, guardDeadlineMs } from './guard-link.js';
import { LeaseKeeper } from '../dcs/lease-keeper.js';
import { leaseMarginMs } from '../model/lease.js';
import type { LoadMeter } from './load.js';
import { memberValue } from './member.js';
import { emptyAgentMemory, type AgentMemory } from './memory.js';
import type { Decision, Snapshot } from './snapshot.js';
import { isAllowed, type State } from './states.js';
import { exposedGc, IdleCollector } from './idle-gc.js';

const watchdogIntervalMs = 100;

/**
 * One agent: observe -> decide -> act, woken by etcd watch events and by a
 * timer. Actions run as one background job at a time while the loop goes on
 * publishing the member key; the lease is renewed on its own timer and a
 * watchdog fences PostgreSQL the moment the lease can no longer be trusted.
 */
export class Agent {
  state: State = 'starting';
  lastReason = 'starting';
  private lastJob: Snapshot['lastJob'] = null;
  private job: { decision: Decision; startedAtMs: number } | null = null;
  private lastConfig: DynamicConfig;
  private mayAcceptWrites = false;
  private fencing = false;
  private ticking = false;
  private wakeAgain = false;
  private stopped = false;
  private timers: NodeJS.Timeout[] = [];
  private stopWatch: (() => Promise<void>) | null = null;
  private lastStatusLsn: number | null = null;
  private lastPublish: { essentialJson: string; atMs: number; leaseId: string | null } = { essentialJson: '', atMs: 0, leaseId: null };
  private etcdDown = false;
  /** what the last decision remembered (agent/memory.ts): decide() computes it, the agent only keeps it */
  private memory: AgentMemory = emptyAgentMemory();
  private jobSeq = 0;
  /** gives back the memory of a burst of work once the agent is quiet again (agent/idle-gc.ts) */
  private readonly idleGc: IdleCollector;
  readonly lease: LeaseKeeper;
  /** the link to the node's fencing guard (src/guard), fed on every lease change; null without a guard block */
  readonly guard: GuardLink | null;
  /** the last snapshot a loop observed, for the REST API */
  lastSnapshot: Snapshot | null = null;
  /** decisions taken, by `to:action,action` (for metrics) */
  readonly decisionCounts = new Map<string, number>();
  promotions = 0;

  constructor(
    private readonly config: NodeConfig,
    private readonly dcs: Dcs,
    private readonly pg: Postgres,
    private readonly clock: Clock,
    private readonly logger: Logger,
    /** load metrics for the autoscaler; absent in tests that do not need them */
    private readonly load?: LoadMeter,
    /** WAL archiving on this node when it is primary (backup/archive-monitor.ts); absent without a repository */
    readonly archive?: { current(): MemberArchive | undefined },
    /** a clone from the cluster's newest backup rather than the leader (backup/replica.ts) */
    private readonly replicaFromBackup?: ActionContext['replicaFromBackup'],
  ) {
    this.lastConfig = config.bootstrap.dynamic ?? defaultDynamicConfig;
    this.idleGc = new IdleCollector(exposedGc(), () => clock.now());
    this.lease = new LeaseKeeper({
      dcs,
      clock,
      logger,
      marginMs: (ttlSeconds) => leaseMarginMs(ttlSeconds, this.lastConfig.loop_wait * 1000),
      onLost: () => {
        this.fenceIfUnsafe();
        this.wake();
      },
    });
    this.guard =
      config.guard === undefined
        ? null
        : new GuardLink({
            socketPath: config.guard.socket,
            dataDir: config.postgres.dataDir,
            deadlineMs: () => guardDeadlineMs(this.lease.current(), this.clock.now()),
            leaseId: () => this.lease.id,
            clock,
            logger,
            onStatusChange: () => this.wake(),
          });
    this.lease.onChange(() => this.guard?.feed());
  }

  async start(): Promise<void> {
    this.guard?.start();
    void this.keepWatching();
    this.timers.push(
      setInterval(() => {
        this.fenceIfUnsafe();
        this.noticePostmasterDeath();
      }, watchdogIntervalMs),
    );
    this.scheduleTick();
    this.load?.start();
    this.wake();
  }

  /** Clean shutdown: stop PostgreSQL, then end the lease so a replica takes over at once. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.load?.stop();
    for (const timer of this.timers) clearInterval(timer);
    this.timers = [];
    if (this.stopWatch) await this.stopWatch().catch(() => undefined);
    await this.waitForJob(120_000);
    try {
      await this.pg.stop('fast');
      this.mayAcceptWrites = false;
    } catch (err) {
      this.logger.error({ err: describeError(err) }, 'could not stop PostgreSQL');
    }
    await this.lease.revoke().catch((err: unknown) => this.logger.warn({ err: describeError(err) }, 'could not revoke the lease'));
    await this.pg.close();
    await this.dcs.close();
    this.guard?.stop();
  }

  private async waitForJob(timeoutMs: number): Promise<void> {
    const deadline = this.clock.now() + timeoutMs;
    while (this.job !== null && this.clock.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  }

  private scheduleTick(): void {
    if (this.stopped) return;
    const timer = setTimeout(() => {
      this.timers = this.timers.filter((t) => t !== timer);
      this.wake();
      this.scheduleTick();
    }, this.lastConfig.loop_wait * 1000);
    this.timers.push(timer);
  }

  private async keepWatching(): Promise<void> {
    let backoffMs = 500;
    while (!this.stopped && this.stopWatch === null) {
      try {
        this.stopWatch = await this.dcs.watch(() => this.etcdChanged(), { figures: false });
      } catch (err) {
        this.logger.warn({ err: describeError(err), retryInMs: backoffMs }, 'cannot watch etcd yet; retrying');
        await new Promise((r) => setTimeout(r, backoffMs));
        backoffMs = Math.min(backoffMs * 2, 10_000);
      }
    }
  }

  /**
   * A change in etcd beyond figures (dcs/wake-filter.ts: the periodic puts of
   * WAL positions and load wake no loop) runs a loop, unless a job runs: then
   * its loops decide nothing, and one per change (a switchover brings
   * dozens) queued a reading of PostgreSQL and etcd ahead of each of the
   * job's own statements on this agent's session and CPU (100-200 ms of a
   * promotion). The job's end runs the next loop, and the loop_wait timer
   * keeps the published state fresh.
   */
  private etcdChanged(): void {
    if (this.job === null) this.wake();
  }

  /** Runs one loop now (or right after the one in progress). */
  wake(): void {
    if (this.stopped) return;
    if (this.ticking) {
      this.wakeAgain = true;
      return;
    }
    this.ticking = true;
    void this.tick()
      .catch((err: unknown) => this.logger.error({ err: describeError(err) }, 'loop failed'))
      .finally(() => {
        this.ticking = false;
        if (this.wakeAgain) {
          this.wakeAgain = false;
          setImmediate(() => this.wake());
        }
      });
  }

  /**
   * Safety rule 1, enforced apart from the loop (which may be busy): once the
   * lease cannot be trusted, stop PostgreSQL at once rather than risk two
   * writable primaries.
   */
  private fenceIfUnsafe(): void {
    // An agent that never held a lease (just restarted) lets decide() rebind or stop instead.
    if (!this.mayAcceptWrites || this.fencing || this.lease.current() === null) return;
    const leaseGone = this.lease.id === null;
    // the lease's own granted ttl, not the config's: etcd expires it by the ttl it granted
    const late = this.clock.now() >= this.lease.deadlineMs();
    if (!leaseGone && !late) return;
    this.fencing = true;
    const reason = leaseGone ? 'the leader lease is gone' : 'the leader lease was not renewed in time';
    this.logger.warn({ reason }, 'fencing: stopping PostgreSQL at once');
    void this.pg
      .stop('immediate')
      .then(() => {
        this.mayAcceptWrites = false;
        this.setState('stopped', `${reason}: stopped PostgreSQL at once`);
        void this.dcs.addEvent({ atMs: this.clock.now(), source: this.config.name, kind: 'fenced', message: reason });
      })
      .catch((err: unknown) => this.logger.error({ err: describeError(err) }, 'fencing failed'))
      .finally(() => {
        this.fencing = false;
        this.wake();
      });
  }

  /** A postmaster that died is noticed within the watchdog interval, not at the next loop. */
  private noticePostmasterDeath(): void {
    const pid = this.lastSnapshot?.pg.postmasterPid ?? null;
    if (pid === null || this.job !== null || isAlive(pid)) return;
    if (this.lastSnapshot) this.lastSnapshot = { ...this.lastSnapshot, pg: { ...this.lastSnapshot.pg, postmasterPid: null } };
    this.logger.warn({ pid }, 'postmaster died');
    this.wake();
  }

  private setState(to: State, reason: string): void {
    if (!isAllowed(this.state, to)) {
      this.logger.error({ from: this.state, to, reason }, 'refused a transition missing from the table');
      return;
    }
    if (to !== this.state) this.logger.info({ from: this.state, to, reason }, 'state change');
    this.state = to;
  }

  async observe(): Promise<Snapshot> {
    // etcd and PostgreSQL are read at the same time: each is a round trip on the path of every reaction
    const [cluster, local] = await Promise.all([this.readCluster(), this.observeLocal()]);
    if (cluster?.config) this.lastConfig = cluster.config.value;
    if (local.runtime !== null && !local.runtime.inRecovery) this.mayAcceptWrites = true;
    if (local.postmasterPid === null && this.job === null) this.mayAcceptWrites = false;
    return {
      nowMs: this.clock.now(),
      me: { name: this.config.name, nofailover: this.config.tags.nofailover },
      state: this.state,
      cluster,
      config: this.lastConfig,
      lease: this.lease.current(),
      pg: local,
      memory: this.memory,
      guard: this.guard?.status() ?? 'none',
      lastJob: this.lastJob,
    };
  }

  private async readCluster(): Promise<ClusterView | null> {
    try {
      const cluster = await this.dcs.readCluster();
      if (this.etcdDown) this.logger.info('etcd reachable again');
      this.etcdDown = false;
      return cluster;
    } catch (err) {
      if (!this.etcdDown) this.logger.warn({ err: describeError(err) }, 'cannot read etcd');
      this.etcdDown = true;
      return null;
    }
  }

  private async observeLocal(): Promise<Snapshot['pg']> {
    const dataDir = await this.pg.dataDirState();
    const [control, postmasterPid] = await Promise.all([
      dataDir === 'present' ? this.pg.controlData().catch(() => null) : Promise.resolve(null),
      this.pg.postmasterPid(),
    ]);
    const runtime = postmasterPid === null ? null : await this.pg.runtimeState();
    return { dataDir, control, postmasterPid, runtime };
  }

  private async tick(): Promise<void> {
    const jobsBefore = this.jobSeq;
    const snap = await this.observe();
    // A job that ended while this loop read may have changed what it read (a data directory made, PostgreSQL
    // stopped): nothing is decided on that reading. The job's end asked for the next loop.
    if (this.job === null && this.jobSeq !== jobsBefore) return;
    this.lastSnapshot = snap;
    if (this.job !== null) {
      // nothing is decided while a job runs, but what is seen is still remembered
      this.memory = nextMemory(snap);
      const seconds = Math.round((snap.nowMs - this.job.startedAtMs) / 1000);
      await this.publish(snap, `${this.job.decision.reason} (${seconds} s so far)`);
      return;
    }
    const decision = decide(snap);
    this.memory = decision.memory;
    const label = `${decision.to}:${decision.actions.map((a) => a.kind).join(',')}`;
    this.decisionCounts.set(label, (this.decisionCounts.get(label) ?? 0) + 1);
    if (decision.actions.some((a) => a.kind === 'promote')) this.promotions += 1;
    if (decision.reason !== this.lastReason) this.logger.info({ state: this.state, to: decision.to }, decision.reason);
    this.lastReason = decision.reason;
    if (!isAllowed(this.state, decision.to)) {
      this.logger.error({ from: this.state, to: decision.to }, 'decision asks for a transition missing from the table');
      return;
    }
    if (decision.actions.length === 0) this.setState(decision.to, decision.reason);
    else this.startJob(decision, snap);
    await this.publish(snap, decision.reason);
    if (this.job === null) this.idleGc.maybeCollect();
  }

  /**
   * Operator requests from the REST API. Each stops PostgreSQL and lets the
   * next decision bring it back: restart starts it again in its role,
   * reinitialize (replicas only) removes the data so the node clones anew.
   */
  async runManual(kind: 'restart' | 'reinitialize'): Promise<void> {
    await this.waitForJob(120_000);
    if (this.job !== null) throw new KeelError('KEEL_CONFLICT', 'the agent is busy with another action');
    const snap = this.lastSnapshot ?? (await this.observe());
    const leading = snap.cluster?.leader?.value.name === this.config.name;
    if (kind === 'reinitialize' && leading) {
      throw new KeelError('KEEL_TARGET_INELIGIBLE', `${this.config.name} leads: reinitialize only a replica`, { hint: 'switch over first' });
    }
    const actions: Decision['actions'] =
      kind === 'restart' ? [{ kind: 'stopPostgres', mode: 'fast' }] : [{ kind: 'stopPostgres', mode: 'fast' }, { kind: 'removeDataDir' }];
    const done = new Promise<void>((resolve) => this.jobWaiters.push(resolve));
    this.startJob({ to: 'stopped', reason: `${kind} requested through the API`, actions }, snap);
    await done;
    if (this.lastJob !== null && !this.lastJob.ok) throw new KeelError('KEEL_POSTGRES_FAILED', `${kind} failed: ${this.lastJob.error}`);
  }

  private jobWaiters: (() => void)[] = [];

  private startJob(decision: Decision, snap: Snapshot): void {
    const startedAtMs = this.clock.now();
    this.job = { decision, startedAtMs };
    this.idleGc.worked();
    const ctx: ActionContext = {
      config: this.config,
      dcs: this.dcs,
      pg: this.pg,
      lease: this.lease,
      logger: this.logger,
      now: () => this.clock.now(),
      setWritable: (writable) => {
        if (writable) this.mayAcceptWrites = true;
      },
      publishNow: async (runtime) => {
        const seen = this.lastSnapshot ?? snap;
        // the health endpoints read the last snapshot too: they say primary as soon as the member key does
        this.lastSnapshot = { ...seen, nowMs: this.clock.now(), pg: { ...seen.pg, runtime } };
        await this.publish(this.lastSnapshot, decision.reason);
      },
      ...(this.replicaFromBackup === undefined ? {} : { replicaFromBackup: this.replicaFromBackup }),
    };
    void (async () => {
      let failed: { kind: Decision['actions'][number]['kind']; error: string } | null = null;
      for (const action of decision.actions) {
        try {
          await runAction(action, snap, ctx);
        } catch (err) {
          failed = { kind: action.kind, error: describeError(err) };
          break;
        }
      }
      const lastKind = failed?.kind ?? decision.actions[decision.actions.length - 1]!.kind;
      this.jobSeq += 1;
      this.lastJob = { seq: this.jobSeq, kind: lastKind, ok: failed === null, error: failed?.error ?? null, finishedAtMs: this.clock.now(), actions: decision.actions.map((a) => a.kind) };
      if (failed === null) {
        const from = this.state;
        this.setState(decision.to, decision.reason);
        if (from !== decision.to) {
          void this.dcs.addEvent({ atMs: this.clock.now(), source: this.config.name, kind: decision.to, message: decision.reason });
        }
      } else {
        this.logger.warn({ action: failed.kind, err: failed.error }, `action failed: ${decision.reason}`);
      }
      this.job = null;
      this.idleGc.worked();
      for (const resolve of this.jobWaiters.splice(0)) resolve();
      this.wake();
    })();
  }

  /**
   * Puts the member key when something others act on changed (role, state,
   * reason...) and otherwise once per loop_wait: every put wakes every other
   * agent's loop, so WAL positions alone must not set off a storm of writes.
   */
  private async publish(snap: Snapshot, reason: string): Promise<void> {
    if (snap.cluster === null || this.lease.id === null) return;
    const value = memberValue(this.config, snap, this.state, reason, process.pid, this.load?.current(), this.archive?.current());
    // WAL positions, metrics and archiving counts ride along with the periodic put; a change of archiving state goes at once
    const essentialJson = JSON.stringify(memberEssentials(value));
    const due = snap.nowMs - this.lastPublish.atMs >= this.lastConfig.loop_wait * 900;
    if (essentialJson === this.lastPublish.essentialJson && !due && this.lastPublish.leaseId === this.lease.id) return;
    try {
      // never onto a lease the keys are moving off
      const leaseId = await this.lease.withLease(async (id) => {
        await this.dcs.putMember(value, id);
        return id;
      });
      this.lastPublish = { essentialJson, atMs: snap.nowMs, leaseId };
      const runtime = snap.pg.runtime;
      const leading = snap.cluster.leader?.value.name === this.config.name;
      if (leading && runtime !== null && !runtime.inRecovery && runtime.walLsn !== null && runtime.walLsn !== this.lastStatusLsn) {
        await this.dcs.putStatus({ v: 1, leader: this.config.name, timeline: runtime.timeline, walLsn: runtime.walLsn, updatedAtMs: snap.nowMs });
        this.lastStatusLsn = runtime.walLsn;
      }
    } catch (err) {
      this.logger.warn({ err: describeError(err) }, 'could not publish the member key');
    }
  }
}
