/**
 * deploy/aws/iam-policy.json allows exactly what the aws provider calls: the
 * provider runs create (with the next-zone path), list, destroy and fence
 * against a mocked EC2Client, every command it sent becomes its IAM action
 * (plus ec2:CreateTags for tags given to RunInstances), and that set must be
 * the policy's EC2 actions, no more, no fewer.
 */
import { DescribeInstancesCommand, EC2Client, RunInstancesCommand, StopInstancesCommand, TerminateInstancesCommand, type Instance, type RunInstancesCommandInput } from '@aws-sdk/client-ec2';
import { mockClient } from 'aws-sdk-client-mock';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
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
const savedEnv = { ...process.env };
beforeAll(() => {
  Object.assign(process.env, { AWS_ACCESS_KEY_ID: 'AKIATEST', AWS_SECRET_ACCESS_KEY: 'test', AWS_EC2_METADATA_DISABLED: 'true' });
});
afterAll(() => {
  process.env = savedEnv;
  ec2.restore();
});

/** Every IAM action the provider needs over its four methods, from the commands it sent. */
async function actionsTheProviderNeeds(): Promise<Set<string>> {
  const fleet: Instance[] = [instance('i-1', 'node1', 'running')];
  ec2.reset();
  ec2.on(RunInstancesCommand, { SubnetId: 'subnet-a' }).rejects(ec2Error('InsufficientInstanceCapacity'));
  ec2.on(RunInstancesCommand, { SubnetId: 'subnet-b' }).callsFake((input: RunInstancesCommandInput) => {
    const launched = instance('i-2', 'node2', 'pending', { zone: 'eu-west-1b' });
    fleet.push(launched);
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

  const provider = new AwsProvider(awsOptions());
  const node = await provider.create(CLUSTER, { name: 'node2', zone: 'eu-west-1a' });
  expect(node.zone).toBe('eu-west-1b');
  expect((await provider.list(CLUSTER)).map((n) => n.name)).toEqual(['node1', 'node2']);
  expect((await provider.fence('node1')).confirmed).toBe(true);
  await provider.destroy('node2');

  const actions = new Set(ec2.calls().map((call) => iamActionOf((call.args[0] as object).constructor.name)));
  // tags given to RunInstances are created under ec2:CreateTags (the policy allows it only there)
  const tagged = ec2.commandCalls(RunInstancesCommand).some((c) => (c.args[0].input.TagSpecifications ?? []).length > 0);
  if (tagged) actions.add('ec2:CreateTags');
  return actions;
}

describe('deploy/aws/iam-policy.json', () => {
  it('allows exactly the EC2 actions the provider calls', async () => {
    const needed = await actionsTheProviderNeeds();
    expect([...needed].sort()).toEqual(['ec2:CreateTags', 'ec2:DescribeInstances', 'ec2:RunInstances', 'ec2:StopInstances', 'ec2:TerminateInstances']);
    const allowed = new Set(statements.flatMap(actionsOf).filter((a) => a.startsWith('ec2:')));
    expect([...allowed].sort()).toEqual([...needed].sort());
  });

  it('allows iam:PassRole, for EC2 only, since RunInstances passes the instance profile role', async () => {
    const passRole = statements.filter((s) => actionsOf(s).includes('iam:PassRole'));
    expect(passRole).toHaveLength(1);
    expect(passRole[0]!.Condition?.StringEquals?.['iam:PassedToService']).toBe('ec2.amazonaws.com');
    expect(statements.flatMap(actionsOf).filter((a) => !a.startsWith('ec2:'))).toEqual(['iam:PassRole']);
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
