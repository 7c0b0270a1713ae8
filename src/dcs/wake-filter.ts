/**
 * Which changes wake a watcher that acts on decisions, not on figures. Every
 * agent puts its member key once per loop_wait with fresh WAL positions, load
 * and the time of the put, and the leader its status key as its WAL moves: with
 * three members, each agent's loop ran three times a second for figures that
 * its own timer reads within a loop anyway. A member or status key wakes the
 * watcher when what it says beyond its figures changed since the last wake-up
 * (memberEssentials, statusEssentials); every other key, each delete and each
 * value that is not JSON wakes it as before. Pure.
 */
import { memberEssentials, statusEssentials } from '../model/values.js';
import type { ClusterKeys } from './codec.js';
import type { KvChange } from './kv.js';

export class FiguresFilter {
  /** key -> its essentials at the last wake-up it caused */
  private readonly seen = new Map<string, string>();

  constructor(private readonly k: Pick<ClusterKeys, 'membersPrefix' | 'status'>) {}

  /** true: the change is worth a wake-up */
  wakes(change: KvChange): boolean {
    const project = change.key.startsWith(this.k.membersPrefix) ? memberEssentials : change.key === this.k.status ? statusEssentials : null;
    if (project === null) return true;
    const essentials = change.value === null ? null : essentialsJson(change.value, project);
    if (essentials === null) {
      this.seen.delete(change.key);
      return true;
    }
    if (this.seen.get(change.key) === essentials) return false;
    this.seen.set(change.key, essentials);
    return true;
  }

  /** Changes may have been missed (the watch started again): the next change of each key wakes. */
  forget(): void {
    this.seen.clear();
  }
}

function essentialsJson(text: string, project: (value: object) => Record<string, unknown>): string | null {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return null;
  }
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? JSON.stringify(project(value)) : null;
}
