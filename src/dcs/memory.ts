/**
 * The Dcs in memory, for unit tests: the same cluster store (store.ts) as
 * production, over the in-memory key-value port (kv-memory.ts), so a unit
 * test sees etcd's semantics. Time comes from the injected Clock; the test
 * calls expireLeases() to play etcd's lease reaper (every call also reaps
 * first, as etcd would have by then).
 */
import type { Clock } from '../util/clock.js';
import { silentLogger, type Logger } from '../util/log.js';
import { MemoryKv } from './kv-memory.js';
import { StoreDcs } from './store.js';

export interface MemoryDcsOptions {
  cluster: string;
  clock: Clock;
  logger?: Logger;
}

export class MemoryDcs extends StoreDcs {
  private readonly memory: MemoryKv;

  constructor(options: MemoryDcsOptions) {
    const memory = new MemoryKv(options.clock);
    super(options.cluster, memory, options.logger ?? silentLogger());
    this.memory = memory;
  }

  /** While true, every call fails as if etcd were down (addEvent still swallows it). */
  setUnreachable(down: boolean): void {
    this.memory.setUnreachable(down);
  }

  /** Writes raw text at a key relative to the prefix, e.g. `putRaw('members/x', 'not json')`. */
  putRaw(relativeKey: string, text: string, leaseId?: string): void {
    this.memory.plant(this.k.prefix + relativeKey, text, leaseId);
  }

  /** The current store revision, as etcd's header would report it. */
  currentRevision(): string {
    return this.memory.currentRevision();
  }

  /** Revokes every lease whose deadline has passed (etcd's reaper). Returns how many expired. */
  expireLeases(): number {
    return this.memory.expireLeases();
  }
}
