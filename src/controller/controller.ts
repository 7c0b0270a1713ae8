/**
 * The controller: keeps the declared shape (spec) by reading etcd and the
 * provider, asking plan() and autoscale() what to do, and doing it through
 * the provider. Several may run; one acts, the one whose key `controller`
 * (bound to its lease) exists. A standby campaigns whenever the key vanishes.
 *
 * Fencing: a dead leader's lease would keep its leader key for up to ttl.
 * When the provider confirms the leader node is fenced (it can no longer
 * write), the controller ends that lease at once so a replica promotes now.
 * Without that confirmation it never ends a lease.
 */
import { requestLeaderChange } from '../dcs/requests.js';
import { LeaseKeeper } from '../dcs/lease-keeper.js';
import type { ClusterView, ControllerReport, ControllerValue, SpecValue } from '../model/values.js';
import type { Dcs } from '../dcs/types.js';
import { describeError, KeelError } from '../errors.js';
import type { NodeInfo, Provider } from '../providers/types.js';
import type { Clock } from '../util/clock.js';
import type { Logger } from '../util/log.js';
import { leaseMarginMs } from '../model/lease.js';
import { autoscale, autoscaleSummary, moveRecordOffLeader, type AutoscaleDecision } from './autoscale.js';
import { defaultPlanOptions, emptyMemory, freeNames, namesInUse, plan, withOutcome, type Plan, type PlanAction, type PlanMemory, type PlanOutcome } from './plan.js';
import { Creations } from './creations.js';
import { noCounts, runningControllers, type ControllerCounts } from './counts.js';
import { defaultSpec, type ProviderLimits } from './spec.js';
import { backupScheduler, type BackupScheduler } from './backups.js';

export interface ControllerOptions {
  /** unique among controllers of the cluster, e.g. host and PID */
  name: string;
  dcs: Dcs;
  /** null: a dry run that records what it would do and does nothing */
  provider: Provider | null;
  limits: ProviderLimits;
  /**
   * for a spec written the first time; zones null: the zones the nodes are in; nodes: how many a cluster
   * that has none yet starts with (a cloud cluster the controller builds itself), else as many as exist
   */
  defaults: { zones: string[] | null; instanceClass: string; nodes?: number };
  clock: Clock;
  logger: Logger;
  /** the slowest pace of the loop; etcd changes wake it sooner */
  tickMs?: number;
  leaseTtlSeconds?: number;
  bootGraceMs?: number;
  /** how long a live replica keeps its open reads before it is removed */
  drainMs?: number;
}

/** Two ticks never start closer than this: every change an agent publishes wakes the controller. */
const minTickGapMs = 150;

/** Events are compared without their figures, so "down 3 s", "down 4 s"... make one event, not one a second. */
const gist = (text: string) => text.replace(/\d+(\.\d+)?/g, '#');

export class Controller {
  active = false;
  lastPlan: Plan | null = null;
  lastAutoscale: AutoscaleDecision | null = null;
  /** the spec the last tick planned with */
  lastSpec: SpecValue | null = null;
  /** what it did since it started, for /metrics */
  readonly counts: ControllerCounts = noCounts();
  /** nodes being created or destroyed beside the loop */
  private readonly inFlight = new Map<string, Promise<void>>();
  /** node creations, recorded before the provider is asked (creations.ts) */
  private readonly creations: Creations;
  private memory: PlanMemory = emptyMemory();
  /** the controller key's lease; the controller stops acting at its deadline, as a leader stops accepting writes */
  readonly lease: LeaseKeeper;
  private stopped = false;
  /** false until start(): a caller driving tick() itself (tests) gets no loop of its own running beside it */
  private started = false;
  private ticking = false;
  private wakeAgain = false;
  private lastTickMs = 0;
  private timers: NodeJS.Timeout[] = [];
  private stopWatch: (() => Promise<void>) | null = null;
  private said = new Map<string, string>();
  /** the `controller` key as acquired, and the gist of the report last written into it */
  private key: ControllerValue | null = null;
  private reported = '';
  private readonly o: Required<ControllerOptions>;
  private readonly backups: BackupScheduler | null;

  constructor(options: ControllerOptions) {
    this.o = { tickMs: 500, leaseTtlSeconds: 10, bootGraceMs: 60_000, drainMs: defaultPlanOptions.drainMs, ...options };
    this.creations = new Creations({ name: this.o.name, dcs: this.o.dcs, clock: this.o.clock, logger: this.o.logger });
    this.lease = new LeaseKeeper({
      dcs: this.o.dcs,
      clock: this.o.clock,
      logger: this.o.logger,
      marginMs: (ttlSeconds) => leaseMarginMs(ttlSeconds, this.o.tickMs),
      onLost: () => this.loseLease('the controller lease expired'),
    });
    this.backups = backupScheduler(this.o); // the spec's backup schedule, where the nodes' files are on this machine
  }

  /** Active, and the lease's deadline has not come: the only state in which the controller acts. */
  private acting(): boolean {
    if (this.active && !this.lease.trusted()) this.loseLease('the controller lease was not renewed in time: standing down');
    return this.active;
  }

  async start(): Promise<void> {
    this.started = true;
    runningControllers.add(this);
    this.stopWatch = await this.o.dcs.watch(() => this.wake(), { figures: false }).catch((err: unknown) => {
      this.o.logger.warn({ err: describeError(err) }, 'cannot watch etcd; relying on the timer');
      return null;
    });
    this.timers.push(
      setInterval(() => {
        // stands down at the deadline even while a tick is busy
        this.acting();
        this.wake();
      }, this.o.tickMs),
    );
    this.wake();
  }

  /** Stops acting and hands the key over at once (a standby need not wait for the lease). */
  async stop(): Promise<void> {
    this.stopped = true;
    runningControllers.delete(this);
    for (const timer of this.timers) clearInterval(timer);
    this.timers = [];
    if (this.stopWatch) await this.stopWatch().catch(() => undefined);
    while (this.ticking) await new Promise((r) => setTimeout(r, 50));
    await Promise.allSettled([...this.inFlight.values(), this.backups?.abort()]);
    if (this.active) await this.o.dcs.releaseController(this.o.name).catch(() => undefined);
    await this.lease.revoke().catch(() => undefined);
    this.active = false;
  }

  wake(): void {
    if (this.stopped || !this.started) return;
    if (this.ticking) {
      this.wakeAgain = true;
      return;
    }
    const wait = this.lastTickMs + minTickGapMs - this.o.clock.now();
    if (wait > 0) {
      this.ticking = true;
      setTimeout(() => {
        this.ticking = false;
        this.wake();
      }, wait);
      return;
    }
    this.ticking = true;
    this.lastTickMs = this.o.clock.now();
    void this.tick()
      .catch((err: unknown) => this.o.logger.error({ err: describeError(err) }, 'controller loop failed'))
      .finally(() => {
        this.ticking = false;
        if (this.wakeAgain) {
          this.wakeAgain = false;
          setImmediate(() => this.wake());
        }
      });
  }

  private event(kind: string, message: string): void {
    this.o.logger.info({ kind }, message);
    void this.o.dcs.addEvent({ atMs: this.o.clock.now(), source: 'controller', kind, message });
  }

  /** An event only when the sentence for `topic` changed beyond its figures. */
  private tell(topic: string, kind: string, message: string): void {
    if (this.said.get(topic) === gist(message)) return;
    this.said.set(topic, gist(message));
    this.event(kind, message);
  }

  private async campaign(): Promise<void> {
    // a lease that is not trusted any more is not campaigned with: a new one is
    if (this.lease.id !== null && !this.lease.trusted()) await this.dropLease();
    if (this.lease.id === null) await this.lease.grant(this.o.leaseTtlSeconds);
    const leaseId = this.lease.id;
    if (leaseId === null) return;
    const value: ControllerValue = { v: 1, name: this.o.name, pid: process.pid, startedAtMs: this.o.clock.now() };
    const acquired = await this.o.dcs.acquireController(value, leaseId).catch(async (err: unknown) => {
      // our lease ran out while standing by: the next campaign starts with a new one
      if (err instanceof KeelError && err.code === 'KEEL_CONFLICT') await this.dropLease();
      throw err;
    });
    if (acquired) {
      this.active = true;
      this.key = value;
      this.reported = '';
      // observations made while standing by are not ours to act on
      this.memory = emptyMemory();
      this.said.clear();
      this.event('controller', `${this.o.name} is the active controller${this.o.provider === null ? ' (dry run: no provider)' : ''}`);
    }
  }

  /**
   * Stops acting and gives the lease up: a standby may be taking over. The
   * key stays bound to that lease until it is revoked or expires; a later
   * campaign starts with a new lease.
   */
  private loseLease(why: string): void {
    if (this.active) this.o.logger.warn(why);
    this.active = false;
    void this.dropLease();
  }

  private async dropLease(): Promise<void> {
    await this.lease.revoke().catch((err: unknown) => this.o.logger.debug({ err: describeError(err) }, 'could not revoke the controller lease; it expires'));
  }

  async tick(): Promise<void> {
    if (!this.acting()) {
      await this.campaign();
      if (!this.active) return;
    }
    const dcs = this.o.dcs;
    const [read, stored] = await Promise.all([dcs.readCluster(), dcs.readSpec()]);
    const view = this.creations.withOwn(read);
    const inventory = await this.inventory(view);
    if (stored === null) return this.writeFirstSpec(inventory);
    const spec = stored.value;
    this.lastSpec = spec;

    const p = plan(spec, view, inventory, this.o.clock.now(), this.memory, {
      maxNodes: this.o.limits.maxNodes,
      bootGraceMs: this.o.bootGraceMs,
      drainMs: this.o.drainMs,
    });
    this.memory = p.memory;
    this.lastPlan = p;

    const moved = moveRecordOffLeader(spec, p.health);
    if (moved !== null && (await this.putSpec(moved, stored.modRevision, 'the autoscaler\'s record moves off the new leader'))) return this.wake();

    const decision = autoscale(spec, p.health, view.members, this.o.clock.now(), this.o.limits.maxNodes);
    this.lastAutoscale = decision;
    await this.report(p, decision);
    this.tell('autoscale', 'autoscale', decision.reason);
    if (p.actions.length === 0 && decision.kind !== 'hold' && (await this.scale(decision, spec, stored.modRevision, view))) return this.wake();

    this.backups?.tick(spec.backup, view.members.map((m) => m.name));
    // each action says its own reason in its event
    if (p.actions.length === 0) this.tell('plan', 'plan', p.reason);
    let ranHere = false;
    for (const action of p.actions) {
      if (!this.acting() || this.stopped) return;
      if (action.kind === 'create' || action.kind === 'destroy') {
        this.runBeside(action, spec, view);
        continue;
      }
      ranHere = true;
      try {
        this.remember(await this.act(action, spec, view));
      } catch (err) {
        this.failed(action, err);
        return;
      }
    }
    // a node being created or destroyed wakes the loop when it is done
    if (ranHere) this.wake();
  }

  /**
   * Creating or destroying a node can take minutes with a cloud provider: it
   * runs beside the loop, so that fencing a dead leader never waits behind it.
   * The plan asks for the same action until the provider shows it done; one
   * per node runs at a time.
   */
  private runBeside(action: PlanAction & { node: string }, spec: SpecValue, view: ClusterView): void {
    if (this.inFlight.has(action.node)) return;
    const run = this.act(action, spec, view)
      .then((outcome) => this.remember(outcome))
      .catch((err: unknown) => this.failed(action, err))
      .finally(() => {
        this.inFlight.delete(action.node);
        this.wake();
      });
    this.inFlight.set(action.node, run);
  }

  /** Publishes the plan's sentence and the autoscaler's decision in the controller key when their gist changed. */
  private async report(p: Plan, decision: AutoscaleDecision): Promise<void> {
    const leaseId = this.lease.id;
    if (this.key === null || leaseId === null) return;
    const autoscale = autoscaleSummary(decision);
    const said = gist(`${p.reason}|${autoscale.decision}|${autoscale.reason}`);
    if (said === this.reported) return;
    const report: ControllerReport = { atMs: this.o.clock.now(), plan: p.reason, autoscale };
    if (await this.o.dcs.reportController({ ...this.key, report }, leaseId).catch(() => false)) this.reported = said;
  }

  /** Acting reports what it established; the plan's memory changes only through withOutcome(). */
  private remember(outcome: PlanOutcome | null): void {
    if (outcome !== null) this.memory = withOutcome(this.memory, outcome);
  }

  private failed(action: PlanAction, err: unknown): void {
    this.counts.failedActions += 1;
    this.event('action-failed', `${action.kind} ${'node' in action ? action.node : action.to} failed: ${describeError(err)}`);
  }

  private async inventory(view: ClusterView): Promise<NodeInfo[]> {
    if (this.o.provider !== null) return this.o.provider.list(this.o.dcs.cluster);
    // dry run: the members are all that can be known
    return view.members.map((m) => ({ name: m.name, zone: m.zone, state: 'running', agentPid: m.agentPid, pgAddress: `${m.pgHost}:${m.pgPort}`, apiAddress: m.apiUrl }));
  }

  private async writeFirstSpec(inventory: NodeInfo[]): Promise<void> {
    // no nodes yet and no number to start with (a provider still creating them): a spec of 1 would remove what is coming
    const nodes = Math.max(inventory.length, this.o.defaults.nodes ?? 0);
    if (nodes === 0) return;
    const zones = this.o.defaults.zones ?? [...new Set(inventory.map((n) => n.zone))].sort();
    if (zones.length === 0) return;
    const spec = defaultSpec({ nodes, zones, instanceClass: this.o.defaults.instanceClass });
    if (await this.o.dcs.putSpec(spec, null)) {
      this.event('spec', `wrote the first spec: ${spec.nodes} nodes over ${spec.zones.join(', ')}, class ${spec.instanceClass}, autoscaling off`);
    }
    this.wake();
  }

  private async putSpec(next: SpecValue, modRevision: string, why: string): Promise<boolean> {
    const ok = await this.o.dcs.putSpec(next, modRevision);
    if (ok) this.event('spec', `${why}: autoscaler owns ${next.scaling.added.join(', ') || 'no replica'}`);
    return ok;
  }

  /** Carries out a scale-out or scale-in; true when the spec changed. */
  private async scale(decision: AutoscaleDecision, spec: SpecValue, modRevision: string, view: ClusterView): Promise<boolean> {
    const now = this.o.clock.now();
    if (decision.kind === 'out') {
      const used = new Set([...namesInUse(view), ...spec.scaling.added, ...(this.lastPlan?.health.map((n) => n.name) ?? [])]);
      const names = freeNames(decision.add, used, this.o.limits.maxNodes);
      if (names.length === 0) return false;
      const next = { ...spec, scaling: { ...spec.scaling, added: [...spec.scaling.added, ...names], lastScaleOutAtMs: now } };
      if (this.o.provider === null) return false;
      const ok = await this.putSpec(next, modRevision, `scale-out: ${decision.reason}; reserving ${names.join(', ')}`);
      if (ok) this.counts.scaleOuts += 1;
      if (ok) this.event('autoscale-out', decision.reason);
      return ok;
    }
    if (decision.kind === 'in') {
      if (this.o.provider === null) return false;
      // Drained first, then handed to the plan as a surplus replica, which removes it once drained.
      // A drain whose spec write then fails is ended by the plan (the node is still the autoscaler's).
      await this.o.dcs.putDraining({ v: 1, name: decision.remove, sinceMs: now, reason: `scale-in: ${decision.reason}` });
      const next = { ...spec, scaling: { ...spec.scaling, added: spec.scaling.added.filter((n) => n !== decision.remove), lastScaleInAtMs: now } };
      if (!(await this.putSpec(next, modRevision, `scale-in: ${decision.reason}`))) return false;
      this.counts.scaleIns += 1;
      this.event('autoscale-in', `${decision.reason}: draining ${decision.remove} for ${Math.round(this.o.drainMs / 1000)} s before removing it`);
      return true;
    }
    return false;
  }

  /** Carries out one action; says what it established for the next plan. */
  private async act(action: PlanAction, spec: SpecValue, view: ClusterView): Promise<PlanOutcome | null> {
    const provider = this.o.provider;
    if (provider === null) {
      this.tell(`dry:${action.kind}:${'node' in action ? action.node : action.to}`, 'dry-run', `would ${action.kind}: ${action.reason}`);
      return null;
    }
    switch (action.kind) {
      case 'fenceLeader':
        return this.fenceLeader(provider, action);
      case 'fence': {
        const result = await provider.fence(action.node);
        this.counts[result.confirmed ? 'fencings' : 'unconfirmedFencings'] += 1;
        this.event('fence', `${action.reason}: ${result.confirmed ? 'confirmed' : 'NOT confirmed'} (${result.detail})`);
        if (!result.confirmed) return null;
        // a fenced node acknowledges nothing more: its member key goes now, not at its lease's end, so the leader drops it from the synchronous set before a replacement joins
        if (this.acting()) await this.o.dcs.deleteMember(action.node);
        return { kind: 'fenced', node: action.node };
      }
      case 'destroy':
        await provider.destroy(action.node);
        this.counts.destructions += 1;
        this.event('destroy', action.reason);
        if (view.draining.some((d) => d.name === action.node)) await this.o.dcs.deleteDraining(action.node);
        return null;
      case 'drain':
        await this.o.dcs.putDraining({ v: 1, name: action.node, sinceMs: this.o.clock.now(), reason: action.reason });
        this.event('drain', `${action.reason}: no new reads for ${Math.round(this.o.drainMs / 1000)} s`);
        return null;
      case 'undrain':
        await this.o.dcs.deleteDraining(action.node);
        this.event('undrain', action.reason);
        return null;
      case 'create':
        return this.createNode(provider, action, spec);
      case 'switchover': {
        const request = await requestLeaderChange(this.o.dcs, { failover: false, to: action.to, expectLeader: action.from }, this.o.clock.now());
        this.event('switchover', `${action.reason}: requested ${request.from} -> ${request.to}`);
        return null;
      }
    }
  }

  private async createNode(provider: Provider, action: Extract<PlanAction, { kind: 'create' }>, spec: SpecValue): Promise<PlanOutcome> {
    const { node: name, replaces } = action;
    const atMs = await this.creations.create(provider, action, this.lease.id, async () => {
      this.event('create', `${action.reason} (class ${action.instanceClass})`);
      // while the record stands, no plan takes the autoscaler's replica for missing and creates it again
      if (replaces !== null && spec.scaling.added.includes(replaces)) await this.handOver(replaces, name);
    });
    this.counts.creations += 1;
    if (replaces !== null) this.counts.replacements += 1;
    return { kind: 'created', node: name, atMs };
  }

  /** The autoscaler's record follows a replacement, so it removes the new node and not a declared one. */
  private async handOver(from: string, to: string): Promise<void> {
    for (let attempt = 0; attempt < 5; attempt++) {
      const stored = await this.o.dcs.readSpec();
      if (stored === null || !stored.value.scaling.added.includes(from)) return;
      const added = stored.value.scaling.added.map((n) => (n === from ? to : n));
      if (await this.putSpec({ ...stored.value, scaling: { ...stored.value.scaling, added } }, stored.modRevision, `${to} replaces ${from}`)) return;
    }
  }

  private async fenceLeader(provider: Provider, action: Extract<PlanAction, { kind: 'fenceLeader' }>): Promise<PlanOutcome | null> {
    const result = await provider.fence(action.node);
    this.counts[result.confirmed ? 'fencings' : 'unconfirmedFencings'] += 1;
    if (!result.confirmed) {
      this.tell(`fence:${action.node}`, 'fence', `${action.reason}: the provider did NOT confirm (${result.detail}); its lease is left to expire`);
      return null;
    }
    const fenced: PlanOutcome = { kind: 'fenced', node: action.node };
    // read again: the key must still be that node's, on that lease, when its lease ends
    const now = await this.o.dcs.readCluster();
    if (now.leader?.value.name !== action.node || now.leader.leaseId !== action.leaseId) {
      this.tell(`fence:${action.node}`, 'fence', `${action.node} fenced (${result.detail}); its leader key is already gone`);
      return fenced;
    }
    if (!this.acting()) return fenced;
    await this.o.dcs.revokeLease(action.leaseId);
    this.counts.leasesEnded += 1;
    this.event('lease-ended', `${action.reason}: fence confirmed (${result.detail}); ended its lease so a replica promotes now`);
    return fenced;
  }
}
