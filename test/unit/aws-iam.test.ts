/**
 * deploy/aws/iam-policy.json allows exactly what the aws provider calls: the
 * provider runs create (with the next-zone path), list, destroy and fence
 * against mocked EC2, SSM and ELBv2 clients, giving each node its
 * credentials (a real CA issues them) and registering it in the NLB's target
 * groups; every command it sent becomes its IAM action (plus ec2:CreateTags
 * for tags given to RunInstances), and that set must be the policy's actions,
 * no more, no fewer.
 */
import { DescribeInstancesCommand, EC2Client, RunInstancesCommand, StopInstancesCommand, TerminateInstancesCommand, type Instance, type RunInstancesCommandInput } from '@aws-sdk/client-ec2';
import {
  DeregisterTargetsCommand,
  DescribeTargetGroupsCommand,
  ElasticLoadBalancingV2Client,
  RegisterTargetsCommand,
} from '@aws-sdk/client-elastic-load-balancing-v2';
import { DeleteParametersCommand, GetParameterCommand, PutParameterCommand, SSMClient } from '@aws-sdk/client-ssm';
import { mockClient } from 'aws-sdk-client-mock';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SsmNodeCredentials } from '../../src/providers/aws-credentials.js';
import { ensureCertificateAuthority } from '../../src/tls/pki.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { iamActionOf } from '../../src/providers/aws-errors.js';
import { AwsProvider } from '../../src/providers/aws.js';
import { awsOptions, CLUSTER, describeFrom, ec2Error, instance } from './aws-fixtures.js';

interface Statement {
  Effect: string;
  Action: string | string[];
  Resource: string | string[];
  Condition?: Record<string, Record<string, string>>;
}

const policy = JSON.parse(readFileSync(join(import.meta.dirname, '../../deploy/aws/iam-policy.json'), 'utf8')) as { Statement: Statement[] };
const statements = policy.Statement.filter((s) => s.Effect === 'Allow');
const actionsOf = (s: Statement): string[] => (Array.isArray(s.Action) ? s.Action : [s.Action]);

const ec2 = mockClient(EC2Client);
const ssm = mockClient(SSMClient);
const elb = mockClient(ElasticLoadBalancingV2Client);
const savedEnv = { ...process.env };
const scratch = mkdtempSync(join(tmpdir(), 'keel-aws-iam-'));
/** what `keel aws up` put in SSM: the CA and the key tokens derive from */
const parameters = new Map<string, string>();
beforeAll(async () => {
  Object.assign(process.env, { AWS_ACCESS_KEY_ID: 'AKIATEST', AWS_SECRET_ACCESS_KEY: 'test', AWS_EC2_METADATA_DISABLED: 'true' });
  const ca = await ensureCertificateAuthority({ cert: join(scratch, 'ca.crt'), key: join(scratch, 'ca.key') }, 'keel iam test CA');
  parameters.set('/keel/geo/tls/ca.crt', readFileSync(ca.cert, 'utf8'));
  parameters.set('/keel/geo/tls/ca.key', readFileSync(ca.key, 'utf8'));
  parameters.set('/keel/geo/api-key', 'k'.repeat(43));
});
afterAll(() => {
  process.env = savedEnv;
  ec2.restore();
  ssm.restore();
  elb.restore();
  rmSync(scratch, { recursive: true, force: true });
});

/** Every IAM action the provider needs over its four methods, from the commands it sent. */
async function actionsTheProviderNeeds(): Promise<Set<string>> {
  const fleet: Instance[] = [instance('i-1', 'node1', 'running')];
  ec2.reset();
  ec2.on(RunInstancesCommand, { SubnetId: 'subnet-a' }).rejects(ec2Error('InsufficientInstanceCapacity'));
  ec2.on(RunInstancesCommand, { SubnetId: 'subnet-b' }).callsFake((input: RunInstancesCommandInput) => {
    const launched = instance('i-2', 'node2', 'pending', { zone: 'eu-west-1b' });
    fleet.push({ ...launched, State: { Name: 'running' } });
    return { Instances: [{ ...launched, Tags: input.TagSpecifications?.[0]?.Tags }] };
  });
  ec2.on(DescribeInstancesCommand).callsFake(describeFrom(() => fleet));
  ec2.on(StopInstancesCommand).callsFake(({ InstanceIds }: { InstanceIds: string[] }) => {
    for (const i of fleet) if (InstanceIds.includes(i.InstanceId!)) i.State = { Name: 'stopped' };
    return {};
  });
  ec2.on(TerminateInstancesCommand).callsFake(({ InstanceIds }: { InstanceIds: string[] }) => {
    for (const i of fleet) if (InstanceIds.includes(i.InstanceId!)) i.State = { Name: 'terminated' };
    return {};
  });

  ssm.reset();
  ssm.on(GetParameterCommand).callsFake(({ Name }: { Name: string }) => {
    const value = parameters.get(Name);
    if (value === undefined) throw Object.assign(new Error(`${Name} not found`), { name: 'ParameterNotFound' });
    return { Parameter: { Name, Value: value } };
  });
  ssm.on(PutParameterCommand).callsFake(({ Name, Value }: { Name: string; Value: string }) => {
    parameters.set(Name, Value);
    return { Version: 1 };
  });
  ssm.on(DeleteParametersCommand).callsFake(({ Names }: { Names: string[] }) => {
    for (const name of Names) parameters.delete(name);
    return { DeletedParameters: Names };
  });
  elb.reset();
  elb.on(DescribeTargetGroupsCommand).resolves({ TargetGroups: ['rw', 'ro'].map((e) => ({ TargetGroupName: `keel-geo-${e}`, TargetGroupArn: `arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/keel-geo-${e}/0123456789abcdef` })) });
  elb.on(RegisterTargetsCommand).resolves({});
  elb.on(DeregisterTargetsCommand).resolves({});

  const credentials = new SsmNodeCredentials({ region: 'eu-west-1', cluster: CLUSTER, parameterPrefix: '/keel/geo', endpoint: 'http://127.0.0.1:9', maxAttempts: 1 });
  const provider = new AwsProvider(awsOptions({ credentials, targetGroups: { names: ['keel-geo-rw', 'keel-geo-ro'], endpoint: 'http://127.0.0.1:9' } }));
  const node = await provider.create(CLUSTER, { name: 'node2', zone: 'eu-west-1a' });
  // the node's credentials are there, its instance named last, and it is a target of both groups
  expect(parameters.get('/keel/geo/nodes/node2/instance-id')).toBe('i-2');
  expect(parameters.get('/keel/geo/nodes/node2/tls/node.crt')).toContain('BEGIN CERTIFICATE');
  expect(elb.commandCalls(RegisterTargetsCommand).map((c) => c.args[0].input.TargetGroupArn)).toHaveLength(2);
  expect(node.zone).toBe('eu-west-1b');
  expect((await provider.list(CLUSTER)).map((n) => n.name)).toEqual(['node1', 'node2']);
  expect((await provider.fence('node1')).confirmed).toBe(true);
  await provider.destroy('node2');

  // destroyed: out of both groups, its parameters gone
  expect(elb.commandCalls(DeregisterTargetsCommand)).toHaveLength(2);
  expect(parameters.has('/keel/geo/nodes/node2/instance-id')).toBe(false);

  const nameOf = (call: { args: unknown[] }) => (call.args[0] as object).constructor.name;
  const actions = new Set([
    ...ec2.calls().map((call) => iamActionOf(nameOf(call))),
    ...ssm.calls().map((call) => iamActionOf(nameOf(call), 'ssm')),
    ...elb.calls().map((call) => iamActionOf(nameOf(call), 'elasticloadbalancing')),
  ]);
  // tags given to RunInstances are created under ec2:CreateTags (the policy allows it only there)
  const tagged = ec2.commandCalls(RunInstancesCommand).some((c) => (c.args[0].input.TagSpecifications ?? []).length > 0);
  if (tagged) actions.add('ec2:CreateTags');
  return actions;
}

describe('deploy/aws/iam-policy.json', () => {
  it('allows exactly the EC2, SSM and ELB actions the provider calls', async () => {
    const needed = await actionsTheProviderNeeds();
    expect([...needed].sort()).toEqual([
      'ec2:CreateTags',
      'ec2:DescribeInstances',
      'ec2:RunInstances',
      'ec2:StopInstances',
      'ec2:TerminateInstances',
      'elasticloadbalancing:DeregisterTargets',
      'elasticloadbalancing:DescribeTargetGroups',
      'elasticloadbalancing:RegisterTargets',
      'ssm:DeleteParameters',
      'ssm:GetParameter',
      'ssm:PutParameter',
    ]);
    const allowed = new Set(statements.flatMap(actionsOf).filter((a) => a !== 'iam:PassRole'));
    expect([...allowed].sort()).toEqual([...needed].sort());
  });

  it('writes and deletes only nodes\' parameters, and registers only in keel-* target groups', () => {
    const resourcesOf = (action: string): string[] => statements.filter((s) => actionsOf(s).includes(action)).flatMap((s) => (Array.isArray(s.Resource) ? s.Resource : [s.Resource]));
    expect(resourcesOf('ssm:PutParameter')).toEqual(['arn:aws:ssm:*:*:parameter/keel/*/nodes/*']);
    expect(resourcesOf('ssm:DeleteParameters')).toEqual(['arn:aws:ssm:*:*:parameter/keel/*/nodes/*']);
    expect(resourcesOf('elasticloadbalancing:RegisterTargets')).toEqual(['arn:aws:elasticloadbalancing:*:*:targetgroup/keel-*/*']);
  });

  it('allows iam:PassRole, for EC2 only, since RunInstances passes the instance profile role', async () => {
    const passRole = statements.filter((s) => actionsOf(s).includes('iam:PassRole'));
    expect(passRole).toHaveLength(1);
    expect(passRole[0]!.Condition?.StringEquals?.['iam:PassedToService']).toBe('ec2.amazonaws.com');
    expect(statements.flatMap(actionsOf).filter((a) => a.startsWith('iam:'))).toEqual(['iam:PassRole']);
    const launch = ec2.commandCalls(RunInstancesCommand).map((c) => c.args[0].input);
    expect(launch.every((i) => i.IamInstanceProfile?.Name !== undefined)).toBe(true);
  });

  it('scopes what it can by tags: launching, tagging, stopping and terminating', () => {
    const conditions = (action: string): string[] => statements.filter((s) => actionsOf(s).includes(action)).flatMap((s) => Object.values(s.Condition ?? {}).flatMap((c) => Object.keys(c)));
    expect(conditions('ec2:RunInstances')).toContain('aws:RequestTag/keel:cluster');
    expect(conditions('ec2:CreateTags')).toEqual(['ec2:CreateAction']);
    expect(conditions('ec2:StopInstances')).toEqual(['aws:ResourceTag/keel:cluster']);
    expect(conditions('ec2:TerminateInstances')).toEqual(['aws:ResourceTag/keel:cluster']);
    // DescribeInstances supports no resource-level permissions
    expect(statements.find((s) => actionsOf(s).includes('ec2:DescribeInstances'))?.Resource).toBe('*');
  });
});
