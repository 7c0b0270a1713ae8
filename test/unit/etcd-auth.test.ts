/** etcd's users and roles for a cluster (src/dcs/etcd-auth-plan.ts) and the etcd credentials a client is given. */
import { describe, expect, it } from 'vitest';
import { routerSettings } from '../../src/cli/router.js';
import { etcdCredentialsFromFlags } from '../../src/cli/target.js';
import { describeStep, etcdAuthPlan, etcdAuthSteps, type EtcdAuthState, type KeyPermission } from '../../src/dcs/etcd-auth-plan.js';
import { etcdCredentialsProblem } from '../../src/dcs/etcd-client.js';
import { etcdArgs } from '../../src/dcs/etcd-server.js';
import { etcdUsers } from '../../src/providers/local-layout.js';

const users = etcdUsers('main');
const plan = etcdAuthPlan('main', users);
const prefix = (permission: KeyPermission['permission']): KeyPermission => ({ permission, key: '/keel/main/', end: '/keel/main0' });
const routerKeys: KeyPermission = { permission: 'Readwrite', key: '/keel/main/routers/', end: '/keel/main/routers0' };

/** What etcd holds once the plan is carried out, auth on. */
function done(): EtcdAuthState {
  return { roles: new Map(plan.roles), users: new Map(plan.users), enabled: true };
}

describe('etcdAuthPlan', () => {
  it("gives each component a role of its own name on the cluster's prefix: the router reads (and writes only routers/), the others read and write", () => {
    expect(Object.fromEntries(plan.roles)).toEqual({
      root: [],
      'main-agent': [prefix('Readwrite')],
      'main-router': [prefix('Read'), routerKeys],
      'main-controller': [prefix('Readwrite')],
      'main-operator': [prefix('Readwrite')],
    });
    expect(Object.fromEntries(plan.users)).toEqual({
      root: ['root'],
      'main-agent': ['main-agent'],
      'main-router': ['main-router'],
      'main-controller': ['main-controller'],
      'main-operator': ['main-operator'],
    });
  });

  it('reaches no other cluster: the range ends before /keel/mainx/ and /keel/main2/ begin', () => {
    const range = plan.roles.get('main-agent')![0]!;
    for (const key of ['/keel/main/leader', '/keel/main/members/node1']) expect(key >= range.key && key < range.end).toBe(true);
    for (const key of ['/keel/mainx/leader', '/keel/main2/leader', '/keel/other/leader', '/keel/main']) expect(key >= range.key && key < range.end).toBe(false);
  });

  it('refuses a component named root', () => {
    expect(() => etcdAuthPlan('main', { ...users, operator: 'root' })).toThrow(/cannot be root/);
  });
});

describe('etcdAuthSteps', () => {
  const fresh: EtcdAuthState = { roles: new Map(), users: new Map(), enabled: false };
  const cases: { name: string; state: () => EtcdAuthState; steps: string[] }[] = [
    {
      name: 'a fresh etcd: roles, then users, root with its password, auth last',
      state: () => fresh,
      steps: [
        'add role root',
        'add role main-agent',
        'grant Readwrite on [/keel/main/, /keel/main0) to role main-agent',
        'add role main-router',
        'grant Read on [/keel/main/, /keel/main0) to role main-router',
        'grant Readwrite on [/keel/main/routers/, /keel/main/routers0) to role main-router',
        'add role main-controller',
        'grant Readwrite on [/keel/main/, /keel/main0) to role main-controller',
        'add role main-operator',
        'grant Readwrite on [/keel/main/, /keel/main0) to role main-operator',
        'add user root with the root password',
        'grant role root to user root',
        'add user main-agent (certificate only, no password)',
        'grant role main-agent to user main-agent',
        'add user main-router (certificate only, no password)',
        'grant role main-router to user main-router',
        'add user main-controller (certificate only, no password)',
        'grant role main-controller to user main-controller',
        'add user main-operator (certificate only, no password)',
        'grant role main-operator to user main-operator',
        'enable auth',
      ],
    },
    { name: 'all in place, auth on: nothing to do', state: done, steps: [] },
    {
      name: 'all in place but auth off (a set-up cut short): root gets the password we hold, then auth goes on',
      state: () => ({ ...done(), enabled: false }),
      steps: ['set the password of root before auth goes on', 'enable auth'],
    },
    {
      name: 'a router role from before routers/ existed: it gets write on its own keys only',
      state: () => {
        const s = done();
        s.roles.set('main-router', [prefix('Read')]);
        return s;
      },
      steps: ['grant Readwrite on [/keel/main/routers/, /keel/main/routers0) to role main-router'],
    },
    {
      name: 'a router role that was given write: the write is taken back',
      state: () => {
        const s = done();
        s.roles.set('main-router', [prefix('Readwrite'), routerKeys]);
        return s;
      },
      steps: ['revoke Readwrite on [/keel/main/, /keel/main0) from role main-router', 'grant Read on [/keel/main/, /keel/main0) to role main-router'],
    },
    {
      name: "an agent role that also reached another cluster's keys: that range goes",
      state: () => {
        const s = done();
        s.roles.set('main-agent', [prefix('Readwrite'), { permission: 'Readwrite', key: '/keel/other/', end: '/keel/other0' }]);
        return s;
      },
      steps: ['revoke Readwrite on [/keel/other/, /keel/other0) from role main-agent'],
    },
    {
      name: 'a user that lost its role gets it back; roles and users of other clusters are left alone',
      state: () => {
        const s = done();
        s.users.set('main-controller', []);
        s.users.set('other-agent', ['other-agent']);
        s.roles.set('other-agent', [{ permission: 'Readwrite', key: '/keel/other/', end: '/keel/other0' }]);
        return s;
      },
      steps: ['grant role main-controller to user main-controller'],
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      expect(etcdAuthSteps(plan, c.state()).map(describeStep)).toEqual(c.steps);
    });
  }

  it('a second cluster on the same etcd adds only its own roles and users', () => {
    const second = etcdAuthSteps(etcdAuthPlan('beta', etcdUsers('beta')), done()).map(describeStep);
    expect(second.filter((s) => s.includes('main') || s.includes('root') || s === 'enable auth')).toEqual([]);
    expect(second).toContain('grant Read on [/keel/beta/, /keel/beta0) to role beta-router');
  });
});

describe('etcd credentials', () => {
  const tls = { ca: '/t/ca.crt', cert: '/t/c.crt', key: '/t/c.key' };
  const problems: [string, string[], Parameters<typeof etcdCredentialsProblem>[1], RegExp | null][] = [
    ['plain etcd, nothing given', ['http://10.0.0.1:2379'], {}, null],
    ['https with a client pair', ['https://10.0.0.1:2379', 'https://10.0.0.2:2379'], { tls }, null],
    ['https, a pair and a password', ['https://10.0.0.1:2379'], { tls, user: 'u', password: 'p'.repeat(8) }, null],
    ['a pair for a plain endpoint', ['https://10.0.0.1:2379', 'http://10.0.0.2:2379'], { tls }, /http:\/\/10.0.0.2:2379 is plain/],
    ['a password over plain http', ['http://10.0.0.1:2379'], { user: 'u', password: 'p'.repeat(8) }, /in the clear/],
    ['a user without a password', ['https://10.0.0.1:2379'], { user: 'u' }, /go together/],
  ];
  for (const [name, endpoints, credentials, problem] of problems) {
    it(name, () => {
      const found = etcdCredentialsProblem(endpoints, credentials);
      if (problem === null) expect(found).toBeNull();
      else expect(found).toMatch(problem);
    });
  }

  it('reads the pair from flags and the user and password from the environment only', () => {
    expect(etcdCredentialsFromFlags({}, {})).toEqual({});
    expect(etcdCredentialsFromFlags({ etcdCacert: '/t/ca.crt', etcdCert: '/t/c.crt', etcdKey: '/t/c.key' }, { KEEL_ETCD_USER: 'u', KEEL_ETCD_PASSWORD: 'secret-pw' })).toEqual({
      tls,
      user: 'u',
      password: 'secret-pw',
    });
    expect(() => etcdCredentialsFromFlags({ etcdCacert: '/t/ca.crt' }, {})).toThrow(/go together/);
    expect(() => etcdCredentialsFromFlags({}, { KEEL_ETCD_USER: 'u' })).toThrow(/KEEL_ETCD_USER and KEEL_ETCD_PASSWORD go together/);
  });

  it('gives the router its certificate from --etcd-cacert/--etcd-cert/--etcd-key', () => {
    const flags = {
      etcd: 'https://127.0.0.1:2379',
      cluster: 'main',
      rw: '127.0.0.1:6402',
      ro: '127.0.0.1:6403',
      engine: 'builtin' as const,
      roMaxLag: '16MB',
      roFallback: true,
      waitTimeout: '30',
      connectTimeout: '3',
      firstBytesTimeout: '10',
      maxConnections: '1000',
      haproxy: '/usr/sbin/haproxy',
    };
    expect(routerSettings({ ...flags, etcdCacert: tls.ca, etcdCert: tls.cert, etcdKey: tls.key }, {}).credentials).toEqual({ tls });
    expect(routerSettings(flags, {}).credentials).toEqual({});
  });
});

describe('etcdArgs', () => {
  const base = { name: 'etcd1', dataDir: '/d', clientPort: 2379, peerPort: 2380, logFile: '/l' };
  it('plain http without TLS files', () => {
    const args = etcdArgs(base);
    expect(args).toContain('--listen-client-urls=http://127.0.0.1:2379');
    expect(args.some((a) => a.includes('cert'))).toBe(false);
  });
  it('https for clients and peers, each side showing a certificate of the CA', () => {
    const tls = { ca: '/t/ca.crt', server: { cert: '/t/etcd.crt', key: '/t/etcd.key' }, client: { ca: '/t/ca.crt', cert: '/t/op.crt', key: '/t/op.key' } };
    const args = etcdArgs({ ...base, tls });
    expect(args).toEqual(
      expect.arrayContaining([
        '--listen-client-urls=https://127.0.0.1:2379',
        '--advertise-client-urls=https://127.0.0.1:2379',
        '--initial-advertise-peer-urls=https://127.0.0.1:2380',
        '--initial-cluster=etcd1=https://127.0.0.1:2380',
        '--client-cert-auth',
        '--trusted-ca-file=/t/ca.crt',
        '--cert-file=/t/etcd.crt',
        '--key-file=/t/etcd.key',
        '--peer-client-cert-auth',
        '--peer-trusted-ca-file=/t/ca.crt',
        '--peer-cert-file=/t/etcd.crt',
        '--peer-key-file=/t/etcd.key',
      ]),
    );
  });
});
