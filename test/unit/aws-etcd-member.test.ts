/**
 * An etcd member's start on AWS, decided without I/O (src/providers/aws-etcd-member.ts): a new cluster or
 * the one that runs, a replaced member removed and added again, the initial cluster it names, and etcd's
 * settings (TLS with client certificates for clients and peers, a token of the cluster's own).
 */
import { describe, expect, it } from 'vitest';
import { KeelError } from '../../src/errors.js';
import { decideEtcdJoin, etcdEnvironmentFile, etcdSettings, initialCluster, type EtcdClusterMember, type EtcdJoinObservation } from '../../src/providers/aws-etcd-member.js';

const members = [
  { name: 'etcd1', address: '10.0.1.10' },
  { name: 'etcd2', address: '10.0.2.10' },
  { name: 'etcd3', address: '10.0.3.10' },
];
const self = { name: 'etcd2', peerUrl: 'https://10.0.2.10:2380' };
const started = (id: string, name: string, address: string): EtcdClusterMember => ({ id, name, peerUrls: [`https://${address}:2380`], clientUrls: [`https://${address}:2379`] });
const others = [started('11', 'etcd1', '10.0.1.10'), started('33', 'etcd3', '10.0.3.10')];

describe('decideEtcdJoin', () => {
  const rows: [string, EtcdJoinObservation, { state: 'new' | 'existing'; removeId: string | null; add: boolean; reason: RegExp }][] = [
    ['a member with data restarts on it', { self, hasData: true, running: [...others, started('22', 'etcd2', '10.0.2.10')] }, { state: 'existing', removeId: null, add: false, reason: /data directory/ }],
    ['no quorum answers: the members boot together', { self, hasData: false, running: null }, { state: 'new', removeId: null, add: false, reason: /starts the cluster/ }],
    [
      'a new cluster that runs without it yet (named by the initial cluster, no client URL)',
      { self, hasData: false, running: [...others, { id: '22', name: 'etcd2', peerUrls: [self.peerUrl], clientUrls: [] }] },
      { state: 'existing', removeId: null, add: false, reason: /never started/ },
    ],
    [
      'an entry added for it before (no name, no client URL)',
      { self, hasData: false, running: [...others, { id: '99', name: '', peerUrls: [self.peerUrl], clientUrls: [] }] },
      { state: 'existing', removeId: null, add: false, reason: /never started/ },
    ],
    [
      'a replaced member: listed as started, its data gone',
      { self, hasData: false, running: [...others, started('22', 'etcd2', '10.0.2.10')] },
      { state: 'existing', removeId: '22', add: true, reason: /replaced member/ },
    ],
    [
      'its name at another address: that entry goes',
      { self, hasData: false, running: [...others, started('22', 'etcd2', '10.0.2.99')] },
      { state: 'existing', removeId: '22', add: true, reason: /replaced member/ },
    ],
    ['removed before its add (a boot cut short): added', { self, hasData: false, running: others }, { state: 'existing', removeId: null, add: true, reason: /added/ }],
  ];
  it.each(rows)('%s', (_name, observation, expected) => {
    const decision = decideEtcdJoin(observation);
    expect({ state: decision.state, removeId: decision.removeId, add: decision.add }).toEqual({ state: expected.state, removeId: expected.removeId, add: expected.add });
    expect(decision.reason).toMatch(expected.reason);
  });
});

describe('initialCluster', () => {
  it('names the planned members for a new cluster', () => {
    expect(initialCluster('etcd2', members, null)).toBe('etcd1=https://10.0.1.10:2380,etcd2=https://10.0.2.10:2380,etcd3=https://10.0.3.10:2380');
  });
  it("takes the running list to join, with the plan's names for members that have none yet", () => {
    const running = [others[0]!, { id: '99', name: '', peerUrls: [self.peerUrl], clientUrls: [] }, { id: '33', name: '', peerUrls: ['https://10.0.3.10:2380'], clientUrls: [] }];
    expect(initialCluster('etcd2', members, running)).toBe('etcd1=https://10.0.1.10:2380,etcd2=https://10.0.2.10:2380,etcd3=https://10.0.3.10:2380');
  });
  it('refuses a member without a peer URL', () => {
    expect(() => initialCluster('etcd2', members, [{ id: '1', name: 'x', peerUrls: [], clientUrls: [] }])).toThrow(KeelError);
  });
});

describe('etcdSettings', () => {
  const settings = etcdSettings({
    name: 'etcd2',
    cluster: 'main',
    address: '10.0.2.10',
    dataDir: '/var/lib/etcd/keel',
    tls: { ca: '/etc/keel/etcd/ca.crt', cert: '/etc/keel/etcd/server.crt', key: '/etc/keel/etcd/server.key' },
    initialCluster: initialCluster('etcd2', members, null),
    state: 'new',
  });
  it('serves https on its address and 127.0.0.1, and requires client certificates of the CA from clients and peers', () => {
    expect(settings.ETCD_LISTEN_CLIENT_URLS).toBe('https://10.0.2.10:2379,https://127.0.0.1:2379');
    expect(settings.ETCD_ADVERTISE_CLIENT_URLS).toBe('https://10.0.2.10:2379');
    expect(settings.ETCD_LISTEN_PEER_URLS).toBe('https://10.0.2.10:2380');
    expect(settings.ETCD_CLIENT_CERT_AUTH).toBe('true');
    expect(settings.ETCD_PEER_CLIENT_CERT_AUTH).toBe('true');
    expect(settings.ETCD_TRUSTED_CA_FILE).toBe('/etc/keel/etcd/ca.crt');
    expect(settings.ETCD_PEER_TRUSTED_CA_FILE).toBe('/etc/keel/etcd/ca.crt');
  });
  it("has a cluster token of the cluster's own and the initial cluster state given", () => {
    expect(settings.ETCD_INITIAL_CLUSTER_TOKEN).toBe('keel-main');
    expect(settings.ETCD_INITIAL_CLUSTER_STATE).toBe('new');
  });
  it('is written one plain variable a line, and refuses a value that would not stay one', () => {
    const text = etcdEnvironmentFile(settings, 'etcd member etcd2\nwhy');
    expect(text.startsWith('# etcd member etcd2\n# why\n')).toBe(true);
    expect(text).toContain('\nETCD_NAME=etcd2\n');
    expect(() => etcdEnvironmentFile({ ...settings, ETCD_DATA_DIR: '/var/lib/etcd x' }, 'h')).toThrow(/ETCD_DATA_DIR/);
    expect(() => etcdEnvironmentFile({ ...settings, ETCD_NAME: 'a\nETCD_X=1' }, 'h')).toThrow(KeelError);
  });
});
