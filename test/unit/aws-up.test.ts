/**
 * `keel aws up` against a test account (aws-account.ts) in place of AWS: it
 * creates what the plan marks `up`, in the plan's order; a second run creates
 * nothing; a run stopped half-way by a refused call is finished by the next;
 * secrets are made once, never overwritten and never printed.
 */
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { KeelError } from '../../src/errors.js';
import { awsUp, upResources } from '../../src/providers/aws-up.js';
import { fakeCredentials, operatorOptions, upInput, withAccount } from './aws-up-fixtures.js';

beforeAll(() => {
  Object.assign(process.env, fakeCredentials);
});
const { account, start, reset } = withAccount();
beforeEach(start);
afterEach(reset);

const mutating = /:(Create|Put|Authorize|Attach|Add|Run|Modify|Delete|Terminate)/;
const planned = (input = upInput()) => upResources(input.deployment).map((r) => ({ kind: r.kind, name: r.name }));
const creations = () => account().creations.filter((c) => c.kind !== 'attachment');

async function up(input = upInput()): Promise<string[]> {
  const lines: string[] = [];
  await awsUp(input, operatorOptions(lines));
  return lines;
}

async function refusedUp(input = upInput()): Promise<KeelError> {
  try {
    await up(input);
  } catch (err) {
    expect(err).toBeInstanceOf(KeelError);
    return err as KeelError;
  }
  throw new Error('up went through');
}

const param = (name: string) => account().parameters.get(`/keel/main/${name}`)!.value;

describe('keel aws up', () => {
  it('creates every resource the plan marks up, in the plan\'s order, and nothing the controller makes', async () => {
    const lines = await up();
    expect(creations()).toEqual(planned());
    const a = account();
    // the controller's policy on the etcd role, each role in its profile
    expect([...a.roles.get('keel-main-etcd')!.attached]).toEqual(['arn:aws:iam::123456789012:policy/keel-main-controller']);
    expect([...a.profiles].map(([name, p]) => [name, p.roles])).toEqual([['keel-main-node', ['keel-main-node']], ['keel-main-etcd', ['keel-main-etcd']]]);
    expect([...a.instances.values()].map((i) => i.tags.Name)).toEqual(['main-etcd1', 'main-etcd2', 'main-etcd3']);
    expect(a.parameters.has('/keel/main/nodes/node1/tls/node.crt')).toBe(false);
    expect(lines.at(-1)).toContain('never prints a secret');
    expect(lines.join('\n')).toContain('rw: postgresql://app@keel-main-0123456789abcdef.elb.eu-west-1.amazonaws.com:5432/app?sslmode=verify-full');
  });

  it('launches each etcd member on its fixed address, keel:etcd-tagged, IMDSv2 only, encrypted gp3 root, once EC2 sees its profile', async () => {
    await up();
    const a = account();
    const runs = a.calls.filter((c) => c.action === 'ec2:RunInstances');
    // the new profile is refused twice (IAM is eventually consistent), then each member launches once
    expect(runs).toHaveLength(3 + a.profileDelayTries);
    for (const [id, i] of a.instances) {
      const member = i.tags['keel:member']!;
      expect(i.tags).toEqual({ 'keel:etcd': 'main', 'keel:member': member, Name: `main-${member}` });
      const eni = a.interfaces.get(i.interfaceId!)!;
      expect(eni.address).toBe({ etcd1: '10.0.1.10', etcd2: '10.0.2.10', etcd3: '10.0.3.10' }[member]);
      expect(eni.attachedTo).toBe(id);
      expect(i.profile).toBe('keel-main-etcd');
      expect(i.userData).toContain(`Keel etcd member ${member} of cluster main`);
      expect(a.volumes.get(i.volumes[0]!.volumeId)).toEqual({ sizeGiB: 20, encrypted: true });
    }
    const launch = runs.at(-1)!.input;
    expect(launch.MetadataOptions).toEqual({ HttpTokens: 'required', HttpEndpoint: 'enabled' });
    expect(launch.BlockDeviceMappings).toEqual([{ DeviceName: '/dev/xvda', Ebs: { VolumeType: 'gp3', VolumeSize: 20, Encrypted: true, DeleteOnTermination: true } }]);
    // the controller it runs launches nodes into the db group and names the NLB in their certificates
    const db = [...a.groups].find(([, g]) => g.name === 'keel-main-db')![0];
    expect([...a.instances.values()][0]!.userData).toContain(db);
    expect([...a.instances.values()][0]!.userData).toContain('keel-main-0123456789abcdef.elb.eu-west-1.amazonaws.com');
  });

  it('opens what the plan opens, to the VPC or a group, and sets up the NLB as planned', async () => {
    await up();
    const a = account();
    const group = (name: string) => [...a.groups.values()].find((g) => g.name === name)!;
    const etcdId = [...a.groups].find(([, g]) => g.name === 'keel-main-etcd')![0];
    const dbId = [...a.groups].find(([, g]) => g.name === 'keel-main-db')![0];
    expect(group('keel-main-db').rules).toEqual([{ port: 5432, cidr: '10.0.0.0/16' }, { port: 8008, cidr: '10.0.0.0/16' }]);
    expect(group('keel-main-etcd').rules).toEqual([{ port: 2379, groupId: etcdId }, { port: 2380, groupId: etcdId }, { port: 2379, groupId: dbId }]);
    expect(group('keel-main-db').tags).toEqual({ 'keel:cluster': 'main', Name: 'keel-main-db' });
    const lb = a.loadBalancers.get('keel-main')!;
    expect(lb.attributes['load_balancing.cross_zone.enabled']).toBe('true');
    expect(lb.subnets).toHaveLength(3);
    const rw = a.targetGroups.get('keel-main-rw')!;
    expect(rw.input).toMatchObject({ Protocol: 'TCP', Port: 5432, HealthCheckProtocol: 'HTTPS', HealthCheckPort: '8008', HealthCheckPath: '/primary', Matcher: { HttpCode: '200' } });
    expect(rw.input.HealthCheckTimeoutSeconds).toBeLessThan(rw.input.HealthCheckIntervalSeconds);
    expect(a.targetGroups.get('keel-main-ro')!.input.HealthCheckPath).toBe('/replica');
    expect(rw.attributes).toMatchObject({ 'deregistration_delay.timeout_seconds': '10', 'target_health_state.unhealthy.connection_termination.enabled': 'true' });
    expect([...a.listeners.values()].map((l) => [l.port, l.targetGroupArn])).toEqual([[5432, rw.arn], [5433, a.targetGroups.get('keel-main-ro')!.arn]]);
  });

  it('a second up creates nothing and changes nothing', async () => {
    await up();
    const before = account().calls.length;
    account().creations = [];
    const lines = await up();
    expect(account().creations).toEqual([]);
    expect(account().actions(before).filter((a) => mutating.test(a))).toEqual([]);
    expect(lines.filter((l) => /^ {2}created/.test(l))).toEqual([]);
    expect(lines.filter((l) => /^ {2}kept /.test(l)).length).toBe(planned().filter((r) => r.kind === 'ssm-parameter').length);
  });

  it('makes the CA and every pair it names: etcd members by address, the controller and the router by their etcd users', async () => {
    await up();
    const ca = new X509Certificate(param('tls/ca.crt'));
    expect(ca.ca).toBe(true);
    expect(ca.checkPrivateKey(createPrivateKey(param('tls/ca.key')))).toBe(true);
    for (const [member, address] of [['etcd1', '10.0.1.10'], ['etcd2', '10.0.2.10'], ['etcd3', '10.0.3.10']]) {
      const cert = new X509Certificate(param(`etcd/${member}/tls/server.crt`));
      expect(cert.verify(ca.publicKey)).toBe(true);
      expect(cert.checkIP(address!)).toBe(address);
      expect(cert.checkPrivateKey(createPrivateKey(param(`etcd/${member}/tls/server.key`)))).toBe(true);
    }
    for (const [who, cn] of [['controller/tls/controller', 'main-controller'], ['router/tls/router', 'main-router']]) {
      const cert = new X509Certificate(param(`${who}.crt`));
      expect(cert.subject).toContain(`CN=${cn}`);
      expect(cert.verify(ca.publicKey)).toBe(true);
    }
    for (const name of ['superuser-password', 'rewind-password', 'app-password', 'etcd-root-password', 'api-key']) {
      expect(Buffer.from(param(name), 'base64url')).toHaveLength(32);
    }
    const a = account();
    for (const [name, p] of a.parameters) {
      expect(p.type, name).toBe(/(password|token|key)$/.test(name) ? 'SecureString' : 'String');
      if (p.type === 'SecureString') expect(p.keyId).toBe('alias/aws/ssm');
    }
    expect(a.calls.filter((c) => c.action === 'ssm:PutParameter').every((c) => c.input.Overwrite === false)).toBe(true);
  });

  it('never overwrites a parameter that exists, and never prints a secret', async () => {
    account().parameters.set('/keel/main/superuser-password', { value: 'chosen-by-the-operator-0123456789', type: 'SecureString' });
    const lines = await up();
    expect(param('superuser-password')).toBe('chosen-by-the-operator-0123456789');
    expect(account().calls.some((c) => c.action === 'ssm:PutParameter' && c.input.Name === '/keel/main/superuser-password')).toBe(false);
    expect(lines).toContain('  kept     ssm-parameter /keel/main/superuser-password');
    const printed = lines.join('\n');
    for (const value of account().secretValues()) {
      for (const line of value.split('\n').filter((l) => l.length > 16 && !l.startsWith('-----'))) expect(printed).not.toContain(line);
    }
    expect(printed).not.toMatch(/PRIVATE KEY|BEGIN CERTIFICATE/);
  });

  it('stopped by a refused call, it names the action; the next run creates only the rest', async () => {
    account().failOn('elasticloadbalancing:CreateLoadBalancer');
    const err = await refusedUp();
    expect(err.code).toBe('KEEL_AWS_FORBIDDEN');
    expect(err.message).toContain('elasticloadbalancing:CreateLoadBalancer');
    expect(err.hint).toContain('deploy/aws/operator-policy.json');
    const first = creations();
    const all = planned();
    expect(first).toEqual(all.slice(0, all.findIndex((r) => r.kind === 'load-balancer')));
    account().clearFaults();
    account().creations = [];
    await up();
    expect(creations()).toEqual(all.slice(first.length));
  });

  it.each([
    ['between the CA\'s key and its certificate', '/keel/main/tls/ca.crt'],
    ['between the controller\'s key and its certificate', '/keel/main/controller/tls/controller.crt'],
    ['between etcd2\'s key and its certificate', '/keel/main/etcd/etcd2/tls/server.crt'],
  ])('cut %s, the next run issues the certificate for the stored key, under the same CA', async (_when, certificate) => {
    const names = planned().filter((r) => r.kind === 'ssm-parameter').map((r) => r.name);
    account().failOn('ssm:PutParameter', names.indexOf(certificate) + 1);
    expect((await refusedUp()).message).toContain('ssm:PutParameter');
    const key = certificate.replace(/\.crt$/, '.key');
    const storedKey = account().parameters.get(key)!.value;
    const caKey = param('tls/ca.key');
    expect(account().parameters.has(certificate)).toBe(false);
    account().clearFaults();
    await up();
    expect(account().parameters.get(key)!.value).toBe(storedKey);
    expect(param('tls/ca.key')).toBe(caKey);
    const cert = new X509Certificate(account().parameters.get(certificate)!.value);
    expect(cert.checkPrivateKey(createPrivateKey(storedKey))).toBe(true);
    const ca = new X509Certificate(param('tls/ca.crt'));
    for (const name of planned().filter((r) => r.name.endsWith('.crt') && r.name !== '/keel/main/tls/ca.crt').map((r) => r.name)) {
      expect(new X509Certificate(account().parameters.get(name)!.value).verify(ca.publicKey), name).toBe(true);
    }
  });

  it('refuses a certificate stored without its key, before writing anything', async () => {
    account().parameters.set('/keel/main/router/tls/router.crt', { value: 'a certificate whose key is lost', type: 'String' });
    const err = await refusedUp();
    expect(err.code).toBe('KEEL_AWS_FAILED');
    expect(err.message).toContain('/keel/main/router/tls/router.crt exists without its key');
    expect(account().calls.some((c) => c.action === 'ssm:PutParameter')).toBe(false);
  });

  it('without a load balancer: no NLB, and the router is the way in', async () => {
    const input = upInput((raw) => delete raw.loadBalancer);
    const lines = await up(input);
    expect(creations()).toEqual(planned(input));
    expect(account().loadBalancers.size).toBe(0);
    expect(lines.join('\n')).toContain('keel router');
  });
});
