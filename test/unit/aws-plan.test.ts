/**
 * `keel aws plan`, pure: keel-aws.yml's checks, the resources in their order
 * (per zone, round-robin, security groups from the VPC's range only, no SSH),
 * no secret anywhere, and the estimate's arithmetic.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { KeelError } from '../../src/errors.js';
import { awsTags } from '../../src/providers/aws.js';
import { parseAwsDeployment, parseAwsDeploymentText, type AwsDeployment } from '../../src/providers/aws-deployment.js';
import { etcdPolicy, nodePolicy, nodeTags, planAwsDeployment, type AwsPlan, type PlannedResource } from '../../src/providers/aws-plan.js';
import { estimateMonthlyCost } from '../../src/providers/aws-prices.js';
import { parseAwsNodeOptions, secretParameters } from '../../src/providers/aws-userdata.js';
import { renderPlan } from '../../src/cli/aws.js';

const exampleFile = join(import.meta.dirname, '../../deploy/aws/keel-aws.yml');
const exampleText = readFileSync(exampleFile, 'utf8');
const example = (): Record<string, unknown> => parseYaml(exampleText) as Record<string, unknown>;

function deployment(change: (raw: Record<string, any>) => void = () => undefined): AwsDeployment {
  const raw = example();
  change(raw);
  return parseAwsDeployment(raw);
}

const ofKind = (plan: AwsPlan, kind: PlannedResource['kind']) => plan.resources.filter((r) => r.kind === kind);
const indexOf = (plan: AwsPlan, kind: PlannedResource['kind'], name: string) => plan.resources.findIndex((r) => r.kind === kind && r.name === name);
const databaseNodes = (plan: AwsPlan) => ofKind(plan, 'instance').filter((r) => String(r.properties.purpose).startsWith('database'));

function invalid(change: (raw: Record<string, any>) => void): KeelError {
  try {
    deployment(change);
  } catch (err) {
    expect(err).toBeInstanceOf(KeelError);
    return err as KeelError;
  }
  throw new Error('the deployment was accepted');
}

describe('keel-aws.yml', () => {
  it('the example parses, with the defaults filled in', () => {
    const d = parseAwsDeploymentText(exampleText);
    expect(d.nodes).toBe(3);
    expect(d.instanceTypes[d.instanceClass]).toBe('m6i.large');
    expect(d.ssm.kmsKeyId).toBe('alias/aws/ssm');
    const bare = deployment((raw) => {
      delete raw.ssm;
      delete raw.nodes;
    });
    expect(bare.nodes).toBe(3);
    expect(planAwsDeployment(bare).resources.some((r) => r.name === '/keel/main/superuser-password')).toBe(true);
  });

  it.each([
    ['two zones', (r: any) => r.zones.pop(), 'zones'],
    ['a zone twice', (r: any) => (r.zones[1].name = r.zones[0].name), 'zones.1.name'],
    ['a zone of another region', (r: any) => (r.zones[2].name = 'us-east-1c'), 'zones.2.name'],
    ['a subnet outside the VPC', (r: any) => (r.zones[0].subnetCidr = '10.1.1.0/24'), 'zones.0.subnetCidr'],
    ['a malformed VPC id', (r: any) => (r.vpc.id = 'vpc-XYZ'), 'vpc.id'],
    ['a class with no instance type', (r: any) => (r.instanceClass = 'huge'), 'instanceClass'],
    ['two etcd members in one zone', (r: any) => {
      r.etcd.members[1].zone = r.etcd.members[0].zone;
      r.etcd.members[1].address = '10.0.1.11';
    }, 'etcd.members.1.zone'],
    ['an etcd address outside its subnet', (r: any) => (r.etcd.members[0].address = '10.0.2.10'), 'etcd.members.0.address'],
    ['an address AWS reserves', (r: any) => (r.etcd.members[2].address = '10.0.3.2'), 'etcd.members.2.address'],
    ['the broadcast address', (r: any) => (r.etcd.members[2].address = '10.0.3.255'), 'etcd.members.2.address'],
    ['a fourth etcd member', (r: any) => r.etcd.members.push({ name: 'etcd4', zone: 'eu-west-1a', address: '10.0.1.20' }), 'etcd.members'],
    ['the same port for rw and ro', (r: any) => (r.loadBalancer.roPort = 5432), 'loadBalancer.roPort'],
    ['too many nodes', (r: any) => (r.nodes = 21), 'nodes'],
    ['a reserved SSM prefix', (r: any) => (r.ssm.prefix = '/aws/keel'), 'ssm.prefix'],
    ['a cluster name too long for the target groups', (r: any) => (r.cluster = 'a_very_long_cluster_name_x'), 'cluster'],
    ['an unknown key', (r: any) => (r.sshKeyName = 'ops'), 'sshKeyName'],
  ])('refuses %s with KEEL_CONFIG_INVALID naming the field and a hint, exit 2', (_what, change, field) => {
    const err = invalid(change);
    expect(err.code).toBe('KEEL_CONFIG_INVALID');
    expect(err.exitStatus).toBe(2);
    expect(err.message).toContain(field);
    expect(err.hint).toContain('deploy/aws/keel-aws.yml');
  });

  it('refuses a secret written into it, and never repeats its value', () => {
    const err = invalid((r) => {
      r.superuserPassword = 'hunter2-do-not-print';
      r.ssm.apiToken = 'tok-do-not-print';
    });
    expect(err.message).toContain('superuserPassword');
    expect(`${err.message} ${err.hint}`).not.toMatch(/do-not-print/);
  });

  it('bad YAML is KEEL_CONFIG_UNREADABLE (exit 2)', () => {
    expect(() => parseAwsDeploymentText('region: [')).toThrow(expect.objectContaining({ code: 'KEEL_CONFIG_UNREADABLE', exitStatus: 2 }));
  });
});

describe('the plan', () => {
  it('one ENI and one etcd member per zone, at the member\'s fixed address', () => {
    const d = deployment();
    const plan = planAwsDeployment(d);
    for (const zone of d.zones) {
      const member = d.etcd.members.find((m) => m.zone === zone.name)!;
      const enis = ofKind(plan, 'network-interface').filter((r) => r.zone === zone.name);
      expect(enis).toHaveLength(1);
      expect(enis[0]!.properties).toMatchObject({ subnetId: zone.subnetId, privateIp: member.address, deleteOnTermination: false });
      const etcd = ofKind(plan, 'instance').filter((r) => r.zone === zone.name && r.properties.purpose === 'etcd member + controller');
      expect(etcd.map((r) => r.name)).toEqual([`main-${member.name}`]);
      // not keel:cluster: the controller's policy could stop it otherwise
      expect((etcd[0]!.properties.tags as string[]).some((t) => t.startsWith('keel:cluster='))).toBe(false);
    }
  });

  it.each([
    [1, ['eu-west-1a']],
    [3, ['eu-west-1a', 'eu-west-1b', 'eu-west-1c']],
    [5, ['eu-west-1a', 'eu-west-1b', 'eu-west-1c', 'eu-west-1a', 'eu-west-1b']],
    [7, ['eu-west-1a', 'eu-west-1b', 'eu-west-1c', 'eu-west-1a', 'eu-west-1b', 'eu-west-1c', 'eu-west-1a']],
  ])('%i database nodes go round-robin over the zones', (nodes, zones) => {
    const d = deployment((r) => (r.nodes = nodes));
    const plan = planAwsDeployment(d);
    const db = databaseNodes(plan);
    expect(db.map((r) => r.zone)).toEqual(zones);
    expect(db.map((r) => r.name)).toEqual(zones.map((_, i) => `main-node${i + 1}`));
    for (const node of db) {
      expect(node.properties.subnetId).toBe(d.zones.find((z) => z.name === node.zone)!.subnetId);
      expect(node.properties.tags).toEqual(expect.arrayContaining([`keel:cluster=main`, `keel:zone=${node.zone}`, 'keel:class=medium']));
    }
  });

  it("tags the nodes as the aws provider does", () => {
    expect(nodeTags).toEqual(awsTags);
  });

  it('opens PostgreSQL and the API to the VPC only, etcd to its members and the nodes, and no SSH', () => {
    const d = deployment();
    const plan = planAwsDeployment(d);
    const rules = ofKind(plan, 'security-group-rule').map((r) => r.properties);
    expect(rules.map((r) => r.port)).not.toContain(22);
    expect(rules.every((r) => r.direction === 'ingress' && r.protocol === 'tcp')).toBe(true);
    const cidrSources = rules.filter((r) => /^\d/.test(String(r.source))).map((r) => r.source);
    expect(new Set(cidrSources)).toEqual(new Set([d.vpc.cidr]));
    const from = (group: string, port: number) => rules.filter((r) => r.group === group && r.port === port).map((r) => r.source).sort();
    expect(from('keel-main-db', 5432)).toEqual(['10.0.0.0/16']);
    expect(from('keel-main-db', 8008)).toEqual(['10.0.0.0/16']);
    expect(from('keel-main-etcd', 2379)).toEqual(['keel-main-db', 'keel-main-etcd']);
    expect(from('keel-main-etcd', 2380)).toEqual(['keel-main-etcd']);
    expect(from('keel-main-nlb', 5432)).toEqual(['10.0.0.0/16']);
    expect(from('keel-main-nlb', 5433)).toEqual(['10.0.0.0/16']);
    expect(rules).toHaveLength(7);
    expect(JSON.stringify(plan)).not.toContain('0.0.0.0/0');
  });

  it('creates each thing after what it needs', () => {
    const plan = planAwsDeployment(deployment());
    const at = (kind: PlannedResource['kind'], name: string) => {
      const i = indexOf(plan, kind, name);
      expect(i, `${kind} ${name}`).toBeGreaterThanOrEqual(0);
      return i;
    };
    for (const rule of ofKind(plan, 'security-group-rule')) expect(at('security-group', String(rule.properties.group))).toBeLessThan(plan.resources.indexOf(rule));
    expect(at('iam-role', 'keel-main-node')).toBeLessThan(at('iam-instance-profile', 'keel-main-node'));
    expect(at('iam-instance-profile', 'keel-main-node')).toBeLessThan(at('instance', 'main-node1'));
    expect(at('iam-instance-profile', 'keel-main-etcd')).toBeLessThan(at('instance', 'main-etcd1'));
    expect(at('ssm-parameter', '/keel/main/etcd/etcd1/tls/server.key')).toBeLessThan(at('instance', 'main-etcd1'));
    expect(at('network-interface', 'main-etcd1')).toBeLessThan(at('instance', 'main-etcd1'));
    expect(at('instance', 'main-etcd3')).toBeLessThan(at('instance', 'main-node1'));
    expect(at('load-balancer', 'keel-main')).toBeLessThan(at('target-group', 'keel-main-rw'));
    // the etcd members' user data carries the NLB's DNS name to the controller
    expect(at('load-balancer', 'keel-main')).toBeLessThan(at('instance', 'main-etcd1'));
    expect(at('target-group', 'keel-main-rw')).toBeLessThan(at('listener', 'keel-main tcp/5432'));
    expect(at('load-balancer', 'keel-main')).toBeLessThan(at('ssm-parameter', '/keel/main/nodes/node1/tls/node.crt'));
    expect(at('instance', 'main-node1')).toBeLessThan(at('ssm-parameter', '/keel/main/nodes/node1/tls/node.crt'));
    expect(plan.resources.at(-1)!.kind).toBe('target-registration');
  });

  it('up makes all but the database nodes, their own parameters and their registrations, which the controller makes', () => {
    const plan = planAwsDeployment(deployment());
    const byController = plan.resources.filter((r) => r.createdBy === 'controller');
    expect(new Set(byController.map((r) => r.kind))).toEqual(new Set(['instance', 'ssm-parameter', 'target-registration']));
    expect(byController.filter((r) => r.kind === 'instance')).toEqual(databaseNodes(plan));
    expect(byController.filter((r) => r.kind === 'ssm-parameter').every((r) => r.name.startsWith('/keel/main/nodes/'))).toBe(true);
    const byUp = plan.resources.filter((r) => r.createdBy === 'up');
    expect(byUp.filter((r) => r.kind === 'ssm-parameter').some((r) => r.name.startsWith('/keel/main/nodes/'))).toBe(false);
    expect(byUp.filter((r) => r.kind === 'instance').map((r) => r.name)).toEqual(['main-etcd1', 'main-etcd2', 'main-etcd3']);
    // the estimate still counts the nodes
    expect(plan.cost.lines.find((l) => l.item === 'm6i.large instances')!.quantity).toBe(3);
  });

  it('writes every key before its certificate, the CA\'s first; the router\'s pair is for the nodes', () => {
    const d = deployment();
    const plan = planAwsDeployment(d);
    const names = ofKind(plan, 'ssm-parameter').map((r) => r.name);
    expect(names[0]).toBe('/keel/main/tls/ca.key');
    for (const cert of names.filter((n) => n.endsWith('.crt') && !n.includes('/nodes/'))) {
      const key = cert === '/keel/main/tls/ca.crt' ? '/keel/main/tls/ca.key' : cert.replace(/\.crt$/, '.key');
      expect(names.indexOf(key), cert).toBeGreaterThanOrEqual(0);
      expect(names.indexOf(key), cert).toBeLessThan(names.indexOf(cert));
    }
    const routerKey = 'arn:aws:ssm:eu-west-1:*:parameter/keel/main/router/tls/router.key';
    expect(nodePolicy(d).Statement.flatMap((s) => s.Resource ?? [])).toContain(routerKey);
    expect(etcdPolicy(d).Statement.flatMap((s) => s.Resource ?? [])).not.toContain(routerKey);
  });

  it('the NLB follows the REST API: /primary for rw, /replica for ro, over HTTPS 8008, internal', () => {
    const plan = planAwsDeployment(deployment());
    expect(ofKind(plan, 'load-balancer')[0]!.properties).toMatchObject({ type: 'network', scheme: 'internal', crossZone: true });
    const groups = Object.fromEntries(ofKind(plan, 'target-group').map((r) => [r.name, r.properties]));
    expect(groups['keel-main-rw']).toMatchObject({ protocol: 'TCP', port: 5432, healthCheck: 'HTTPS 8008 GET /primary (200)' });
    expect(groups['keel-main-ro']).toMatchObject({ protocol: 'TCP', port: 5432, healthCheck: 'HTTPS 8008 GET /replica (200)' });
    expect(ofKind(plan, 'listener').map((r) => [r.properties.port, r.properties.forwardTo])).toEqual([[5432, 'keel-main-rw'], [5433, 'keel-main-ro']]);
    expect(ofKind(plan, 'target-registration').map((r) => r.properties.targets)).toEqual([
      ['main-node1', 'main-node2', 'main-node3'],
      ['main-node1', 'main-node2', 'main-node3'],
    ]);
  });

  it('without a loadBalancer: no NLB, no NLB group, no NLB cost', () => {
    const plan = planAwsDeployment(deployment((r) => delete r.loadBalancer));
    for (const kind of ['load-balancer', 'target-group', 'listener', 'target-registration'] as const) expect(ofKind(plan, kind)).toEqual([]);
    expect(ofKind(plan, 'security-group').map((r) => r.name)).toEqual(['keel-main-db', 'keel-main-etcd']);
    expect(plan.cost.lines.map((l) => l.item)).toEqual(['t3.small instances', 'm6i.large instances', 'gp3 volumes']);
  });

  it("names every parameter each node's user data reads, SecureString for every password, token and key", () => {
    const d = deployment((r) => (r.nodes = 4));
    const plan = planAwsDeployment(d);
    const parameters = new Map(ofKind(plan, 'ssm-parameter').map((r) => [r.name, r.properties]));
    for (const name of ['node1', 'node2', 'node3', 'node4']) {
      const options = parseAwsNodeOptions({
        name, cluster: 'main', region: 'eu-west-1', zone: 'eu-west-1a', etcdEndpoints: ['https://10.0.1.10:2379'], clusterCidrs: ['10.0.0.0/16'],
        keel: { kind: 'path', path: '/opt/keel' }, parameterPrefix: '/keel/main',
      });
      for (const parameter of Object.values(secretParameters(options))) expect(parameters.has(parameter), parameter).toBe(true);
    }
    for (const [name, properties] of parameters) {
      expect(properties.type, name).toBe(/(password|token|key)$/.test(name) ? 'SecureString' : 'String');
      expect(Object.keys(properties).every((k) => ['type', 'tier', 'kmsKeyId', 'readBy', 'holds'].includes(k)), name).toBe(true);
    }
    for (const name of ['superuser-password', 'rewind-password', 'app-password', 'etcd-root-password', 'api-key', 'tls/ca.key', 'tls/ca.crt']) {
      expect(parameters.has(`/keel/main/${name}`), name).toBe(true);
    }
  });

  it('no secret value anywhere: only names, in the JSON and in the table', () => {
    const plan = planAwsDeployment(deployment());
    const json = JSON.stringify(plan);
    expect(json).not.toMatch(/"(value|Value|password|secret|token)"\s*:/);
    expect(json).not.toMatch(/BEGIN [A-Z ]*(PRIVATE KEY|CERTIFICATE)/);
    const text = renderPlan(plan);
    expect(text).not.toMatch(/BEGIN|=\s*\*\*\*|Bearer/);
    expect(text).toContain('dry run');
    expect(text).toContain('ESTIMATE');
  });

  it("the nodes' role reads the nodes' parameters only; the CA's key and the token key only the controller's role reads", () => {
    const d = deployment();
    const nodeResources = nodePolicy(d).Statement.filter((s) => s.Action === 'ssm:GetParameter').flatMap((s) => s.Resource as string[]);
    const etcdResources = etcdPolicy(d).Statement.flatMap((s) => s.Resource as string[]);
    for (const arn of [...nodeResources, ...etcdResources]) expect(arn).toMatch(/^arn:aws:ssm:eu-west-1:\*:parameter\/keel\/main\//);
    expect(nodeResources).toContain('arn:aws:ssm:eu-west-1:*:parameter/keel/main/nodes/*');
    expect(nodeResources).not.toContain('arn:aws:ssm:eu-west-1:*:parameter/keel/main/*');
    for (const controllerOnly of ['tls/ca.key', 'api-key']) {
      expect(nodeResources.some((arn) => arn.endsWith(`/keel/main/${controllerOnly}`))).toBe(false);
      expect(etcdResources).toContain(`arn:aws:ssm:eu-west-1:*:parameter/keel/main/${controllerOnly}`);
    }
    expect(nodeResources.some((arn) => arn.includes('etcd-root-password') || arn.includes('/etcd/') || arn.includes('/controller/'))).toBe(false);
    expect(etcdResources.some((arn) => arn.includes('/nodes/'))).toBe(false);
    expect(nodePolicy(d).Statement.find((s) => s.Sid === 'DescribeItself')).toMatchObject({ Action: ['ec2:DescribeInstances', 'ec2:DescribeTags'], Resource: '*' });
    // the AWS-managed key needs no kms:Decrypt in the role; a key of one's own does, through SSM only
    expect(JSON.stringify(nodePolicy(d))).not.toContain('kms:Decrypt');
    const own = deployment((r) => (r.ssm.kmsKeyId = 'arn:aws:kms:eu-west-1:123456789012:key/abcd-1234'));
    expect(nodePolicy(own).Statement.find((s) => s.Action === 'kms:Decrypt')).toMatchObject({
      Resource: 'arn:aws:kms:eu-west-1:123456789012:key/abcd-1234',
      Condition: { StringEquals: { 'kms:ViaService': 'ssm.eu-west-1.amazonaws.com' } },
    });
    // the controller, on the etcd members, writes each node's SecureStrings with that key
    expect(etcdPolicy(own).Statement.find((s) => String(s.Action).includes('kms:'))).toMatchObject({ Action: ['kms:Decrypt', 'kms:Encrypt'], Resource: 'arn:aws:kms:eu-west-1:123456789012:key/abcd-1234' });
    expect(nodePolicy(own).Statement.find((s) => String(s.Action).includes('kms:'))!.Action).toBe('kms:Decrypt');
  });

  it("attaches the controller's policy (deploy/aws/iam-policy.json), which may pass the nodes' role", () => {
    const plan = planAwsDeployment(deployment());
    const controller = ofKind(plan, 'iam-policy').find((r) => r.name === 'keel-main-controller')!;
    expect(controller.document).toEqual({ file: 'deploy/aws/iam-policy.json' });
    const policy = JSON.parse(readFileSync(join(import.meta.dirname, '../../deploy/aws/iam-policy.json'), 'utf8')) as { Statement: { Action: string | string[]; Resource: string }[] };
    const passRole = policy.Statement.find((s) => s.Action === 'iam:PassRole')!;
    expect(new RegExp(`^${passRole.Resource.replace(/[.]/g, '\\.').replace(/\*/g, '.*')}$`).test('arn:aws:iam::123456789012:role/keel-main-node')).toBe(true);
  });
});

describe('the monthly estimate', () => {
  it.each([
    // region, expected lines (item: monthly USD), total
    ['us-east-1', { 't3.small instances': 45.55, 'm6i.large instances': 210.24, 'gp3 volumes': 30.72, 'Network Load Balancer': 16.43, 'NLB capacity (1 NLCU assumed)': 4.38 }, 307.32],
    ['eu-west-1', { 't3.small instances': 49.93, 'm6i.large instances': 234.33, 'gp3 volumes': 33.79, 'Network Load Balancer': 18.4, 'NLB capacity (1 NLCU assumed)': 4.38 }, 340.83],
  ])('the default shape in %s', (region, lines, total) => {
    const d = deployment((r) => {
      r.region = region;
      r.zones.forEach((z: any, i: number) => (z.name = `${region}${'abc'[i]}`));
      r.etcd.members.forEach((m: any, i: number) => (m.zone = `${region}${'abc'[i]}`));
    });
    const cost = planAwsDeployment(d).cost;
    expect(cost.kind).toBe('estimate');
    expect(cost.pricesOf).toBe(region);
    expect(Object.fromEntries(cost.lines.map((l) => [l.item, l.monthlyUsd]))).toEqual(lines);
    // 3 x (8 + 100) GiB for the nodes, 3 x 20 GiB for etcd
    expect(cost.lines.find((l) => l.unit === 'GB-month')!.quantity).toBe(384);
    expect(cost.totalMonthlyUsd).toBe(total);
    expect(cost.unpriced).toEqual([]);
  });

  it('is quantity x unit price x 730 hours, rounded to the cent', () => {
    const cost = estimateMonthlyCost({ region: 'us-east-1', instances: { 'm6i.xlarge': 5 }, gp3GiB: 1000, loadBalancer: { assumedLcu: 2.5 } });
    expect(cost.lines.map((l) => l.monthlyUsd)).toEqual([700.8, 80, 16.43, 10.95]);
    expect(cost.totalMonthlyUsd).toBe(808.18);
  });

  it('prices an unknown region as us-east-1 and says so; leaves an unknown type out and names it', () => {
    const cost = estimateMonthlyCost({ region: 'ap-south-1', instances: { 'm6i.large': 1, 'x2iedn.32xlarge': 2 }, gp3GiB: 0, loadBalancer: null });
    expect(cost.pricesOf).toBe('us-east-1');
    expect(cost.notIncluded[0]).toContain('ap-south-1');
    expect(cost.unpriced).toEqual(['2 x x2iedn.32xlarge']);
    expect(cost.totalMonthlyUsd).toBe(70.08);
  });
});
