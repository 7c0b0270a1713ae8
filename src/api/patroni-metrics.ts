/**
 * The agent's /metrics under Patroni's names and meanings, beside keel_*, so
 * that dashboards and alerts written for Patroni work on a Keel cluster as
 * they are: labels `scope` (the cluster) and `name` (the member), values read
 * from the last loop's snapshot at scrape time.
 *
 * Patroni types the WAL positions and the timeline as counters; here they are
 * gauges (a timeline or position can go back after a rewind or a new clone,
 * and Prometheus' linter wants a counter's name to end in _total). Queries
 * read them the same way. Keel has no pause mode and no standby cluster:
 * patroni_is_paused and patroni_standby_leader are always 0.
 */
import { Gauge, Registry } from 'prom-client';
import type { Snapshot } from '../agent/snapshot.js';
import { keelVersion, versionNumber } from '../util/version.js';
import type { AgentHandle, ApiOptions } from './handle.js';
import { observeNode, type NodeFacts } from './status.js';

interface Scrape {
  snap: Snapshot | null;
  facts: NodeFacts;
  runtime: NonNullable<Snapshot['pg']['runtime']> | null;
  replica: boolean;
}

const bit = (yes: boolean): number => (yes ? 1 : 0);

export function buildPatroniRegistry(handle: AgentHandle, options: ApiOptions): Registry {
  const registry = new Registry();
  registry.setDefaultLabels({ scope: options.node.cluster, name: options.node.name });
  // when etcd was last read: a snapshot without the cluster says nothing new
  let dcsSeenMs = 0;
  const scrape = (): Scrape => {
    const snap = handle.lastSnapshot;
    if (snap?.cluster) dcsSeenMs = Math.max(dcsSeenMs, snap.nowMs);
    const runtime = snap?.pg.runtime ?? null;
    return { snap, facts: observeNode(handle, options.node, options.clock.now()), runtime, replica: runtime?.inRecovery ?? false };
  };
  const gauge = (name: string, help: string, value: (s: Scrape) => number) =>
    new Gauge({
      name,
      help,
      registers: [registry],
      collect() {
        this.set(value(scrape()));
      },
    });

  gauge('patroni_version', "Keel's version with two digits each for major, minor and patch, in the place of Patroni's own", () => versionNumber(keelVersion()));
  gauge('patroni_postgres_running', 'Value is 1 if Postgres is running, 0 otherwise.', (s) => bit(s.facts.postgresRunning));
  gauge('patroni_postmaster_start_time', 'Epoch seconds since Postgres started (0 when it is not running).', (s) => (s.runtime === null ? 0 : (s.runtime.postmasterStartSeconds ?? Number.NaN)));
  gauge('patroni_primary', 'Value is 1 if this node is the leader, 0 otherwise.', (s) => bit(s.facts.isLeader));
  gauge('patroni_xlog_location', 'Current location of the Postgres transaction log, 0 if this node is not the leader.', (s) => (s.facts.isLeader ? (s.runtime?.walLsn ?? 0) : 0));
  gauge('patroni_standby_leader', 'Value is 1 if this node is the standby_leader, 0 otherwise (Keel runs no standby cluster).', () => 0);
  gauge('patroni_replica', 'Value is 1 if this node is a replica, 0 otherwise.', (s) => bit(s.replica));
  gauge('patroni_sync_standby', 'Value is 1 if this node is a sync standby replica, 0 otherwise.', (s) => bit(s.replica && (s.snap?.cluster?.sync?.value.members.includes(options.node.name) ?? false)));
  gauge('patroni_xlog_received_location', 'Current location of the received Postgres transaction log, 0 if this node is not a replica.', (s) => (s.replica ? (s.runtime?.receivedLsn ?? 0) : 0));
  gauge('patroni_xlog_replayed_location', 'Current location of the replayed Postgres transaction log, 0 if this node is not a replica.', (s) => (s.replica ? (s.runtime?.replayedLsn ?? 0) : 0));
  gauge('patroni_xlog_replayed_timestamp', 'Current timestamp of the replayed Postgres transaction log, 0 if null.', (s) => (s.replica ? (s.runtime?.replayedXactSeconds ?? 0) : 0));
  gauge('patroni_xlog_paused', 'Value is 1 if the Postgres xlog is paused, 0 otherwise.', (s) => bit(s.replica && (s.runtime?.replayPaused ?? false)));
  gauge('patroni_postgres_streaming', 'Value is 1 if Postgres is streaming, 0 otherwise.', (s) => bit(s.facts.status.streaming));
  gauge('patroni_postgres_server_version', 'Version of Postgres (if running), 0 otherwise.', (s) => s.runtime?.serverVersionNum ?? 0);
  gauge('patroni_cluster_unlocked', 'Value is 1 if the cluster is unlocked (no leader key), 0 if locked; NaN before etcd was read.', (s) => (s.snap?.cluster ? bit(s.snap.cluster.leader === null) : Number.NaN));
  gauge('patroni_postgres_timeline', 'Postgres timeline of this node (if running), 0 otherwise.', (s) => (s.runtime === null ? 0 : (s.facts.status.timeline ?? 0)));
  gauge('patroni_timeline', 'Postgres timeline of this node (if running), 0 otherwise: the older name of patroni_postgres_timeline.', (s) => (s.runtime === null ? 0 : (s.facts.status.timeline ?? 0)));
  gauge('patroni_dcs_last_seen', 'Epoch timestamp when DCS was last contacted successfully (a read of the cluster or a lease renewal).', () => {
    const renewedMs = handle.lease.lastRenewalMs ?? 0;
    return Math.floor(Math.max(dcsSeenMs, renewedMs) / 1000);
  });
  gauge('patroni_is_paused', 'Value is 1 if auto failover is disabled, 0 otherwise (Keel has no pause mode).', () => 0);
  return registry;
}
