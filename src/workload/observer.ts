/**
 * Watches the cluster from outside while it is hurt. Two sources, so that
 * one stuck connection (a watch held by an isolated etcd member) hides
 * nothing:
 *   - a watch on the cluster's prefix: every change of the leader key with
 *     its exact etcd revision; restarted from the last revision seen when it
 *     goes quiet while polls show the store moving;
 *   - a poll of the whole prefix every 200 ms (linearizable reads that fail
 *     over between members), which keeps the latest view, stamps the leader
 *     with the read's header revision, and records member state changes.
 * Each leader sample says "at etcd revision `rev` the key named `leader`"
 * and arrived at `atMs`; the checker orders them by revision.
 */
import type { Etcd3, Watcher } from 'etcd3';
import { keys } from '../dcs/codec.js';
import { createEtcdClient, type EtcdCredentials } from '../dcs/etcd-client.js';
import type { EtcdDcs } from '../dcs/etcd.js';
import type { ClusterView } from '../model/values.js';
import { sleep } from '../util/clock.js';
import type { LeaderSample } from './records.js';
import { pollView } from './wait.js';

export interface MemberNote {
  atMs: number;
  name: string;
  role: string;
  state: string;
  reason: string;
}

const pollMs = 200;
/** A watch that saw nothing for this long while polls saw the revision move is restarted. */
const watchQuietMs = 3000;

export class Observer {
  readonly samples: LeaderSample[] = [];
  readonly memberNotes: MemberNote[] = [];
  watchRestarts = 0;
  latest: ClusterView | null = null;
  latestAtMs = 0;
  private readonly client: Etcd3;
  private readonly prefix: string;
  private readonly leaderKey: string;
  private watcher: Watcher | null = null;
  private watchRev = 0;
  private watchEventAtMs = 0;
  private restartingWatch = false;
  private stopped = false;
  private polling: Promise<void> | null = null;
  private readonly lastNote = new Map<string, string>();
  private lastPolledLeader: string | null | undefined = undefined;

  constructor(
    private readonly dcs: EtcdDcs,
    endpoints: string[],
    cluster: string,
    credentials: EtcdCredentials = {},
  ) {
    this.client = createEtcdClient(endpoints, 2000, credentials);
    this.prefix = keys(cluster).prefix;
    this.leaderKey = keys(cluster).leader;
  }

  async start(): Promise<void> {
    await this.startWatch(null);
    this.polling = this.poll();
  }

  private async startWatch(fromRev: number | null): Promise<void> {
    let builder = this.client.watch().prefix(this.prefix);
    if (fromRev !== null) builder = builder.startRevision(String(fromRev));
    const watcher = await builder.create();
    this.watcher = watcher;
    this.watchEventAtMs = Date.now();
    const sample = (rev: string, leader: string | null) => {
      this.samples.push({ rev: Number(rev), leader, atMs: Date.now(), source: 'watch' });
    };
    watcher.on('data', (res) => {
      this.watchEventAtMs = Date.now();
      this.watchRev = Math.max(this.watchRev, Number(res.header.revision));
    });
    watcher.on('put', (kv) => {
      if (kv.key.toString('utf8') !== this.leaderKey) return;
      let name: string | null = null;
      try {
        name = (JSON.parse(kv.value.toString('utf8')) as { name?: string }).name ?? null;
      } catch {
        // an unreadable leader value counts as no leader, as the agents treat it
      }
      sample(kv.mod_revision, name);
    });
    watcher.on('delete', (kv) => {
      if (kv.key.toString('utf8') === this.leaderKey) sample(kv.mod_revision, null);
    });
  }

  private async restartWatch(): Promise<void> {
    if (this.restartingWatch) return;
    this.restartingWatch = true;
    try {
      const old = this.watcher;
      this.watcher = null;
      void old?.cancel().catch(() => undefined);
      this.watchRestarts += 1;
      // from the next revision: nothing between the two watches is missed
      await this.startWatch(this.watchRev > 0 ? this.watchRev + 1 : null);
    } catch {
      // the next quiet check tries again
    } finally {
      this.restartingWatch = false;
    }
  }

  private async poll(): Promise<void> {
    while (!this.stopped) {
      const view = await this.dcs.readCluster().catch(() => null);
      const atMs = Date.now();
      if (view !== null) {
        this.latest = view;
        this.latestAtMs = atMs;
        const leader = view.leader?.value.name ?? null;
        const rev = Number(view.revision);
        if (leader !== this.lastPolledLeader) {
          this.samples.push({ rev, leader, atMs, source: 'poll' });
          this.lastPolledLeader = leader;
        }
        this.noteMembers(view, atMs);
        if (rev > this.watchRev && atMs - this.watchEventAtMs > watchQuietMs) void this.restartWatch();
      }
      await sleep(pollMs);
    }
  }

  private noteMembers(view: ClusterView, atMs: number): void {
    for (const m of view.members) {
      // progress counters would make every poll a change
      const reason = m.reason.replace(/\(\d+ s so far\)/, '').replace(/\d+ bytes behind/, 'n bytes behind').replace(/\(lsn \d+\)/, '');
      const text = `${m.role}|${m.state}|${reason}`;
      if (this.lastNote.get(m.name) === text) continue;
      this.lastNote.set(m.name, text);
      this.memberNotes.push({ atMs, name: m.name, role: m.role, state: m.state, reason: m.reason });
    }
  }

  leader(): string | null {
    return this.latest?.leader?.value.name ?? null;
  }

  /** The lease the leader key is bound to, as etcd sees it; null without a leader key. */
  async leaderLease(): Promise<{ leader: string | null; grantedTtlSeconds: number; remainingSeconds: number } | null> {
    const res = await this.client.get(this.leaderKey).exec();
    const kv = res.kvs[0];
    if (kv === undefined || kv.lease === '0') return null;
    let leader: string | null = null;
    try {
      leader = (JSON.parse(kv.value.toString('utf8')) as { name?: string }).name ?? null;
    } catch {
      // unreadable: reported as no name
    }
    const lease = await this.client.leaseClient.leaseTimeToLive({ ID: kv.lease });
    return { leader, grantedTtlSeconds: Number(lease.grantedTTL), remainingSeconds: Number(lease.TTL) };
  }

  /** Resolves with the first new view that `accept` takes; null after the timeout. */
  async waitFor(accept: (view: ClusterView, atMs: number) => boolean, timeoutMs: number): Promise<{ view: ClusterView; atMs: number } | null> {
    let seen = 0;
    const fresh = async () => {
      if (this.latest === null || this.latestAtMs === seen) return null;
      seen = this.latestAtMs;
      return { view: this.latest, atMs: this.latestAtMs };
    };
    return (await pollView(fresh, accept, timeoutMs, 50)).accepted;
  }

  /** When a leader other than `name` was first seen (by either source); null if none was. */
  firstLeaderOtherThan(name: string): number | null {
    return this.samples.find((s) => s.leader !== null && s.leader !== name)?.atMs ?? null;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.polling;
    await this.watcher?.cancel().catch(() => undefined);
    this.client.close();
  }
}
