import { describe, expect, it } from 'vitest';
import { decide } from '../../src/agent/decide.js';
import { conninfoTarget, promotionSettleMs } from '../../src/agent/decide-follower.js';
import { isAllowed, transitions, type State } from '../../src/agent/states.js';
import type { Snapshot } from '../../src/agent/snapshot.js';
import { defaultDynamicConfig } from '../../src/config/schema.js';
import {
  NOW,
  cluster,
  control,
  heldLease,
  leaderKey,
  member,
  primaryMember,
  primaryRuntime,
  replicaRuntime,
  snapshot,
} from './fixtures.js';

interface Case {
  name: string;
  snap: Snapshot;
  to: State;
  actions: string[];
  reason: RegExp;
}

const noLeader = (over: Parameters<typeof cluster>[0] = {}) =>
  cluster({ members: [member('node2'), member('node3', { receivedLsn: 900, replayedLsn: 900 })], ...over });
const stoppedPg = { runtime: null, postmasterPid: null };
const emptyPg = { dataDir: 'empty' as const, control: null, runtime: null, postmasterPid: null };
const history = (timeline: number, switchLsn: number) => ({
  value: { v: 1 as const, entries: [{ timeline, switchLsn, leader: 'node1', atMs: NOW - 5000, reason: 'failover' }] },
  modRevision: '7',
});

const ttl30 = { ...defaultDynamicConfig, ttl: 30 };
/** node2 leads on its own lease L2; node1 streams into its slot; nothing to do. */
const leaderSteady = (over: Parameters<typeof snapshot>[0] = {}) =>
  snapshot({
    state: 'primary',
    cluster: cluster({ leader: leaderKey('node2', 'L2'), members: [primaryMember('node2'), member('node1')] }),
    pg: { runtime: primaryRuntime({ slots: ['node1'] }) },
    ...over,
  });

const cases: Case[] = [
  // etcd unreachable
  {
    name: 'etcd unreachable, lease still valid: keep the primary',
    snap: snapshot({ state: 'primary', cluster: null, pg: { runtime: primaryRuntime() } }),
    to: 'primary', actions: [], reason: /lease is still valid/,
  },
  {
    name: 'etcd unreachable, no lease ever renewed by this agent: demote to read-only',
    snap: snapshot({ state: 'primary', cluster: null, lease: null, pg: { runtime: primaryRuntime() } }),
    to: 'replica', actions: ['stopPostgres', 'startPostgres'], reason: /about to expire: demoting/,
  },
  {
    name: 'etcd unreachable, stopped data directory: start read-only',
    snap: snapshot({ state: 'stopped', cluster: null, pg: stoppedPg }),
    to: 'replica', actions: ['startPostgres'], reason: /cannot reach etcd: starting PostgreSQL read-only/,
  },
  {
    name: 'etcd unreachable at agent start: act on nothing',
    snap: snapshot({ state: 'starting', cluster: null, pg: stoppedPg }),
    to: 'starting', actions: [], reason: /waiting for it/,
  },
  // lease
  {
    name: 'leader lease not renewed in time: stop at once',
    snap: snapshot({
      state: 'primary',
      lease: heldLease({ lastRenewalMs: NOW - 9000 }),
      cluster: cluster({ leader: leaderKey('node2', 'L2'), members: [primaryMember('node2')] }),
      pg: { runtime: primaryRuntime() },
    }),
    to: 'stopped', actions: ['stopPostgres'], reason: /not renewed in time/,
  },
  {
    name: 'no lease yet: grant one',
    snap: snapshot({ state: 'starting', lease: null }),
    to: 'starting', actions: ['grantLease'], reason: /no lease/,
  },
  // bootstrap
  {
    name: 'uninitialized, empty: race for initialize',
    snap: snapshot({ state: 'starting', cluster: cluster({ initialize: null }), pg: emptyPg }),
    to: 'starting', actions: ['claimInitialize'], reason: /racing to bootstrap/,
  },
  {
    name: 'uninitialized in etcd but data here: claim it with my system id',
    snap: snapshot({ state: 'starting', cluster: cluster({ initialize: null }), pg: stoppedPg }),
    to: 'starting', actions: ['claimInitialize'], reason: /claiming it for my data/,
  },
  {
    name: 'won initialize, no leader: take the key',
    snap: snapshot({ state: 'starting', me: { name: 'node1', nofailover: false }, cluster: cluster({ initialize: { value: { v: 1, by: 'node1', systemId: null }, modRevision: '2' } }), pg: emptyPg }),
    to: 'starting', actions: ['acquireLeader'], reason: /taking the leader key/,
  },
  {
    name: 'won initialize and hold the key: bootstrap',
    snap: snapshot({
      state: 'starting', me: { name: 'node1', nofailover: false },
      cluster: cluster({ initialize: { value: { v: 1, by: 'node1', systemId: null }, modRevision: '2' }, leader: leaderKey('node1', 'L2') }),
      pg: emptyPg,
    }),
    to: 'bootstrapping', actions: ['bootstrap'], reason: /bootstrapping the cluster/,
  },
  {
    name: 'another member bootstraps: wait',
    snap: snapshot({ state: 'starting', cluster: cluster({ initialize: { value: { v: 1, by: 'node1', systemId: null }, modRevision: '2' } }), pg: emptyPg }),
    to: 'starting', actions: [], reason: /waiting for node1 to bootstrap/,
  },
  {
    name: 'bootstrap failed: clean up and give the race back',
    snap: snapshot({
      state: 'bootstrapping', me: { name: 'node1', nofailover: false },
      cluster: cluster({ initialize: { value: { v: 1, by: 'node1', systemId: null }, modRevision: '2' }, leader: leaderKey('node1', 'L2') }),
      lastJob: { kind: 'bootstrap', ok: false, error: 'initdb failed', finishedAtMs: NOW - 10 },
      pg: { ...stoppedPg, control: null },
    }),
    to: 'stopped', actions: ['stopPostgres', 'removeDataDir', 'releaseLeader', 'deleteInitialize'], reason: /giving the race back/,
  },
  {
    name: 'bootstrap succeeded: the new primary leads',
    snap: snapshot({
      state: 'bootstrapping', me: { name: 'node1', nofailover: false },
      cluster: cluster({ leader: leaderKey('node1', 'L2'), members: [] }),
      lastJob: { kind: 'bootstrap', ok: true, error: null, finishedAtMs: NOW - 10 },
      pg: { runtime: primaryRuntime() },
    }),
    to: 'primary', actions: [], reason: /I am the leader with the lease/,
  },
  {
    name: 'after a failed bootstrap someone else won: wait for it',
    snap: snapshot({ state: 'stopped', cluster: cluster({ initialize: { value: { v: 1, by: 'node3', systemId: null }, modRevision: '9' } }), pg: emptyPg }),
    to: 'stopped', actions: [], reason: /waiting for node3/,
  },
  {
    name: 'stopped after a failed bootstrap, won the race again: bootstrap',
    snap: snapshot({
      state: 'stopped', me: { name: 'node1', nofailover: false },
      cluster: cluster({ initialize: { value: { v: 1, by: 'node1', systemId: null }, modRevision: '12' }, leader: leaderKey('node1', 'L2') }),
      pg: emptyPg,
    }),
    to: 'bootstrapping', actions: ['bootstrap'], reason: /bootstrapping/,
  },
  // foreign data
  {
    name: 'data directory of another cluster: refuse',
    snap: snapshot({ state: 'starting', pg: { ...stoppedPg, control: control({ systemId: '999' }) } }),
    to: 'failed', actions: ['event'], reason: /another cluster|refusing to join/,
  },
  {
    name: 'foreign data found while stopped: refuse',
    snap: snapshot({ state: 'stopped', pg: { ...stoppedPg, control: control({ systemId: '999' }) } }),
    to: 'failed', actions: ['event'], reason: /refusing to join/,
  },
  {
    name: 'foreign data under a running replica: refuse',
    snap: snapshot({ state: 'replica', pg: { control: control({ systemId: '999' }) } }),
    to: 'failed', actions: ['event'], reason: /refusing to join/,
  },
  {
    name: 'failed stays failed',
    snap: snapshot({ state: 'failed', pg: { ...stoppedPg, control: control({ systemId: '999' }) } }),
    to: 'failed', actions: [], reason: /holds system 999 but the cluster is 7300000000000000001: refusing to join/,
  },
  // clone
  {
    name: 'empty data directory with a leader: clone',
    snap: snapshot({ state: 'starting', pg: emptyPg }),
    to: 'cloning', actions: ['clone'], reason: /cloning from leader node1/,
  },
  {
    name: 'stopped with empty data: clone',
    snap: snapshot({ state: 'stopped', pg: emptyPg }),
    to: 'cloning', actions: ['clone'], reason: /cloning from leader node1/,
  },
  {
    name: 'interrupted clone (files, no pg_control): remove it, then clone again',
    snap: snapshot({ state: 'starting', pg: { dataDir: 'incomplete', control: null, runtime: null, postmasterPid: null } }),
    to: 'stopped', actions: ['removeDataDir'], reason: /interrupted clone/,
  },
  {
    name: 'clone just failed: wait before retrying',
    snap: snapshot({ state: 'stopped', pg: emptyPg, lastJob: { kind: 'clone', ok: false, error: 'timeout', finishedAtMs: NOW - 1000 } }),
    to: 'stopped', actions: [], reason: /retrying shortly/,
  },
  {
    name: 'clone failed: stopped, the partial copy is gone',
    snap: snapshot({ state: 'cloning', pg: emptyPg, lastJob: { kind: 'clone', ok: false, error: 'connection refused', finishedAtMs: NOW - 10 } }),
    to: 'stopped', actions: [], reason: /cloning failed \(connection refused\)/,
  },
  {
    name: 'fresh base backup (pg_control says in production, backup_label present): start as replica, no rewind',
    snap: snapshot({ state: 'starting', pg: { ...stoppedPg, control: control({ clusterState: 'in production', backupLabel: true }) } }),
    to: 'replica', actions: ['startPostgres'], reason: /starting as a replica of leader node1/,
  },
  {
    name: 'clone done: start as a replica',
    snap: snapshot({ state: 'cloning', pg: stoppedPg, lastJob: { kind: 'clone', ok: true, error: null, finishedAtMs: NOW - 10 } }),
    to: 'replica', actions: ['startPostgres'], reason: /replica of leader node1/,
  },
  {
    name: 'leader not published yet: wait to clone',
    snap: snapshot({ state: 'starting', cluster: cluster({ leader: leaderKey('node1'), members: [] }), pg: emptyPg }),
    to: 'starting', actions: [], reason: /waiting for leader node1 to publish/,
  },
  // start with data (safety rule 5)
  {
    name: 'found a standby data directory and a leader: start as replica',
    snap: snapshot({ state: 'starting', pg: stoppedPg }),
    to: 'replica', actions: ['startPostgres'], reason: /starting as a replica of leader node1/,
  },
  {
    name: 'found data, no leader: start as replica, never primary',
    snap: snapshot({ state: 'starting', cluster: noLeader(), pg: { ...stoppedPg, control: control({ clusterState: 'in production' }) } }),
    to: 'replica', actions: ['startPostgres'], reason: /safety rule 5/,
  },
  {
    name: 'last leader, shut down cleanly with everything: resume as primary without a new timeline',
    snap: snapshot({
      state: 'starting',
      cluster: noLeader({ status: { value: { v: 1, leader: 'node2', timeline: 1, walLsn: 900, updatedAtMs: NOW - 60000 }, modRevision: '8' } }),
      pg: { ...stoppedPg, control: control({ clusterState: 'shut down', checkpointLsn: 900 }) },
    }),
    to: 'primary', actions: ['acquireLeader', 'startPostgres'], reason: /last leader and shut down cleanly/,
  },
  {
    name: 'last leader, shut down cleanly, but another node started a newer timeline since: a replica first, to be promoted past it',
    snap: snapshot({
      state: 'starting',
      cluster: noLeader({ status: { value: { v: 1, leader: 'node2', timeline: 1, walLsn: 900, updatedAtMs: NOW - 60000 }, modRevision: '8' }, history: history(2, 900) }),
      pg: { ...stoppedPg, control: control({ clusterState: 'shut down', checkpointLsn: 900 }) },
    }),
    to: 'replica', actions: ['startPostgres'], reason: /starting PostgreSQL as a replica/,
  },
  {
    name: 'found a running primary while another leads: stop it at once',
    snap: snapshot({ state: 'starting', pg: { runtime: primaryRuntime() } }),
    to: 'stopped', actions: ['stopPostgres'], reason: /node1 holds the leader key: stopping my primary/,
  },
  // rewind (safety rule 4)
  {
    name: 'crashed old primary, new leader exists: rewind',
    snap: snapshot({ state: 'starting', pg: { ...stoppedPg, control: control({ clusterState: 'in production' }) } }),
    to: 'rewinding', actions: ['rewind'], reason: /diverged .* rewinding/,
  },
  {
    name: 'stopped old primary past the switch point: rewind',
    snap: snapshot({
      state: 'stopped',
      cluster: cluster({ leader: leaderKey('node1'), members: [primaryMember('node1', { timeline: 2 })], history: history(2, 500) }),
      pg: { ...stoppedPg, control: control({ clusterState: 'shut down', checkpointLsn: 800 }) },
    }),
    to: 'rewinding', actions: ['rewind'], reason: /rewinding/,
  },
  {
    name: 'old primary stopped cleanly before the switch point (switchover): follow without rewind',
    snap: snapshot({
      state: 'stopped',
      cluster: cluster({ leader: leaderKey('node1'), members: [primaryMember('node1', { timeline: 2 })], history: history(2, 968) }),
      pg: { ...stoppedPg, control: control({ clusterState: 'shut down', checkpointLsn: 900 }) },
    }),
    to: 'replica', actions: ['startPostgres'], reason: /starting as a replica of leader node1/,
  },
  {
    name: 'replica that cannot stream, with WAL replayed past the new timeline fork: stop and rewind',
    snap: snapshot({
      state: 'replica',
      cluster: cluster({ leader: leaderKey('node1'), members: [primaryMember('node1', { timeline: 2 })], history: history(2, 500) }),
      pg: { runtime: replicaRuntime({ streaming: false }) },
      memory: { notStreamingSinceMs: NOW - 11_000 },
    }),
    to: 'rewinding', actions: ['stopPostgres', 'rewind'], reason: /rewinding/,
  },
  {
    name: 'replica streaming its old timeline with WAL replayed past the fork (a blip after each reconnect): stop and rewind',
    snap: snapshot({
      cluster: cluster({ leader: leaderKey('node1'), members: [primaryMember('node1', { timeline: 2 }), member('node2')], history: history(2, 500) }),
    }),
    to: 'rewinding', actions: ['stopPostgres', 'rewind'], reason: /diverged .* rewinding/,
  },
  {
    name: 'replica streaming its old timeline up to the fork: keep following (it switches timeline there)',
    snap: snapshot({
      cluster: cluster({ leader: leaderKey('node1'), members: [primaryMember('node1', { timeline: 2 }), member('node2')], history: history(2, 1000) }),
    }),
    to: 'replica', actions: [], reason: /following leader node1, streaming/,
  },
  {
    name: 'replica streaming the leader timeline: keep following whatever the history says',
    snap: snapshot({
      cluster: cluster({ leader: leaderKey('node1'), members: [primaryMember('node1', { timeline: 2 }), member('node2')], history: history(2, 500) }),
      pg: { runtime: replicaRuntime({ timeline: 2 }) },
    }),
    to: 'replica', actions: [], reason: /following leader node1, streaming/,
  },
  {
    name: 'demoted primary that wrote past the new timeline fork, now a replica that cannot stream: rewind at once',
    snap: snapshot({
      state: 'replica',
      cluster: cluster({ leader: leaderKey('node1'), members: [primaryMember('node1', { timeline: 2 })], history: history(2, 500) }),
      pg: { runtime: replicaRuntime({ streaming: false }) },
      memory: { notStreamingSinceMs: NOW - 1_000, formerPrimary: { timeline: 1, walLsn: 900 } },
    }),
    to: 'rewinding', actions: ['stopPostgres', 'rewind'], reason: /diverged .* rewinding/,
  },
  {
    name: 'old leader shut down on timeline 2, the new leader holds the key but still publishes itself as a replica: wait, compare nothing yet',
    snap: snapshot({
      state: 'stopped',
      cluster: cluster({ leader: leaderKey('node1'), members: [member('node1', { timeline: 1 })], history: history(3, 700) }),
      pg: { runtime: null, postmasterPid: null, control: control({ clusterState: 'shut down', timeline: 2, checkpointLsn: 600 }) },
    }),
    to: 'stopped', actions: [], reason: /waiting for leader node1 to publish a running primary/,
  },
  {
    name: 'former primary that stopped at the switch point (switchover): follow, no rewind',
    snap: snapshot({
      state: 'replica',
      cluster: cluster({ leader: leaderKey('node1'), members: [primaryMember('node1', { timeline: 2 })], history: history(2, 500) }),
      pg: { runtime: replicaRuntime({ streaming: false, replayedLsn: 500, receivedLsn: 500 }) },
      memory: { notStreamingSinceMs: NOW - 1_000, formerPrimary: { timeline: 1, walLsn: 500 } },
    }),
    to: 'replica', actions: [], reason: /not streaming yet/,
  },
  {
    name: 'replica past the fork, not streaming only briefly: give it time',
    snap: snapshot({
      cluster: cluster({ leader: leaderKey('node1'), members: [primaryMember('node1', { timeline: 2 })], history: history(2, 500) }),
      pg: { runtime: replicaRuntime({ streaming: false }) },
      memory: { notStreamingSinceMs: NOW - 2_000 },
    }),
    to: 'replica', actions: [], reason: /not streaming yet/,
  },
  {
    name: 'diverged with use_rewind off: re-clone',
    snap: snapshot({
      state: 'replica', config: { ...defaultDynamicConfig, use_rewind: false },
      cluster: cluster({ leader: leaderKey('node1'), members: [primaryMember('node1', { timeline: 2 })], history: history(2, 500) }),
      pg: { runtime: replicaRuntime({ streaming: false }) },
      memory: { notStreamingSinceMs: NOW - 11_000 },
    }),
    to: 'stopped', actions: ['stopPostgres', 'removeDataDir'], reason: /use_rewind is off/,
  },
  {
    name: 'rewind done: start as a replica',
    snap: snapshot({ state: 'rewinding', pg: stoppedPg, lastJob: { kind: 'rewind', ok: true, error: null, finishedAtMs: NOW - 10 } }),
    to: 'replica', actions: ['startPostgres'], reason: /replica of leader node1/,
  },
  {
    name: 'rewind failed because the leader was unreachable: keep the data and retry',
    snap: snapshot({ state: 'rewinding', pg: { ...stoppedPg, control: control({ clusterState: 'in production' }) }, lastJob: { kind: 'rewind', ok: false, error: 'node1 unreachable at 127.0.0.1:5501', finishedAtMs: NOW - 10 } }),
    to: 'rewinding', actions: [], reason: /could not reach node1: retrying/,
  },
  {
    name: 'rewind failed: remove the data to clone again',
    snap: snapshot({ state: 'rewinding', pg: { ...stoppedPg, control: control({ clusterState: 'in production' }) }, lastJob: { kind: 'rewind', ok: false, error: 'could not find common ancestor', finishedAtMs: NOW - 10 } }),
    to: 'stopped', actions: ['removeDataDir'], reason: /pg_rewind failed .* clone again/,
  },
  // following
  {
    name: 'streaming replica of the leader: nothing to do',
    snap: snapshot(),
    to: 'replica', actions: [], reason: /following leader node1, streaming, 0 bytes behind/,
  },
  {
    name: 'replica pointing at an old leader: re-point without restart',
    snap: snapshot({ cluster: cluster({ leader: leaderKey('node3'), members: [primaryMember('node3', { timeline: 1 }), member('node2')] }) }),
    to: 'replica', actions: ['follow'], reason: /re-pointing replication to leader node3/,
  },
  {
    name: 'replica whose PostgreSQL is gone: stopped',
    snap: snapshot({ state: 'replica', pg: stoppedPg, cluster: noLeader() }),
    to: 'replica', actions: ['startPostgres'], reason: /no leader: starting PostgreSQL as a replica/,
  },
  // failover (safety rule 3)
  {
    name: 'no leader, I am the most advanced healthy replica: take the key and promote',
    snap: snapshot({ cluster: noLeader() }),
    to: 'primary', actions: ['promote'], reason: /healthiest replica/,
  },
  {
    name: 'no leader, another replica is further ahead: wait',
    snap: snapshot({ cluster: noLeader({ members: [member('node2'), member('node3', { receivedLsn: 2000 })] }) }),
    to: 'replica', actions: [], reason: /node3 is further ahead/,
  },
  {
    name: 'no leader, a stale member key does not block',
    snap: snapshot({ cluster: noLeader({ members: [member('node2'), member('node3', { receivedLsn: 2000, updatedAtMs: NOW - 60000 })] }) }),
    to: 'primary', actions: ['promote'], reason: /healthiest/,
  },
  {
    name: 'no leader, tagged nofailover: never take over',
    snap: snapshot({ me: { name: 'node2', nofailover: true }, cluster: noLeader() }),
    to: 'replica', actions: [], reason: /nofailover/,
  },
  {
    name: 'no leader, too far behind the last known leader position: do not take over',
    snap: snapshot({ cluster: noLeader({ status: { value: { v: 1, leader: 'node1', timeline: 1, walLsn: 1000 + 2 * 1024 * 1024, updatedAtMs: NOW }, modRevision: '4' } }) }),
    to: 'replica', actions: [], reason: /bytes behind the last known leader position/,
  },
  {
    name: 'no leader, synchronous mode and not in the sync set: do not take over',
    snap: snapshot({
      config: { ...defaultDynamicConfig, synchronous_mode: 'on' },
      cluster: noLeader({ sync: { value: { v: 1, leader: 'node1', members: ['node3'] }, modRevision: '3' } }),
    }),
    to: 'replica', actions: [], reason: /not in the synchronous set/,
  },
  {
    name: 'no leader, switchover to another member pending: wait',
    snap: snapshot({ cluster: noLeader({ switchover: { value: { v: 1, from: 'node1', to: 'node3', failover: false, requestedAtMs: NOW - 1000 }, modRevision: '6' } }) }),
    to: 'replica', actions: [], reason: /switchover to node3 is pending/,
  },
  {
    name: 'no leader, I am the switchover target: promote even if another is ahead',
    snap: snapshot({
      cluster: noLeader({
        members: [member('node2'), member('node3', { receivedLsn: 2000 })],
        switchover: { value: { v: 1, from: 'node1', to: 'node2', failover: false, requestedAtMs: NOW - 1000 }, modRevision: '6' },
      }),
    }),
    to: 'primary', actions: ['promote'], reason: /requested switchover target/,
  },
  {
    name: "no leader, I am the target of a leader that recorded its shutdown checkpoint: replay WAL past it, then take the key and promote",
    snap: snapshot({
      cluster: noLeader({
        status: { value: { v: 1, leader: 'node1', timeline: 1, walLsn: 1500, updatedAtMs: NOW - 100, shutdownCheckpointLsn: 1500 }, modRevision: '7' },
        switchover: { value: { v: 1, from: 'node1', to: 'node2', failover: false, requestedAtMs: NOW - 1000 }, modRevision: '6' },
      }),
    }),
    to: 'primary', actions: ['promote'], reason: /requested switchover target/,
  },
  {
    name: 'no leader, a shutdown checkpoint recorded by a leader the switchover is not from: no wait for it',
    snap: snapshot({
      cluster: noLeader({
        status: { value: { v: 1, leader: 'node3', timeline: 1, walLsn: 900, updatedAtMs: NOW - 100, shutdownCheckpointLsn: 900 }, modRevision: '7' },
        switchover: { value: { v: 1, from: 'node1', to: 'node2', failover: false, requestedAtMs: NOW - 1000 }, modRevision: '6' },
      }),
    }),
    to: 'primary', actions: ['promote'], reason: /requested switchover target/,
  },
  {
    name: 'no leader, stale switchover request is ignored',
    snap: snapshot({ cluster: noLeader({ switchover: { value: { v: 1, from: 'node1', to: 'node3', failover: false, requestedAtMs: NOW - 60000 }, modRevision: '6' } }) }),
    to: 'primary', actions: ['promote'], reason: /healthiest/,
  },
  {
    name: 'no leader, I stepped down for a switchover without a target: leave the key to a replica',
    snap: snapshot({
      state: 'replica',
      cluster: noLeader({ switchover: { value: { v: 1, from: 'node2', to: null, failover: false, requestedAtMs: NOW - 1000 }, modRevision: '6' } }),
    }),
    to: 'replica', actions: [], reason: /stepped down for a switchover/,
  },
  {
    name: 'stopped after stepping down cleanly as the last leader: start as replica, do not resume',
    snap: snapshot({
      state: 'stopped',
      cluster: noLeader({
        status: { value: { v: 1, leader: 'node2', timeline: 1, walLsn: 900, updatedAtMs: NOW - 1000 }, modRevision: '8' },
        switchover: { value: { v: 1, from: 'node2', to: null, failover: false, requestedAtMs: NOW - 1000 }, modRevision: '6' },
      }),
      pg: { ...stoppedPg, control: control({ clusterState: 'shut down', checkpointLsn: 900 }) },
    }),
    to: 'replica', actions: ['startPostgres'], reason: /safety rule 5/,
  },
  {
    name: 'was primary, came back without the key and diverged: rewind',
    snap: snapshot({ state: 'primary', pg: { ...stoppedPg, control: control({ clusterState: 'in production' }) } }),
    to: 'rewinding', actions: ['rewind'], reason: /rewinding/,
  },
  {
    name: 'was primary, finds its data belongs to another cluster: refuse',
    snap: snapshot({ state: 'primary', pg: { ...stoppedPg, control: control({ systemId: '999' }) } }),
    to: 'failed', actions: ['event'], reason: /refusing to join/,
  },
  {
    name: 'no leader and I still run the primary: take the key back',
    snap: snapshot({ state: 'primary', cluster: noLeader(), pg: { runtime: primaryRuntime() } }),
    to: 'primary', actions: ['acquireLeader'], reason: /taking the key back/,
  },
  // leading
  {
    name: 'leader key names me but an old lease holds it (agent restarted): rebind',
    snap: snapshot({ state: 'starting', cluster: cluster({ leader: leaderKey('node2', 'OLD') }), pg: { runtime: primaryRuntime() } }),
    to: 'starting', actions: ['rebindLeader'], reason: /rebinding/,
  },
  {
    name: 'I hold the key but my lease was not renewed in time: do not promote',
    snap: snapshot({ cluster: cluster({ leader: leaderKey('node2', 'L2') }), lease: heldLease({ lastRenewalMs: NOW - 9000 }) }),
    to: 'replica', actions: [], reason: /not renewed in time: not starting a primary/,
  },
  {
    name: 'no leader but my lease was not renewed in time: do not take the key',
    snap: snapshot({ cluster: noLeader(), lease: heldLease({ lastRenewalMs: NOW - 9000 }) }),
    to: 'replica', actions: [], reason: /not renewed in time: not taking the key/,
  },
  {
    name: 'I hold the key and run a replica: promote',
    snap: snapshot({ cluster: cluster({ leader: leaderKey('node2', 'L2') }) }),
    to: 'primary', actions: ['promote'], reason: /promoting/,
  },
  {
    name: 'I hold the key, PostgreSQL stopped after a clean shutdown: start as primary',
    snap: snapshot({ state: 'stopped', cluster: cluster({ leader: leaderKey('node2', 'L2') }), pg: { ...stoppedPg, control: control({ clusterState: 'shut down' }) } }),
    to: 'primary', actions: ['startPostgres'], reason: /starting PostgreSQL as primary/,
  },
  {
    name: 'I hold the key but have no data: release it',
    snap: snapshot({ state: 'starting', cluster: cluster({ leader: leaderKey('node2', 'L2') }), pg: emptyPg }),
    to: 'stopped', actions: ['releaseLeader'], reason: /no data: releasing it/,
  },
  {
    name: 'leader with a missing slot: create it',
    snap: snapshot({
      state: 'primary',
      cluster: cluster({ leader: leaderKey('node2', 'L2'), members: [primaryMember('node2'), member('node1'), member('node3')] }),
      pg: { runtime: primaryRuntime({ slots: ['node1'] }) },
    }),
    to: 'primary', actions: ['syncSlots'], reason: /I am the leader with the lease/,
  },
  {
    name: 'leader keeps the slot of a member whose key went away recently',
    snap: snapshot({
      state: 'primary',
      cluster: cluster({ leader: leaderKey('node2', 'L2'), members: [primaryMember('node2'), member('node1')] }),
      // node3's key went away 5 s ago
      memory: { lastSeenMs: { node1: NOW - 1000, node3: NOW - 5_000 } },
      pg: { runtime: primaryRuntime({ slots: ['node1', 'node3'] }) },
    }),
    to: 'primary', actions: [], reason: /I am the leader with the lease/,
  },
  {
    name: 'leader drops the slot of a member gone for longer than the grace period',
    snap: snapshot({
      state: 'primary',
      cluster: cluster({ leader: leaderKey('node2', 'L2'), members: [primaryMember('node2'), member('node1')] }),
      // node3's key went away longer ago than member_slots_ttl (1800 s)
      memory: { lastSeenMs: { node1: NOW - 1000, node3: NOW - 1_801_000 } },
      pg: { runtime: primaryRuntime({ slots: ['node1', 'node3'] }) },
    }),
    to: 'primary', actions: ['syncSlots'], reason: /I am the leader with the lease/,
  },
  {
    name: 'a standby start failed because its data cannot reach the leader timeline: clone again',
    snap: snapshot({
      state: 'replica',
      pg: { ...stoppedPg, control: control({ clusterState: 'in archive recovery' }) },
      lastJob: { kind: 'startPostgres', ok: false, finishedAtMs: NOW - 500, error: 'FATAL:  requested timeline 3 does not contain minimum recovery point 0/5012345 on timeline 2' },
    }),
    to: 'stopped', actions: ['removeDataDir'], reason: /cannot follow leader node1's timeline.*clone again/,
  },
  {
    name: 'a standby start failed for another reason: start again',
    snap: snapshot({
      state: 'replica',
      pg: { ...stoppedPg, control: control({ clusterState: 'in archive recovery' }) },
      lastJob: { kind: 'startPostgres', ok: false, finishedAtMs: NOW - 500, error: 'FATAL:  could not bind IPv4 address: Address already in use' },
    }),
    to: 'replica', actions: ['startPostgres'], reason: /starting as a replica of leader node1/,
  },
  // switchover
  {
    name: 'switchover to a streaming, caught-up replica: step down cleanly',
    snap: snapshot({
      state: 'primary',
      cluster: cluster({
        leader: leaderKey('node2', 'L2'),
        members: [primaryMember('node2'), member('node1'), member('node3')],
        switchover: { value: { v: 1, from: 'node2', to: 'node3', failover: false, requestedAtMs: NOW }, modRevision: '11' },
      }),
      pg: { runtime: primaryRuntime({ slots: ['node1', 'node3'] }) },
    }),
    to: 'stopped', actions: ['prepareHandover', 'drainClients', 'stopPostgres', 'releaseLeader', 'event'], reason: /switchover to node3/,
  },
  {
    name: 'switchover prepared already (routers hold): drain, step down cleanly',
    snap: snapshot({
      state: 'primary',
      cluster: cluster({
        leader: leaderKey('node2', 'L2'),
        members: [primaryMember('node2'), member('node1'), member('node3')],
        switchover: { value: { v: 1, from: 'node2', to: 'node3', failover: false, requestedAtMs: NOW - 300, holdFromMs: NOW }, modRevision: '12' },
      }),
      pg: { runtime: primaryRuntime({ slots: ['node1', 'node3'] }) },
    }),
    to: 'stopped', actions: ['drainClients', 'stopPostgres', 'releaseLeader', 'event'], reason: /switchover to node3/,
  },
  {
    name: 'failover requested while the leader runs (routers hold at once): drain with the checkpoint, step down cleanly',
    snap: snapshot({
      state: 'primary',
      cluster: cluster({
        leader: leaderKey('node2', 'L2'),
        members: [primaryMember('node2'), member('node1'), member('node3')],
        switchover: { value: { v: 1, from: 'node2', to: 'node3', failover: true, requestedAtMs: NOW }, modRevision: '11' },
      }),
      pg: { runtime: primaryRuntime({ slots: ['node1', 'node3'] }) },
    }),
    to: 'stopped', actions: ['drainClients', 'stopPostgres', 'releaseLeader', 'event'], reason: /switchover to node3/,
  },
  {
    name: 'switchover to a lagging replica: refused and cleared',
    snap: snapshot({
      state: 'primary',
      cluster: cluster({
        leader: leaderKey('node2', 'L2'),
        members: [primaryMember('node2'), member('node3', { receivedLsn: 10, replayedLsn: 10 })],
        switchover: { value: { v: 1, from: 'node2', to: 'node3', failover: false, requestedAtMs: NOW }, modRevision: '11' },
      }),
      config: { ...defaultDynamicConfig, maximum_lag_on_failover: 100 },
      pg: { runtime: primaryRuntime({ slots: ['node3'] }) },
    }),
    to: 'primary', actions: ['clearSwitchover', 'event'], reason: /switchover refused: node3 lags 990 bytes/,
  },
  {
    name: 'switchover to an unknown member: refused',
    snap: snapshot({
      state: 'primary',
      cluster: cluster({
        leader: leaderKey('node2', 'L2'),
        members: [primaryMember('node2')],
        switchover: { value: { v: 1, from: 'node2', to: 'node9', failover: false, requestedAtMs: NOW }, modRevision: '11' },
      }),
      pg: { runtime: primaryRuntime() },
    }),
    to: 'primary', actions: ['clearSwitchover', 'event'], reason: /node9 is not a member/,
  },
  {
    name: 'demoted while etcd is gone: read-only replica that never promotes on its own',
    snap: snapshot({ state: 'replica', cluster: null, pg: { runtime: replicaRuntime({ streaming: false, primaryConninfo: '' }) } }),
    to: 'replica', actions: [], reason: /waiting for it/,
  },
  {
    name: 'replica whose postmaster is gone, leader present: restart as replica',
    snap: snapshot({ state: 'replica', pg: stoppedPg }),
    to: 'replica', actions: ['startPostgres'], reason: /replica of leader node1/,
  },
  // a changed ttl: the keys move to a lease granted with it
  {
    name: 'ttl changed, leader in a steady state: move member and leader keys to a new lease',
    snap: leaderSteady({ config: ttl30 }),
    to: 'primary', actions: ['moveLease'], reason: /I am the leader with the lease.*ttl changed from 10 s to 30 s: moving my member and leader keys to a lease granted with 30 s/,
  },
  {
    name: 'ttl changed, replica following the leader: move the member key',
    snap: snapshot({ config: ttl30 }),
    to: 'replica', actions: ['moveLease'], reason: /following leader node1.*ttl changed from 10 s to 30 s: moving my member key/,
  },
  {
    name: 'ttl unchanged: no move',
    snap: leaderSteady(),
    to: 'primary', actions: [], reason: /^I am the leader with the lease; 0 replica\(s\) streaming/,
  },
  {
    name: 'ttl changed but a slot is missing: the slot first, the move on a later loop',
    snap: leaderSteady({ config: ttl30, pg: { runtime: primaryRuntime({ slots: [] }) } }),
    to: 'primary', actions: ['syncSlots'], reason: /I am the leader with the lease/,
  },
  {
    name: 'ttl changed and the lease was not renewed in time: stop, never move',
    snap: leaderSteady({ config: ttl30, lease: heldLease({ lastRenewalMs: NOW - 9000 }) }),
    to: 'stopped', actions: ['stopPostgres'], reason: /not renewed in time/,
  },
  {
    name: 'ttl changed, replica whose lease was not renewed in time: no move on an untrusted lease',
    snap: snapshot({ config: ttl30, lease: heldLease({ lastRenewalMs: NOW - 9000 }) }),
    to: 'replica', actions: [], reason: /^following leader node1, streaming, 0 bytes behind$/,
  },
  {
    name: 'ttl changed while I run a primary and another member leads: stop it first',
    snap: snapshot({ state: 'primary', config: ttl30, pg: { runtime: primaryRuntime() } }),
    to: 'stopped', actions: ['stopPostgres'], reason: /node1 holds the leader key/,
  },
  {
    name: 'the leader key is bound to the lease my keys were being moved to: settle the move',
    snap: leaderSteady({
      config: ttl30,
      lease: heldLease({ moving: { id: 'L3', ttlSeconds: 30, lastRenewalMs: NOW - 500 } }),
      cluster: cluster({ leader: leaderKey('node2', 'L3'), members: [primaryMember('node2'), member('node1')] }),
    }),
    to: 'primary', actions: ['moveLease'], reason: /bound to the lease my keys were being moved to: settling the move/,
  },
  {
    name: 'a move whose outcome is unknown, leader key still on the old lease: move again to settle it',
    snap: leaderSteady({ lease: heldLease({ moving: { id: 'L3', ttlSeconds: 10, lastRenewalMs: NOW - 500 } }) }),
    to: 'primary', actions: ['moveLease'], reason: /may not have completed: settling it/,
  },
  // the fencing guard: no primary without a live connection to it
  {
    name: 'no leader, healthiest replica, guard disconnected: wait for the guard, do not take the key',
    snap: snapshot({ cluster: noLeader(), guard: 'disconnected' }),
    to: 'replica', actions: [], reason: /^waiting for the fencing guard .*healthiest replica/,
  },
  {
    name: 'no leader, healthiest replica, guard connected: take the key and promote',
    snap: snapshot({ cluster: noLeader(), guard: 'connected' }),
    to: 'primary', actions: ['promote'], reason: /healthiest replica/,
  },
  {
    name: 'no leader, healthiest replica, no guard configured: take the key and promote',
    snap: snapshot({ cluster: noLeader(), guard: 'none' }),
    to: 'primary', actions: ['promote'], reason: /healthiest replica/,
  },
  {
    name: 'I hold the key and run a replica, guard disconnected: do not promote',
    snap: snapshot({ cluster: cluster({ leader: leaderKey('node2', 'L2') }), guard: 'disconnected' }),
    to: 'replica', actions: [], reason: /^waiting for the fencing guard .*promoting/,
  },
  {
    name: 'agent restarted on a running primary, guard not reached yet: do not rebind the leader key',
    snap: snapshot({ state: 'starting', cluster: cluster({ leader: leaderKey('node2', 'OLD') }), pg: { runtime: primaryRuntime() }, guard: 'disconnected' }),
    to: 'starting', actions: [], reason: /^waiting for the fencing guard .*rebinding/,
  },
  {
    name: 'I hold the key, PostgreSQL stopped cleanly, guard disconnected: do not start a primary',
    snap: snapshot({ state: 'stopped', cluster: cluster({ leader: leaderKey('node2', 'L2') }), pg: { ...stoppedPg, control: control({ clusterState: 'shut down' }) }, guard: 'disconnected' }),
    to: 'stopped', actions: [], reason: /^waiting for the fencing guard/,
  },
  {
    name: 'won initialize, guard disconnected: do not take the key to bootstrap',
    snap: snapshot({ state: 'starting', me: { name: 'node1', nofailover: false }, cluster: cluster({ initialize: { value: { v: 1, by: 'node1', systemId: null }, modRevision: '2' } }), pg: emptyPg, guard: 'disconnected' }),
    to: 'starting', actions: [], reason: /^waiting for the fencing guard/,
  },
  {
    name: 'guard disconnected does not hold back a replica: start following the leader',
    snap: snapshot({ state: 'replica', pg: stoppedPg, guard: 'disconnected' }),
    to: 'replica', actions: ['startPostgres'], reason: /replica of leader node1/,
  },
  {
    name: 'guard disconnected does not hold back a stop: another member leads, stop my primary',
    snap: snapshot({ state: 'primary', pg: { runtime: primaryRuntime() }, guard: 'disconnected' }),
    to: 'stopped', actions: ['stopPostgres'], reason: /node1 holds the leader key/,
  },
  {
    name: 'guard disconnected, I lead and run the primary: keep it (the in-process fence still watches the lease)',
    snap: leaderSteady({ guard: 'disconnected' }),
    to: 'primary', actions: [], reason: /^I am the leader with the lease/,
  },
];

describe('decide', () => {
  it.each(cases)('$name', ({ snap, to, actions, reason }) => {
    const decision = decide(snap);
    expect(decision.reason).toMatch(reason);
    expect(decision.to).toBe(to);
    expect(decision.actions.map((a) => a.kind)).toEqual(actions);
    expect(isAllowed(snap.state, decision.to)).toBe(true);
  });

  it('a leader stepping down for a switchover stops as a handover (it records where its shutdown checkpoint starts)', () => {
    const row = cases.find((c) => c.name === 'switchover to a streaming, caught-up replica: step down cleanly')!;
    expect(decide(row.snap).actions.find((a) => a.kind === 'stopPostgres')).toEqual({ kind: 'stopPostgres', mode: 'fast', handover: true });
    // and its key goes in the transaction that writes that status
    expect(decide(row.snap).actions.find((a) => a.kind === 'releaseLeader')).toEqual({ kind: 'releaseLeader', handover: true });
  });

  it('only the target of a leader that recorded its shutdown checkpoint waits to replay past it (then promotes without the WAL archive)', () => {
    const promotion = (name: string) => decide(cases.find((c) => c.name === name)!.snap).actions.find((a) => a.kind === 'promote');
    expect(promotion("no leader, I am the target of a leader that recorded its shutdown checkpoint: replay WAL past it, then take the key and promote")).toMatchObject({ handover: { afterLsn: 1500, timeoutMs: 10_000 } });
    expect(promotion('no leader, I am the switchover target: promote even if another is ahead')).not.toHaveProperty('handover');
    expect(promotion('no leader, a shutdown checkpoint recorded by a leader the switchover is not from: no wait for it')).not.toHaveProperty('handover');
  });

  it('a replica that finds the leader key free takes it in its promotion\'s first transaction; one that holds it already does not', () => {
    const promotion = (name: string) => decide(cases.find((c) => c.name === name)!.snap).actions.find((a) => a.kind === 'promote');
    expect(promotion('no leader, I am the most advanced healthy replica: take the key and promote')).toMatchObject({ acquire: true });
    expect(promotion("no leader, I am the target of a leader that recorded its shutdown checkpoint: replay WAL past it, then take the key and promote")).toMatchObject({ acquire: true, handover: { afterLsn: 1500 } });
    expect(promotion('I hold the key and run a replica: promote')).not.toHaveProperty('acquire');
  });

  it('a move to a changed ttl names the new ttl, and the leader key only for the leader', () => {
    expect(decide(leaderSteady({ config: ttl30 })).actions).toEqual([{ kind: 'moveLease', ttlSeconds: 30, leader: true }]);
    expect(decide(snapshot({ config: ttl30 })).actions).toEqual([{ kind: 'moveLease', ttlSeconds: 30, leader: false }]);
  });

  it('judges the lease by its own granted ttl, never by the config ttl', () => {
    // granted with 10 s, renewed 9 s ago: past its deadline even though the config now says 30 s
    const late = leaderSteady({ config: ttl30, lease: heldLease({ lastRenewalMs: NOW - 9000 }) });
    expect(decide(late).actions).toEqual([{ kind: 'stopPostgres', mode: 'immediate' }]);
    // granted with 30 s, renewed 9 s ago: well within its deadline even though the config says 10 s
    const fine = leaderSteady({ lease: heldLease({ ttlSeconds: 30, lastRenewalMs: NOW - 9000 }) });
    expect(decide(fine).reason).toMatch(/I am the leader with the lease.*ttl changed from 30 s to 10 s/);
  });

  it('covers every transition of the table', () => {
    const seen = new Set(cases.map((c) => `${c.snap.state}->${c.to}`));
    const missing = transitions.filter((t) => !seen.has(`${t.from}->${t.to}`)).map((t) => `${t.from}->${t.to}`);
    expect(missing).toEqual([]);
  });

  it('never lets a node whose key names another member keep a writable primary', () => {
    for (const state of ['starting', 'primary', 'replica', 'stopped'] as const) {
      const decision = decide(snapshot({ state, pg: { runtime: primaryRuntime() } }));
      expect(decision.actions[0]).toEqual({ kind: 'stopPostgres', mode: 'immediate' });
    }
  });
});

describe('a switchover prepared on the replicas', () => {
  const request = (to: string) => ({ value: { v: 1 as const, from: 'node1', to, failover: false, requestedAtMs: NOW - 100 }, modRevision: '6' });
  const view = (to: string, over: Parameters<typeof cluster>[0] = {}) =>
    cluster({ leader: leaderKey('node1'), members: [primaryMember('node1'), member('node2'), member('node3', { slots: ['node1', 'node2'] })], switchover: request(to), ...over });
  /** node2's runtime once it streams from node3 (port 5503) with the short retry */
  const viaNode3 = replicaRuntime({ upstreamPort: 5503, primaryConninfo: 'host=127.0.0.1 port=5503 user=replicator', walRetrieveRetryMs: 17 });

  /** node2's runtime once it streams from the leader node1 (port 5501) with the short retry */
  const shortOnNode1 = replicaRuntime({ walRetrieveRetryMs: 17 });

  it("the target first makes a slot for every other member, then retries its stream every few ms without the archive, before it is promoted", () => {
    const decision = decide(snapshot({ cluster: view('node2') }));
    expect(decision.reason).toMatch(/switchover from node1 to me is pending: making slots for node1, node3/);
    expect(decision.actions).toEqual([{ kind: 'syncSlots', names: ['node1', 'node3'] }]);
    const withSlots = decide(snapshot({ cluster: view('node2'), pg: { runtime: replicaRuntime({ slots: ['node1', 'node3'] }) } }));
    expect(withSlots.reason).toMatch(/switchover from node1 to me is pending: retrying my stream every few ms and without the WAL archive/);
    expect(withSlots.actions).toEqual([{ kind: 'follow', upstream: { name: 'node1', host: '127.0.0.1', port: 5501 }, shortRetry: true }]);
    expect(decide(snapshot({ cluster: view('node2'), pg: { runtime: { ...shortOnNode1, slots: ['node1', 'node3'] } } })).actions).toEqual([]);
  });

  it('in synchronous mode the target names, before it is promoted, the standbys its promotion will name', () => {
    const on = { ...defaultDynamicConfig, synchronous_mode: 'on' as const };
    const slotsHeld = replicaRuntime({ slots: ['node1', 'node3'], walRetrieveRetryMs: 17 });
    const decision = decide(snapshot({ config: on, cluster: view('node2'), pg: { runtime: slotsHeld } }));
    expect(decision.actions).toEqual([
      { kind: 'follow', upstream: { name: 'node1', host: '127.0.0.1', port: 5501 }, shortRetry: true, synchronousStandbyNames: 'ANY 1 ("node3")' },
    ]);
    // once in force, nothing more
    expect(decide(snapshot({ config: on, cluster: view('node2'), pg: { runtime: { ...slotsHeld, synchronousStandbyNames: 'ANY 1 ("node3")' } } })).actions).toEqual([]);
  });

  it('the target goes back to retrying once a second with the archive when the request goes stale', () => {
    const stale = view('node2', { switchover: { ...request('node2'), value: { ...request('node2').value, requestedAtMs: NOW - 31_000 } } });
    const decision = decide(snapshot({ cluster: stale, pg: { runtime: shortOnNode1 } }));
    expect(decision.reason).toMatch(/following leader node1: back to retrying it once a second/);
    expect(decision.actions).toEqual([{ kind: 'follow', upstream: { name: 'node1', host: '127.0.0.1', port: 5501 }, shortRetry: false }]);
  });

  it('another replica streams from the target at once, before the target shows its slot, retrying every few ms until the slot exists', () => {
    const noSlotYet = view('node3', { members: [primaryMember('node1'), member('node2'), member('node3')] });
    for (const seen of [noSlotYet, view('node3')]) {
      const decision = decide(snapshot({ cluster: seen }));
      expect(decision.reason).toMatch(/streaming from node3 already \(my stream retries every few ms until it holds my slot\)/);
      expect(decision.actions).toEqual([{ kind: 'follow', upstream: { name: 'node3', host: '127.0.0.1', port: 5503 }, shortRetry: true }]);
    }
    // and stays there, nothing more to do
    expect(decide(snapshot({ cluster: view('node3'), pg: { runtime: viaNode3 } })).actions).toEqual([]);
  });

  it('stays on the leader while the target does not stream, or the request is stale or a failover', () => {
    const notStreaming = view('node3', { members: [primaryMember('node1'), member('node2'), member('node3', { streaming: false })] });
    expect(decide(snapshot({ cluster: notStreaming })).actions).toEqual([]);
    const stale = view('node3', { switchover: { ...request('node3'), value: { ...request('node3').value, requestedAtMs: NOW - 31_000 } } });
    expect(decide(snapshot({ cluster: stale })).actions).toEqual([]);
    const failover = view('node3', { switchover: { ...request('node3'), value: { ...request('node3').value, failover: true } } });
    expect(decide(snapshot({ cluster: failover })).actions).toEqual([]);
  });

  it("stays on the leader when its synchronous commits in flight would need it: the target alone must meet the quorum", () => {
    const sync = (members: string[], quorum: number) => ({ value: { v: 1 as const, leader: 'node1', members, quorum }, modRevision: '8' });
    const on = { ...defaultDynamicConfig, synchronous_mode: 'on' as const };
    expect(decide(snapshot({ config: on, cluster: view('node3', { sync: sync(['node2', 'node3'], 2) }) })).actions).toEqual([]);
    expect(decide(snapshot({ config: on, cluster: view('node3', { sync: sync(['node2'], 1) }) })).actions).toEqual([]);
    expect(decide(snapshot({ config: on, cluster: view('node3', { sync: sync(['node2', 'node3'], 1) }) })).actions.map((a) => a.kind)).toEqual(['follow']);
  });

  it('the leader handing over waits for the standbys that may stream from the target, and only for them', () => {
    const sync = (members: string[], quorum: number) => ({ value: { v: 1 as const, leader: 'node1', members, quorum }, modRevision: '8' });
    const on = { ...defaultDynamicConfig, synchronous_mode: 'on' as const };
    const leading = (over: Parameters<typeof cluster>[0], config = on) =>
      decide(snapshot({ me: { name: 'node1', nofailover: false }, state: 'primary', config, cluster: view('node3', { leader: leaderKey('node1', 'L2'), ...over }), pg: { runtime: primaryRuntime({ slots: ['node2', 'node3'] }) } }));
    // waited for while the switchover is prepared, before routers hold
    const cascade = (d: ReturnType<typeof decide>) => d.actions.find((a) => a.kind === 'prepareHandover');
    const members = [primaryMember('node1'), member('node2'), member('node3'), member('node4', { streaming: false })];
    // node2 may leave: the target alone meets ANY 1; node4 does not stream at all
    const anyOne = leading({ members, sync: sync(['node2', 'node3'], 1) });
    expect(cascade(anyOne)).toEqual({ kind: 'prepareHandover', cascade: ['node2'] });
    expect(anyOne.actions.find((a) => a.kind === 'drainClients')).toEqual({ kind: 'drainClients', timeoutMs: 5000, prepared: true, cascade: [] });
    // ANY 2 of both: node2 stays on the leader, nothing to wait for
    expect(cascade(leading({ members, sync: sync(['node2', 'node3'], 2) }))).toMatchObject({ cascade: [] });
    // asynchronous: every streaming standby moves
    expect(cascade(leading({ members }, defaultDynamicConfig))).toMatchObject({ cascade: ['node2'] });
  });

  it('once the target leads, the replica that streams from it goes back to retrying once a second, without re-pointing, a few seconds after the promotion', () => {
    const promotedAt = (atMs: number) =>
      cluster({
        leader: leaderKey('node3'),
        members: [member('node1'), member('node2'), primaryMember('node3')],
        history: { value: { v: 1, entries: [{ timeline: 2, switchLsn: 1000, leader: 'node3', atMs, reason: 'switchover' }] }, modRevision: '9' },
      });
    // in the pause (the new leader's first commits wait for this standby) its conf stays as it is
    const settling = decide(snapshot({ cluster: promotedAt(NOW - 300), pg: { runtime: viaNode3 } }));
    expect(settling.actions).toEqual([]);
    expect(settling.reason).toMatch(/^following leader node3, streaming/);
    for (const atMs of [NOW - promotionSettleMs, NOW - 60_000]) {
      const decision = decide(snapshot({ cluster: promotedAt(atMs), pg: { runtime: viaNode3 } }));
      expect(decision.reason).toMatch(/following leader node3: back to retrying it once a second/);
      expect(decision.actions).toEqual([{ kind: 'follow', upstream: { name: 'node3', host: '127.0.0.1', port: 5503 }, shortRetry: false }]);
    }
    // with no history entry of its promotion (or another's), at once
    const noEntry = cluster({ leader: leaderKey('node3'), members: [member('node1'), member('node2'), primaryMember('node3')] });
    expect(decide(snapshot({ cluster: noEntry, pg: { runtime: viaNode3 } })).actions).toEqual([{ kind: 'follow', upstream: { name: 'node3', host: '127.0.0.1', port: 5503 }, shortRetry: false }]);
    // a standby that still has to re-point does so at once, with the usual interval
    const elsewhere = decide(snapshot({ cluster: promotedAt(NOW - 300), pg: { runtime: shortOnNode1 } }));
    expect(elsewhere.actions).toEqual([{ kind: 'follow', upstream: { name: 'node3', host: '127.0.0.1', port: 5503 }, shortRetry: false }]);
  });

  it("a replica drops the slots it does not need (a demoted primary's, a target's after the switchover)", () => {
    const decision = decide(snapshot({ pg: { runtime: replicaRuntime({ slots: ['node3'] }) } }));
    expect(decision.reason).toMatch(/dropping replication slots a replica does not need \(node3/);
    expect(decision.actions).toEqual([{ kind: 'syncSlots', names: [] }]);
  });
});

describe('conninfoTarget', () => {
  it('reads host and port, quoted or not', () => {
    expect(conninfoTarget("host=10.0.0.1 port=5433 passfile='/x y/p'")).toEqual({ host: '10.0.0.1', port: 5433 });
    expect(conninfoTarget("user=r host='127.0.0.1' port='6510'")).toEqual({ host: '127.0.0.1', port: 6510 });
    expect(conninfoTarget('')).toBeNull();
  });
});
