/**
 * Turns the raw key-values of one read of the prefix into a ClusterView.
 * Shared by EtcdDcs and MemoryDcs so both treat bad values the same way. Pure.
 */
import type { DynamicConfig } from '../config/schema.js';
import {
  decodeConfig,
  decodeCreation,
  decodeDraining,
  decodeHistory,
  decodeInitialize,
  decodeLeader,
  decodeMember,
  decodeRouter,
  decodeStatus,
  decodeSwitchover,
  decodeSync,
  ignoredConfigParameters,
  keys,
  type Decoded,
} from './codec.js';
import type { ClusterView, Versioned } from '../model/values.js';

export interface RawKv {
  key: string;
  value: string;
  modRevision: string;
  /** '0' when the key has no lease */
  lease: string;
}

/** Called for each value that cannot be used (the view treats it as absent), or, with `part`, that is used without some of it. */
export type InvalidValueSink = (key: string, modRevision: string, reason: string, part?: 'part') => void;

export function buildClusterView(cluster: string, revision: string, kvs: RawKv[], onInvalid: InvalidValueSink): ClusterView {
  const k = keys(cluster);
  const view: ClusterView = {
    revision,
    initialize: null,
    config: null,
    leader: null,
    members: [],
    status: null,
    sync: null,
    switchover: null,
    history: null,
    draining: [],
    creations: [],
    routers: [],
  };

  function versioned<T>(kv: RawKv, decoded: Decoded<T>): Versioned<T> | null {
    if (decoded.ok) return { value: decoded.value, modRevision: kv.modRevision };
    onInvalid(kv.key, kv.modRevision, decoded.reason);
    return null;
  }

  /** A value filed under `<prefix><name>`: one naming another would speak for it. */
  function named<T extends { name: string }>(kv: RawKv, prefix: string, decoded: Decoded<T>, what: string): T | null {
    const value = versioned(kv, decoded)?.value ?? null;
    if (value === null || value.name === kv.key.slice(prefix.length)) return value;
    onInvalid(kv.key, kv.modRevision, `names ${what} "${value.name}" under another name`);
    return null;
  }

  for (const kv of kvs) {
    switch (kv.key) {
      case k.initialize:
        view.initialize = versioned(kv, decodeInitialize(kv.value));
        continue;
      case k.config: {
        view.config = versioned<DynamicConfig>(kv, decodeConfig(kv.value));
        const ignored = view.config === null ? [] : ignoredConfigParameters(kv.value);
        if (ignored.length > 0) onInvalid(kv.key, kv.modRevision, `postgresql_parameters left out, never applied: ${ignored.join('; ')}`, 'part');
        continue;
      }
      case k.leader: {
        const leader = versioned(kv, decodeLeader(kv.value));
        view.leader = leader ? { ...leader, leaseId: kv.lease } : null;
        continue;
      }
      case k.status:
        view.status = versioned(kv, decodeStatus(kv.value));
        continue;
      case k.sync:
        view.sync = versioned(kv, decodeSync(kv.value));
        continue;
      case k.switchover:
        view.switchover = versioned(kv, decodeSwitchover(kv.value));
        continue;
      case k.history:
        view.history = versioned(kv, decodeHistory(kv.value));
        continue;
      case k.spec:
      case k.controller:
      case k.backup:
        // the controller's and the backups' keys: read elsewhere, not part of the agents' view
        continue;
    }
    if (kv.key.startsWith(k.eventsPrefix)) continue;
    if (kv.key.startsWith(k.drainingPrefix)) {
      const draining = named(kv, k.drainingPrefix, decodeDraining(kv.value), 'member');
      if (draining !== null) view.draining.push(draining);
      continue;
    }
    if (kv.key.startsWith(k.creationsPrefix)) {
      const creation = named(kv, k.creationsPrefix, decodeCreation(kv.value), 'node');
      if (creation !== null) view.creations.push(creation);
      continue;
    }
    if (kv.key.startsWith(k.routersPrefix)) {
      const router = versioned(kv, decodeRouter(kv.value))?.value ?? null;
      if (router !== null && router.id === kv.key.slice(k.routersPrefix.length)) view.routers.push(router);
      else if (router !== null) onInvalid(kv.key, kv.modRevision, `names router "${router.id}" under another id`);
      continue;
    }
    if (kv.key.startsWith(k.membersPrefix)) {
      // agents write their member key with their lease; one without could outlive its agent and
      // keep a replication slot (and the leader's WAL) for a node that is gone
      if (kv.lease === '0') {
        onInvalid(kv.key, kv.modRevision, 'a member key bound to no lease (agents bind theirs to their lease)');
        continue;
      }
      const member = versioned(kv, decodeMember(kv.value));
      if (!member) continue;
      const keyName = kv.key.slice(k.membersPrefix.length);
      // a value filed under another member's key would let one agent speak for another
      if (member.value.name !== keyName) {
        onInvalid(kv.key, kv.modRevision, `names member "${member.value.name}" under the key of "${keyName}"`);
        continue;
      }
      view.members.push(member.value);
      continue;
    }
    onInvalid(kv.key, kv.modRevision, 'unknown key');
  }
  view.members.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  view.draining.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  view.creations.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  view.routers.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  return view;
}

/**
 * Remembers which (key, modRevision) pairs were already reported, so a bad
 * value read every loop is logged once, not once a second.
 */
export class InvalidValueReporter {
  private readonly seen = new Set<string>();

  constructor(private readonly warn: (fields: Record<string, unknown>, message: string) => void) {}

  readonly report: InvalidValueSink = (key, modRevision, reason, part) => {
    const id = `${key}@${modRevision}`;
    if (this.seen.has(id)) return;
    // bounded: a flood of bad keys must not grow memory without end
    if (this.seen.size >= 10_000) this.seen.clear();
    this.seen.add(id);
    this.warn({ key, modRevision, reason }, part ? 'ignoring part of a value in etcd (the rest applies)' : 'ignoring an invalid value in etcd (treated as absent)');
  };
}
