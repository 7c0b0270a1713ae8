/**
 * The aws provider against a mocked EC2Client: what RunInstances is sent
 * (tags, client token, subnet per zone, the data volume), the next zone when
 * one has no capacity, errors as KEEL_AWS_*, fencing confirmed only once the
 * instance is stopped, and list over every page.
 */
import {
  DescribeInstancesCommand,
  EC2Client,
  RunInstancesCommand,
  StopInstancesCommand,
  TerminateInstancesCommand,
  type DescribeInstancesCommandOutput,
  type Instance,
  type RunInstancesCommandInput,
} from '@aws-sdk/client-ec2';
import { mockClient } from 'aws-sdk-client-mock';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { KeelError } from '../../src/errors.js';
import { AwsProvider, clientToken, zoneOrder } from '../../src/providers/aws.js';
import { awsOptions, CLUSTER, describeFrom, ec2Error, instance } from './aws-fixtures.js';

const ec2 = mockClient(EC2Client);
const savedEnv = { ...process.env };

beforeAll(() => {
  // were the mock to leak, the SDK would find these and never look for an instance profile
  Object.assign(process.env, { AWS_ACCESS_KEY_ID: 'AKIATEST', AWS_SECRET_ACCESS_KEY: 'test', AWS_EC2_METADATA_DISABLED: 'true' });
});
afterAll(() => {
  process.env = savedEnv;
  ec2.restore();
});
beforeEach(() => ec2.reset());

function runInputs(): RunInstancesCommandInput[] {
  return ec2.commandCalls(RunInstancesCommand).map((c) => c.args[0].input);
}

function tagsOf(input: RunInstancesCommandInput, resource: string): Record<string, string> {
  const spec = input.TagSpecifications?.find((t) => t.ResourceType === resource);
  return Object.fromEntries((spec?.Tags ?? []).map((t) => [t.Key!, t.Value!]));
}

async function keelError(promise: Promise<unknown>): Promise<KeelError> {
  const err = await promise.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(KeelError);
  return err as KeelError;
}

describe('create', () => {
  it('launches one instance in the zone subnet, tagged, with a client token, the gp3 volume and the user data', async () => {
    ec2.on(RunInstancesCommand).resolves({ Instances: [instance('i-1', null, 'pending', { ip: '10.0.2.7' })] });
    const provider = new AwsProvider(awsOptions({ userData: (n) => `#cloud-config\n# ${n.cluster}/${n.name} in ${n.zone} as ${n.instanceType}\n` }));
    const node = await provider.create(CLUSTER, { name: 'node2', zone: 'eu-west-1b', instanceClass: 'small' });

    expect(node).toEqual({ name: 'node2', zone: 'eu-west-1b', state: 'running', agentPid: null, pgAddress: '10.0.2.7:5432', apiAddress: '10.0.2.7:8008' });
    const [input, ...more] = runInputs();
    expect(more).toEqual([]);
    expect(input).toMatchObject({
      ImageId: 'ami-0123456789abcdef0',
      InstanceType: 't4g.medium',
      MinCount: 1,
      MaxCount: 1,
      SubnetId: 'subnet-b',
      SecurityGroupIds: ['sg-keel'],
      IamInstanceProfile: { Name: 'keel-node' },
      ClientToken: clientToken(CLUSTER, 'node2', 'nonce-1', 'eu-west-1b'),
      MetadataOptions: { HttpTokens: 'required' },
      BlockDeviceMappings: [{ DeviceName: '/dev/sdf', Ebs: { VolumeType: 'gp3', VolumeSize: 100, Encrypted: true, DeleteOnTermination: true } }],
    });
    for (const resource of ['instance', 'volume']) {
      expect(tagsOf(input!, resource)).toMatchObject({ 'keel:cluster': CLUSTER, 'keel:node': 'node2', 'keel:zone': 'eu-west-1b', 'keel:class': 'small' });
    }
    expect(Buffer.from(input!.UserData!, 'base64').toString()).toBe('#cloud-config\n# geo/node2 in eu-west-1b as t4g.medium\n');
    expect(input!.ClientToken!.length).toBeLessThanOrEqual(64);
  });

  it('uses the default instance type for a class not in the map', async () => {
    ec2.on(RunInstancesCommand).resolves({ Instances: [instance('i-1', null, 'pending')] });
    await new AwsProvider(awsOptions()).create(CLUSTER, { name: 'node1', zone: 'eu-west-1a', instanceClass: 'medium' });
    expect(runInputs()[0]).toMatchObject({ InstanceType: 'm7g.large', SubnetId: 'subnet-a' });
  });

  it('keys the client token on the creation: the same creation gets the same token, another creation another', async () => {
    ec2.on(RunInstancesCommand).resolves({ Instances: [instance('i-1', null, 'pending')] });
    const provider = new AwsProvider(awsOptions({ randomId: undefined }));
    await provider.create(CLUSTER, { name: 'node3', zone: 'eu-west-1a', creationId: 'c-7' });
    await provider.create(CLUSTER, { name: 'node3', zone: 'eu-west-1a', creationId: 'c-7' });
    await provider.create(CLUSTER, { name: 'node3', zone: 'eu-west-1a', creationId: 'c-8' });
    await provider.create(CLUSTER, { name: 'node3', zone: 'eu-west-1a' });
    await provider.create(CLUSTER, { name: 'node3', zone: 'eu-west-1a' });
    const tokens = runInputs().map((i) => i.ClientToken);
    expect(tokens[0]).toBe(tokens[1]);
    expect(new Set(tokens).size).toBe(4);
  });

  it('tries the next zones when a zone has no capacity, and reports the zone it used', async () => {
    ec2.on(RunInstancesCommand, { SubnetId: 'subnet-b' }).rejects(ec2Error('InsufficientInstanceCapacity'));
    ec2.on(RunInstancesCommand, { SubnetId: 'subnet-c' }).rejects(ec2Error('Unsupported', 'Your requested instance type (m7g.large) is not supported in your requested Availability Zone (eu-west-1c).'));
    ec2.on(RunInstancesCommand, { SubnetId: 'subnet-a' }).resolves({ Instances: [instance('i-9', null, 'pending', { ip: '10.0.1.9' })] });
    const node = await new AwsProvider(awsOptions()).create(CLUSTER, { name: 'node4', zone: 'eu-west-1b' });

    expect(node).toMatchObject({ name: 'node4', zone: 'eu-west-1a', pgAddress: '10.0.1.9:5432' });
    const inputs = runInputs();
    expect(inputs.map((i) => i.SubnetId)).toEqual(['subnet-b', 'subnet-c', 'subnet-a']);
    expect(inputs.map((i) => tagsOf(i, 'instance')['keel:zone'])).toEqual(['eu-west-1b', 'eu-west-1c', 'eu-west-1a']);
    // each zone's attempt is its own request
    expect(new Set(inputs.map((i) => i.ClientToken)).size).toBe(3);
  });

  it('fails with KEEL_AWS_CAPACITY naming every zone when none has capacity', async () => {
    ec2.on(RunInstancesCommand).rejects(ec2Error('InsufficientInstanceCapacity'));
    const err = await keelError(new AwsProvider(awsOptions()).create(CLUSTER, { name: 'node5', zone: 'eu-west-1c' }));
    expect(err.code).toBe('KEEL_AWS_CAPACITY');
    expect(err.message).toContain('eu-west-1c: InsufficientInstanceCapacity, eu-west-1a: InsufficientInstanceCapacity, eu-west-1b: InsufficientInstanceCapacity');
    expect(err.hint).toMatch(/instance type|zones/);
    expect(runInputs()).toHaveLength(3);
  });

  it('makes the user data with buildUserData for the zone each attempt is in', async () => {
    ec2.on(RunInstancesCommand, { SubnetId: 'subnet-a' }).rejects(ec2Error('InsufficientInstanceCapacity'));
    ec2.on(RunInstancesCommand, { SubnetId: 'subnet-b' }).resolves({ Instances: [instance('i-1', null, 'pending')] });
    const nodeOptions = {
      etcdEndpoints: ['https://10.0.1.10:2379'],
      clusterCidrs: ['10.0.0.0/16'],
      keel: { kind: 'url' as const, url: 'https://releases.example.com/keel/keel-0.1.0.tar.gz', sha256: 'ab'.repeat(32) },
    };
    await new AwsProvider(awsOptions({ userData: { nodeOptions }, pgPort: 6432 })).create(CLUSTER, { name: 'node7', zone: 'eu-west-1a' });
    const scripts = runInputs().map((i) => Buffer.from(i.UserData!, 'base64').toString());
    expect(scripts[0]).toContain("keel_zone='eu-west-1a'");
    expect(scripts[1]).toContain("keel_zone='eu-west-1b'");
    expect(scripts[1]).toContain("keel_node='node7'");
    expect(scripts[1]).toContain('"postgresPort":6432');
  });

  it('does not try another zone for an error that is not the zone\'s', async () => {
    ec2.on(RunInstancesCommand).rejects(ec2Error('InvalidAMIID.NotFound', "The image id '[ami-0123456789abcdef0]' does not exist"));
    const err = await keelError(new AwsProvider(awsOptions()).create(CLUSTER, { name: 'node5', zone: 'eu-west-1a' }));
    expect(err.code).toBe('KEEL_AWS_FAILED');
    expect(err.message).toContain('ec2:RunInstances');
    expect(runInputs()).toHaveLength(1);
  });

  it('turns UnauthorizedOperation into KEEL_AWS_FORBIDDEN naming the action', async () => {
    ec2.on(RunInstancesCommand).rejects(ec2Error('UnauthorizedOperation', 'You are not authorized to perform this operation. Encoded authorization failure message: AbCdEf0123'));
    const err = await keelError(new AwsProvider(awsOptions()).create(CLUSTER, { name: 'node6', zone: 'eu-west-1a' }));
    expect(err.code).toBe('KEEL_AWS_FORBIDDEN');
    expect(err.message).toContain('ec2:RunInstances');
    expect(err.message).toContain('iam:PassRole');
    expect(err.hint).toContain('ec2:RunInstances');
    expect(err.hint).toContain('decode-authorization-message');
    expect(err.message).not.toContain('AbCdEf0123');
    expect(runInputs()).toHaveLength(1);
  });

  it('refuses a zone without a subnet, and another cluster', async () => {
    const provider = new AwsProvider(awsOptions());
    expect((await keelError(provider.create(CLUSTER, { name: 'n', zone: 'us-east-1a' }))).hint).toContain('add a subnet for us-east-1a');
    expect((await keelError(provider.create('other', { name: 'n', zone: 'eu-west-1a' }))).code).toBe('KEEL_CONFIG_INVALID');
    expect(runInputs()).toHaveLength(0);
  });

  it('refuses options it cannot launch with', () => {
    expect(() => new AwsProvider(awsOptions({ subnets: {} }))).toThrow(/subnets/);
    expect(() => new AwsProvider(awsOptions({ dataVolume: { sizeGiB: 0 } }))).toThrow(/sizeGiB/);
  });
});

describe('zoneOrder', () => {
  it.each([
    ['a', ['a', 'b', 'c']],
    ['b', ['b', 'c', 'a']],
    ['c', ['c', 'a', 'b']],
    ['x', []],
  ])('from %s: %j', (zone, order) => {
    expect(zoneOrder(['a', 'b', 'c'], zone)).toEqual(order);
  });
});

describe('list', () => {
  it('maps the cluster instances to nodes, by their tags and private addresses', async () => {
    const fleet: Instance[] = [
      instance('i-1', 'node1', 'running', { zone: 'eu-west-1a', ip: '10.0.1.5' }),
      instance('i-2', 'node2', 'stopped', { zone: 'eu-west-1b', ip: '10.0.2.5' }),
      instance('i-3', 'node3', 'pending', { zone: 'eu-west-1c', ip: '10.0.3.5' }),
      instance('i-4', 'node4', 'terminated'),
      instance('i-5', null, 'running'),
      instance('i-6', 'node1', 'running', { cluster: 'other' }),
    ];
    ec2.on(DescribeInstancesCommand).callsFake(describeFrom(() => fleet));
    const nodes = await new AwsProvider(awsOptions({ pgPort: 6432, apiPort: 8443 })).list(CLUSTER);
    expect(nodes).toEqual([
      { name: 'node1', zone: 'eu-west-1a', state: 'running', agentPid: null, pgAddress: '10.0.1.5:6432', apiAddress: '10.0.1.5:8443' },
      { name: 'node2', zone: 'eu-west-1b', state: 'stopped', agentPid: null, pgAddress: '10.0.2.5:6432', apiAddress: '10.0.2.5:8443' },
      { name: 'node3', zone: 'eu-west-1c', state: 'running', agentPid: null, pgAddress: '10.0.3.5:6432', apiAddress: '10.0.3.5:8443' },
    ]);
    const input = ec2.commandCalls(DescribeInstancesCommand)[0]!.args[0].input;
    expect(input.Filters).toContainEqual({ Name: 'tag:keel:cluster', Values: [CLUSTER] });
    expect(input.Filters?.find((f) => f.Name === 'instance-state-name')?.Values).not.toContain('terminated');
  });

  it('reads every page', async () => {
    const pages: Record<string, DescribeInstancesCommandOutput> = {
      first: { Reservations: [{ Instances: [instance('i-1', 'node1', 'running')] }], NextToken: 'page-2', $metadata: {} },
      'page-2': { Reservations: [{ Instances: [instance('i-2', 'node2', 'running')] }, { Instances: [instance('i-3', 'node3', 'running')] }], NextToken: 'page-3', $metadata: {} },
      'page-3': { Reservations: [], $metadata: {} },
    };
    const asked: (string | undefined)[] = [];
    ec2.on(DescribeInstancesCommand).callsFake((input) => {
      asked.push(input.NextToken);
      return pages[input.NextToken ?? 'first'];
    });
    const nodes = await new AwsProvider(awsOptions()).list(CLUSTER);
    expect(nodes.map((n) => n.name)).toEqual(['node1', 'node2', 'node3']);
    expect(asked).toEqual([undefined, 'page-2', 'page-3']);
  });

  it('turns a refused DescribeInstances into KEEL_AWS_FORBIDDEN naming it', async () => {
    ec2.on(DescribeInstancesCommand).rejects(ec2Error('UnauthorizedOperation', 'You are not authorized to perform this operation.'));
    const err = await keelError(new AwsProvider(awsOptions()).list(CLUSTER));
    expect(err.code).toBe('KEEL_AWS_FORBIDDEN');
    expect(err.message).toContain('ec2:DescribeInstances');
    expect(err.message).not.toContain('iam:PassRole');
  });

  it('says a throttled call failed after the SDK retries, as KEEL_AWS_FAILED', async () => {
    ec2.on(DescribeInstancesCommand).rejects(ec2Error('RequestLimitExceeded', 'Request limit exceeded.'));
    const err = await keelError(new AwsProvider(awsOptions()).list(CLUSTER));
    expect(err.code).toBe('KEEL_AWS_FAILED');
    expect(err.message).toContain('RequestLimitExceeded');
  });
});

describe('fence', () => {
  it('force-stops the node instance and confirms only once it is stopped', async () => {
    let state: 'running' | 'stopping' | 'stopped' = 'running';
    let polls = 0;
    ec2.on(StopInstancesCommand).callsFake(() => {
      state = 'stopping';
      return {};
    });
    ec2.on(DescribeInstancesCommand).callsFake((input) => {
      // the waiter polls by id: the instance is stopped at its second look
      if (input.InstanceIds !== undefined && ++polls === 2) state = 'stopped';
      return describeFrom(() => [instance('i-7', 'node1', state), instance('i-8', 'node2', 'running')])(input);
    });
    const result = await new AwsProvider(awsOptions()).fence('node1');

    expect(result.confirmed).toBe(true);
    expect(state).toBe('stopped');
    expect(polls).toBe(2);
    expect(ec2.commandCalls(StopInstancesCommand).map((c) => c.args[0].input)).toEqual([{ InstanceIds: ['i-7'], Force: true }]);
  });

  it('does not confirm an instance still stopping when the wait ends', async () => {
    ec2.on(StopInstancesCommand).resolves({});
    ec2.on(DescribeInstancesCommand).callsFake(describeFrom(() => [instance('i-7', 'node1', 'stopping')]));
    const result = await new AwsProvider(awsOptions({ fenceWaitSeconds: 2 })).fence('node1');
    expect(result.confirmed).toBe(false);
    expect(result.detail).toContain('i-7 stopping');
  });

  it('confirms an instance that was terminated meanwhile, and a node with no instance left', async () => {
    ec2.on(StopInstancesCommand).resolves({});
    let state: 'running' | 'terminated' = 'running';
    ec2.on(DescribeInstancesCommand).callsFake((input) => {
      const answer = describeFrom(() => [instance('i-7', 'node1', state)])(input);
      state = 'terminated';
      return answer;
    });
    const provider = new AwsProvider(awsOptions());
    expect(await provider.fence('node1')).toMatchObject({ confirmed: true, detail: expect.stringContaining('i-7 terminated') });
    expect(await provider.fence('node1')).toMatchObject({ confirmed: true, detail: expect.stringContaining('no instance') });
    expect(ec2.commandCalls(StopInstancesCommand)).toHaveLength(1);
  });

  it('does not confirm a pending instance it could not stop', async () => {
    ec2.on(DescribeInstancesCommand).callsFake(describeFrom(() => [instance('i-7', 'node1', 'pending')]));
    ec2.on(StopInstancesCommand).rejects(ec2Error('IncorrectInstanceState', "The instance 'i-7' is not in a state from which it can be stopped."));
    const result = await new AwsProvider(awsOptions()).fence('node1');
    expect(result).toMatchObject({ confirmed: false, detail: expect.stringContaining('i-7 pending') });
  });

  it('throws KEEL_AWS_FORBIDDEN when it may not stop instances', async () => {
    ec2.on(DescribeInstancesCommand).callsFake(describeFrom(() => [instance('i-7', 'node1', 'running')]));
    ec2.on(StopInstancesCommand).rejects(ec2Error('UnauthorizedOperation', 'You are not authorized to perform this operation.'));
    const err = await keelError(new AwsProvider(awsOptions()).fence('node1'));
    expect(err.code).toBe('KEEL_AWS_FORBIDDEN');
    expect(err.message).toContain('ec2:StopInstances');
  });
});

describe('destroy', () => {
  it('terminates the node instance and waits until it is terminated', async () => {
    let state: 'running' | 'shutting-down' | 'terminated' = 'running';
    ec2.on(TerminateInstancesCommand).callsFake(() => {
      state = 'terminated';
      return {};
    });
    ec2.on(DescribeInstancesCommand).callsFake(describeFrom(() => [instance('i-7', 'node1', state), instance('i-8', 'node2', 'running')]));
    await new AwsProvider(awsOptions()).destroy('node1');
    expect(ec2.commandCalls(TerminateInstancesCommand).map((c) => c.args[0].input)).toEqual([{ InstanceIds: ['i-7'] }]);
    // the name lookup, then the waiter by id
    expect(ec2.commandCalls(DescribeInstancesCommand).map((c) => c.args[0].input.InstanceIds)).toEqual([undefined, ['i-7']]);
  });

  it('does nothing for a node with no instance left', async () => {
    ec2.on(DescribeInstancesCommand).callsFake(describeFrom(() => [instance('i-7', 'node1', 'terminated')]));
    await new AwsProvider(awsOptions()).destroy('node1');
    expect(ec2.commandCalls(TerminateInstancesCommand)).toHaveLength(0);
  });

  it('fails when the instance is not terminated in time', async () => {
    ec2.on(TerminateInstancesCommand).resolves({});
    ec2.on(DescribeInstancesCommand).callsFake(describeFrom(() => [instance('i-7', 'node1', 'shutting-down')]));
    const err = await keelError(new AwsProvider(awsOptions({ destroyWaitSeconds: 2 })).destroy('node1'));
    expect(err.code).toBe('KEEL_AWS_FAILED');
    expect(err.message).toContain('i-7 shutting-down');
  });
});
