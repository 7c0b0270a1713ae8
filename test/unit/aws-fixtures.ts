/**
 * What the aws provider's tests share: its options, EC2 instances as
 * DescribeInstances returns them, EC2's errors, and a DescribeInstances that
 * answers from a list of instances as EC2 filters them. Nothing reaches AWS:
 * aws-sdk-client-mock replaces EC2Client's send.
 */
import { EC2ServiceException, type DescribeInstancesCommandInput, type DescribeInstancesCommandOutput, type Instance, type InstanceStateName } from '@aws-sdk/client-ec2';
import type { AwsProviderOptions } from '../../src/providers/aws.js';

export const CLUSTER = 'geo';

export function awsOptions(overrides: Partial<AwsProviderOptions> = {}): AwsProviderOptions {
  return {
    region: 'eu-west-1',
    cluster: CLUSTER,
    subnets: { 'eu-west-1a': 'subnet-a', 'eu-west-1b': 'subnet-b', 'eu-west-1c': 'subnet-c' },
    instanceTypes: { default: 'm7g.large', byClass: { small: 't4g.medium', large: 'r7g.xlarge' } },
    amiId: 'ami-0123456789abcdef0',
    securityGroupIds: ['sg-keel'],
    instanceProfileName: 'keel-node',
    dataVolume: { sizeGiB: 100 },
    userData: '#cloud-config\n',
    // an endpoint nobody listens on: a call that escaped the mock fails at once instead of reaching AWS
    endpoint: 'http://127.0.0.1:9',
    maxAttempts: 1,
    waiterDelaySeconds: { min: 1, max: 1 },
    fenceWaitSeconds: 3,
    destroyWaitSeconds: 3,
    randomId: () => 'nonce-1',
    ...overrides,
  };
}

export function instance(id: string, node: string | null, state: InstanceStateName, extra: { zone?: string; ip?: string; cluster?: string } = {}): Instance {
  const tags = [{ Key: 'keel:cluster', Value: extra.cluster ?? CLUSTER }, ...(node === null ? [] : [{ Key: 'keel:node', Value: node }, { Key: 'keel:zone', Value: extra.zone ?? 'eu-west-1a' }])];
  return {
    InstanceId: id,
    State: { Name: state },
    PrivateIpAddress: extra.ip ?? '10.0.1.10',
    Placement: { AvailabilityZone: extra.zone ?? 'eu-west-1a' },
    Tags: tags,
  };
}

export function ec2Error(name: string, message = `${name} (test)`): EC2ServiceException {
  return new EC2ServiceException({ name, $fault: name === 'InsufficientInstanceCapacity' ? 'server' : 'client', $metadata: { httpStatusCode: 400 }, message });
}

/** DescribeInstances over `fleet()` (read at each call), with the tag, state and id filters EC2 applies. */
export function describeFrom(fleet: () => Instance[]): (input: DescribeInstancesCommandInput) => DescribeInstancesCommandOutput {
  return (input) => {
    let found = fleet();
    if (input.InstanceIds !== undefined) found = found.filter((i) => input.InstanceIds!.includes(i.InstanceId!));
    for (const f of input.Filters ?? []) {
      const values = f.Values ?? [];
      if (f.Name === 'instance-state-name') found = found.filter((i) => values.includes(i.State!.Name!));
      else if (f.Name?.startsWith('tag:')) found = found.filter((i) => i.Tags?.some((t) => t.Key === f.Name!.slice(4) && values.includes(t.Value!)));
    }
    return { Reservations: found.length === 0 ? [] : [{ Instances: found }], $metadata: {} };
  };
}
