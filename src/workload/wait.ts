/**
 * Waiting for the cluster to look a certain way: views read over and over
 * (from etcd, or from an observer's latest) until one is accepted, bounded in
 * time.
 */
import type { ClusterView } from '../model/values.js';
import { sleep } from '../util/clock.js';
import { describeMembers } from './shape.js';

/** A view and when it was read; null when there was none (etcd unreadable, nothing new yet). */
export type ViewRead = () => Promise<{ view: ClusterView; atMs: number } | null>;

/** Reads until `accept` takes a view; null after `timeoutMs`. Also yields the last view read, accepted or not. */
export async function pollView(
  read: ViewRead,
  accept: (view: ClusterView, atMs: number) => boolean | Promise<boolean>,
  timeoutMs: number,
  pollMs: number,
): Promise<{ accepted: { view: ClusterView; atMs: number } | null; last: ClusterView | null }> {
  const deadline = Date.now() + timeoutMs;
  let last: ClusterView | null = null;
  while (Date.now() < deadline) {
    const got = await read();
    if (got !== null) {
      last = got.view;
      if (await accept(got.view, got.atMs)) return { accepted: got, last };
    }
    await sleep(pollMs);
  }
  return { accepted: null, last };
}

/** Reads etcd through `readView` (a failed read counts as none) until `accept` holds; fails with `what` and each member's state after the timeout. */
export async function untilView(
  readView: () => Promise<ClusterView>,
  what: string,
  accept: (view: ClusterView) => boolean | Promise<boolean>,
  options: { timeoutMs: number; pollMs?: number; detail?: () => string },
): Promise<ClusterView> {
  const read: ViewRead = async () => {
    const view = await readView().catch(() => null);
    return view === null ? null : { view, atMs: Date.now() };
  };
  const { accepted, last } = await pollView(read, (view) => accept(view), options.timeoutMs, options.pollMs ?? 200);
  if (accepted !== null) return accepted.view;
  const detail = options.detail?.() ?? '';
  throw new Error(`timed out after ${options.timeoutMs / 1000} s waiting for ${what}: ${describeMembers(last)}${detail === '' ? '' : `; ${detail}`}`);
}
