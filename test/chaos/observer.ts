/**
 * Watches the cluster from outside while faults run: every change of the
 * leader key (through an etcd watch, and through a poll that also keeps the
 * latest full view), and every change of a member's state or reason. The
 * checker turns the leader observations into leadership tenures.
 */
import type { Etcd3, Watcher } from 'etcd3';
import { keys } from '../../src/dcs/codec.js';
import { createEtcdClient } from '../../src/dcs/etcd-client.js';
import type { EtcdDcs } from '../../src/dcs/etcd.js';
import type { ClusterView } from '../../src/dcs/types.js';
import { sleep } from '../../src/util/clock.js';

export interface LeaderObservation {
  /** when the observation arrived (for a poll: when the answer came back) */
  atMs: number;
  /** for a poll: when the read was sent; the read reflects etcd at some moment in [sentMs, atMs] */
  sentMs: number;
  leader: string | null;
  source: 'watch' | 'poll';
}

export interface MemberNote {
  atMs: number;
  name: string;
  role: string;
  state: string;
  reason: string;
}

const pollMs = 200;

export class Observer {
  readonly leaderObservations: LeaderObservation[] = [];
  readonly memberNotes: MemberNote[] = [];
  latest: ClusterView | null = null;
  latestAtMs = 0;
  private readonly client: Etcd3;
  private watcher: Watcher | null = null;
  private stopped = false;
  private polling: Promise<void> | null = null;
  private lastNote = new Map<string, string>();
  private lastPolledLeader: string | null | undefined = undefined;

  constructor(
    private readonly dcs: EtcdDcs,
    endpoints: string[],
    private readonly cluster: string,
  ) {
    this.client = createEtcdClient(endpoints, 2000);
  }

  async start(): Promise<void> {
    const leaderKey = keys(this.cluster).leader;
    const watcher = await this.client.watch().key(leaderKey).create();
    this.watcher = watcher;
    const note = (leader: string | null) => {
      const atMs = Date.now();
      this.leaderObservations.push({ atMs, sentMs: atMs, leader, source: 'watch' });
    };
    watcher.on('put', (kv) => {
      try {
        note((JSON.parse(kv.value.toString('utf8')) as { name?: string }).name ?? null);
      } catch {
        note(null);
      }
    });
    watcher.on('delete', () => note(null));
    this.polling = this.poll();
  }

  private async poll(): Promise<void> {
    while (!this.stopped) {
      const sentMs = Date.now();
      const view = await this.dcs.readCluster().catch(() => null);
      const atMs = Date.now();
      if (view !== null) {
        this.latest = view;
        this.latestAtMs = atMs;
        const leader = view.leader?.value.name ?? null;
        if (leader !== this.lastPolledLeader) {
          this.leaderObservations.push({ atMs, sentMs, leader, source: 'poll' });
          this.lastPolledLeader = leader;
        }
        for (const m of view.members) {
          const text = `${m.role}|${m.state}|${m.reason.replace(/\(\d+ s so far\)/, '').replace(/\d+ bytes behind/, 'n bytes behind')}`;
          if (this.lastNote.get(m.name) !== text) {
            this.lastNote.set(m.name, text);
            this.memberNotes.push({ atMs, name: m.name, role: m.role, state: m.state, reason: m.reason });
          }
        }
      }
      await sleep(pollMs);
    }
  }

  leader(): string | null {
    return this.latest?.leader?.value.name ?? null;
  }

  /** Resolves with the first fresh view that `accept` takes; null after the timeout. */
  async waitFor(accept: (view: ClusterView, atMs: number) => boolean, timeoutMs: number): Promise<{ view: ClusterView; atMs: number } | null> {
    const deadline = Date.now() + timeoutMs;
    let seen = this.latestAtMs;
    while (Date.now() < deadline) {
      if (this.latest !== null && this.latestAtMs !== seen) {
        seen = this.latestAtMs;
        if (accept(this.latest, this.latestAtMs)) return { view: this.latest, atMs: this.latestAtMs };
      }
      await sleep(50);
    }
    return null;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.polling;
    await this.watcher?.cancel().catch(() => undefined);
    this.client.close();
  }
}
