/**
 * What an etcd member on AWS runs with, decided without I/O: whether it
 * starts a new cluster or joins the one that runs, and etcd's settings
 * (/etc/default/etcd, ETCD_* variables). aws-etcd-boot.ts observes and acts.
 *
 * A member whose data directory is empty joins a cluster that runs (a quorum
 * answers) with `existing`. If the cluster still lists it as started, the
 * member was replaced (a new instance on the same network interface, an empty
 * disk): etcd refuses a started member back without its data, so its old
 * entry is removed and a new one added first. If no quorum answers, the
 * members are booting together and it starts the cluster with them (`new`).
 */
import { KeelError } from '../errors.js';
import { ports } from './aws-plan.js';

/**
 * A member as etcd's member list gives it. A member that never started has no client URL yet (one of a new
 * cluster has its name from the initial cluster; one added by `member add` has none): etcd itself tells a
 * bootstrapped member by its client URLs.
 */
export interface EtcdClusterMember {
  id: string;
  name: string;
  peerUrls: string[];
  clientUrls: string[];
}

export interface EtcdJoinObservation {
  self: { name: string; peerUrl: string };
  /** etcd's data directory holds a member already */
  hasData: boolean;
  /** the member list of a cluster whose quorum answers; null when no other member with a quorum answered */
  running: EtcdClusterMember[] | null;
}

export type EtcdJoin =
  | { state: 'new'; removeId: null; add: false; reason: string }
  | { state: 'existing'; removeId: string | null; add: boolean; reason: string };

export const isStarted = (m: EtcdClusterMember): boolean => m.clientUrls.length > 0;

export function decideEtcdJoin(o: EtcdJoinObservation): EtcdJoin {
  if (o.hasData) return { state: 'existing', removeId: null, add: false, reason: 'restarts on its data directory (etcd reads no initial cluster then)' };
  if (o.running === null) return { state: 'new', removeId: null, add: false, reason: 'no other member with a quorum answers: it starts the cluster with them' };
  const entry = o.running.find((m) => m.peerUrls.includes(o.self.peerUrl)) ?? o.running.find((m) => m.name === o.self.name);
  if (entry === undefined) return { state: 'existing', removeId: null, add: true, reason: 'the running cluster does not list it: it is added, then joins' };
  if (isStarted(entry)) {
    return {
      state: 'existing',
      removeId: entry.id,
      add: true,
      reason: `a replaced member: the running cluster lists it as started (id ${entry.id}) and its data directory is empty, so that entry is removed and a new one added`,
    };
  }
  return { state: 'existing', removeId: null, add: false, reason: `the running cluster waits for it (id ${entry.id}, never started): it joins` };
}

export const peerUrlOf = (address: string): string => `https://${address}:${ports.etcdPeer}`;
export const clientUrlOf = (address: string): string => `https://${address}:${ports.etcdClient}`;

/** etcd's --initial-cluster: the planned members for a new cluster, the running list (names filled in) to join one. */
export function initialCluster(self: string, members: { name: string; address: string }[], running: EtcdClusterMember[] | null): string {
  if (running === null) return members.map((m) => `${m.name}=${peerUrlOf(m.address)}`).join(',');
  const selfUrl = peerUrlOf(members.find((m) => m.name === self)!.address);
  return running
    .map((m) => {
      const url = m.peerUrls[0];
      if (url === undefined) throw new KeelError('KEEL_ETCD_UNREACHABLE', `etcd lists member ${m.id} without a peer URL`);
      // an unstarted member has no name yet: the plan's name for its address, as it will start with
      const planned = members.find((p) => peerUrlOf(p.address) === url)?.name;
      const name = m.peerUrls.includes(selfUrl) ? self : m.name || planned || `member-${m.id}`;
      return `${name}=${url}`;
    })
    .join(',');
}

export interface EtcdSettingsInput {
  name: string;
  cluster: string;
  address: string;
  dataDir: string;
  tls: { ca: string; cert: string; key: string };
  initialCluster: string;
  state: 'new' | 'existing';
}

/**
 * The ETCD_* variables of a member: https for clients (its address and 127.0.0.1 for local clients) and peers,
 * both requiring a certificate of the cluster CA; a cluster token of its own, so members of another cluster
 * that reach these addresses are refused. One variable a line, no quoting: values are addresses and paths.
 */
export function etcdSettings(s: EtcdSettingsInput): Record<string, string> {
  return {
    ETCD_NAME: s.name,
    ETCD_DATA_DIR: s.dataDir,
    ETCD_LISTEN_CLIENT_URLS: `${clientUrlOf(s.address)},${clientUrlOf('127.0.0.1')}`,
    ETCD_ADVERTISE_CLIENT_URLS: clientUrlOf(s.address),
    ETCD_LISTEN_PEER_URLS: peerUrlOf(s.address),
    ETCD_INITIAL_ADVERTISE_PEER_URLS: peerUrlOf(s.address),
    ETCD_INITIAL_CLUSTER: s.initialCluster,
    ETCD_INITIAL_CLUSTER_STATE: s.state,
    ETCD_INITIAL_CLUSTER_TOKEN: `keel-${s.cluster}`,
    ETCD_CLIENT_CERT_AUTH: 'true',
    ETCD_TRUSTED_CA_FILE: s.tls.ca,
    ETCD_CERT_FILE: s.tls.cert,
    ETCD_KEY_FILE: s.tls.key,
    ETCD_PEER_CLIENT_CERT_AUTH: 'true',
    ETCD_PEER_TRUSTED_CA_FILE: s.tls.ca,
    ETCD_PEER_CERT_FILE: s.tls.cert,
    ETCD_PEER_KEY_FILE: s.tls.key,
    // zones of one region are a millisecond or two apart: a lost leader is replaced in about a second,
    // well inside Keel's 10 s lease ttl
    ETCD_HEARTBEAT_INTERVAL: '100',
    ETCD_ELECTION_TIMEOUT: '1000',
    // Keel's keys are small and rewritten every loop: old revisions are garbage
    ETCD_AUTO_COMPACTION_MODE: 'periodic',
    ETCD_AUTO_COMPACTION_RETENTION: '1h',
    ETCD_QUOTA_BACKEND_BYTES: String(1024 * 1024 * 1024),
    ETCD_LOGGER: 'zap',
    ETCD_LOG_OUTPUTS: 'stderr',
  };
}

/** /etc/default/etcd's text; refuses a value that would not stay one plain word of the file. */
export function etcdEnvironmentFile(settings: Record<string, string>, header: string): string {
  const lines = Object.entries(settings).map(([name, value]) => {
    if (!/^[A-Za-z0-9_.,:/=@+-]+$/.test(value)) throw new KeelError('KEEL_CONFIG_INVALID', `${name} would hold characters etcd's settings file cannot (${JSON.stringify(value)})`);
    return `${name}=${value}`;
  });
  return `${header.split('\n').map((l) => `# ${l}`).join('\n')}\n${lines.join('\n')}\n`;
}
