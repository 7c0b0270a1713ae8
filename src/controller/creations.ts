/**
 * The controller's node creations, one replacement per missing node: each is
 * recorded in etcd (`creations/<name>`, bound to the controller's lease)
 * before the provider is asked, and counted by every plan from the moment it
 * starts until the provider lists the node.
 */
import type { Dcs } from '../dcs/types.js';
import { describeError, KeelError } from '../errors.js';
import type { ClusterView, CreationValue } from '../model/values.js';
import type { Provider } from '../providers/types.js';
import type { Clock } from '../util/clock.js';
import type { Logger } from '../util/log.js';
import type { PlanAction } from './plan.js';

export interface CreationsOptions {
  /** the controller's name, recorded as `by` */
  name: string;
  dcs: Dcs;
  clock: Clock;
  logger: Logger;
}

export class Creations {
  /** creations this controller has under way, recorded in etcd or not yet */
  private readonly underWay = new Map<string, CreationValue>();

  constructor(private readonly o: CreationsOptions) {}

  /**
   * The view with this controller's creations under way: a record still
   * being written, or one lost with a lease since replaced, still stands for
   * a node on its way. Its own records of creations that are over (a delete
   * that did not reach etcd) go now.
   */
  withOwn(read: ClusterView): ClusterView {
    for (const c of read.creations) {
      if (c.by === this.o.name && !this.underWay.has(c.name)) void this.o.dcs.deleteCreation(c.name).catch(() => undefined);
    }
    const own = [...this.underWay.values()].filter((c) => !read.creations.some((r) => r.name === c.name));
    return own.length === 0 ? read : { ...read, creations: [...read.creations, ...own] };
  }

  /**
   * Records the creation, asks the provider, then runs `created` (while the
   * record still stands) and removes the record. Throws when the record
   * cannot be made (it exists, or `leaseId` is not the active controller's)
   * or the provider fails.
   */
  async create(provider: Provider, action: Extract<PlanAction, { kind: 'create' }>, leaseId: string | null, created: (atMs: number) => Promise<void>): Promise<number> {
    const { node: name, zone, instanceClass, replaces } = action;
    const record: CreationValue = { v: 1, name, zone, instanceClass, replaces, sinceMs: this.o.clock.now(), by: this.o.name };
    // counted by the next plans from now on, before etcd has it
    this.underWay.set(name, record);
    try {
      if (leaseId === null || !(await this.o.dcs.claimCreation(record, leaseId))) {
        throw new KeelError('KEEL_CONFLICT', `the creation of ${name} could not be recorded: it is recorded already, or this controller is no longer the active one`, {
          hint: 'the next plan decides again from what etcd and the provider show',
        });
      }
      try {
        await provider.create(this.o.dcs.cluster, { name, zone, instanceClass });
        const atMs = this.o.clock.now();
        await created(atMs);
        return atMs;
      } finally {
        // the provider lists the node now, or the creation failed (the caller records the event)
        await this.o.dcs.deleteCreation(name).catch((err: unknown) => this.o.logger.warn({ err: describeError(err), node: name }, 'could not delete the creation record; it goes on a later loop'));
      }
    } finally {
      this.underWay.delete(name);
    }
  }
}
