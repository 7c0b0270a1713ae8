import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { KeelError } from '../../src/errors.js';
import { AwsProvider, type AwsUserDataNodeOptions } from '../../src/providers/aws.js';
import { awsControllerDefaults, awsNodeCredentialsOptions, awsProviderLimits, awsProviderOptions } from '../../src/controller/aws.js';
import { parseAwsControllerLaunch } from '../../src/providers/aws-launch.js';
import { parseAwsDeploymentText } from '../../src/providers/aws-deployment.js';
import { buildUserData } from '../../src/providers/aws-userdata.js';

const example = parseAwsDeploymentText(readFileSync(join(import.meta.dirname, '../../deploy/aws/keel-aws.yml'), 'utf8'));
const launch = {
  securityGroupIds: ['sg-0123456789abcdef0'],
  keel: { kind: 'url' as const, url: 'https://example.org/keel-1.0.0.tar.gz', sha256: 'a'.repeat(64) },
};

describe('the aws provider of keel-aws.yml', () => {
  it('maps each zone to its subnet in the file\'s order, the classes to their types, etcd\'s fixed addresses to the nodes\' endpoints', () => {
    const options = awsProviderOptions(example, launch);
    expect(options).toMatchObject({
      region: 'eu-west-1',
      cluster: 'main',
      subnets: { 'eu-west-1a': 'subnet-0aaaaaaaaaaaaaaa1', 'eu-west-1b': 'subnet-0bbbbbbbbbbbbbbb2', 'eu-west-1c': 'subnet-0ccccccccccccccc3' },
      instanceTypes: { default: 'm6i.large', byClass: { small: 't3.medium', medium: 'm6i.large', large: 'm6i.xlarge' } },
      amiId: 'ami-0123456789abcdef0',
      securityGroupIds: ['sg-0123456789abcdef0'],
      // the plan's name: the controller's policy passes keel-* roles only
      instanceProfileName: 'keel-main-node',
      dataVolume: { sizeGiB: 100 },
    });
    expect(Object.keys(options.subnets)).toEqual(['eu-west-1a', 'eu-west-1b', 'eu-west-1c']);
    expect(options.endpoint).toBeUndefined();
    const nodeOptions = (options.userData as { nodeOptions: AwsUserDataNodeOptions }).nodeOptions;
    expect(nodeOptions).toEqual({
      etcdEndpoints: ['https://10.0.1.10:2379', 'https://10.0.2.10:2379', 'https://10.0.3.10:2379'],
      clusterCidrs: ['10.0.0.0/16'],
      keel: launch.keel,
      nodejs: 'nodesource',
      parameterPrefix: '/keel/main',
    });
    // what the provider adds makes valid user data
    expect(buildUserData({ ...nodeOptions, name: 'node4', cluster: 'main', region: 'eu-west-1', zone: 'eu-west-1b' })).toContain("'/keel/main/nodes/node4/tls/node.key'");
    expect(() => new AwsProvider(options)).not.toThrow();
  });

  it('passes an endpoint, a profile and the provider\'s waits when given', () => {
    const options = awsProviderOptions(example, { ...launch, instanceProfileName: 'keel-other', endpoints: { ec2: 'http://127.0.0.1:9' }, provider: { fenceWaitSeconds: 30, maxAttempts: 2 } });
    expect(options).toMatchObject({ instanceProfileName: 'keel-other', endpoint: 'http://127.0.0.1:9', fenceWaitSeconds: 30, maxAttempts: 2 });
  });

  it('registers nodes in the NLB\'s two target groups when the file has one, and in none without', () => {
    expect(awsProviderOptions(example, launch).targetGroups).toEqual({ names: ['keel-main-rw', 'keel-main-ro'] });
    const withoutNlb = parseAwsDeploymentText(readFileSync(join(import.meta.dirname, '../../deploy/aws/keel-aws.yml'), 'utf8').replace(/^loadBalancer:[\s\S]*$/m, ''));
    expect(awsProviderOptions(withoutNlb, launch).targetGroups).toBeUndefined();
  });

  it('gives new nodes credentials from the file\'s SSM prefix and key, naming the NLB', () => {
    expect(awsNodeCredentialsOptions(example, { ...launch, loadBalancerDnsName: 'keel-main-0123.elb.eu-west-1.amazonaws.com' })).toEqual({
      region: 'eu-west-1',
      cluster: 'main',
      parameterPrefix: '/keel/main',
      kmsKeyId: 'alias/aws/ssm',
      serverNames: ['keel-main-0123.elb.eu-west-1.amazonaws.com'],
    });
  });

  it('reads aws-launch.json, refusing unknown keys and bad ids with KEEL_CONFIG_INVALID', () => {
    expect(parseAwsControllerLaunch(JSON.stringify(launch))).toEqual(launch);
    for (const bad of [{ ...launch, password: 'x' }, { ...launch, securityGroupIds: ['default'] }, { ...launch, keel: { kind: 'url', url: 'http://plain.example/k.tgz', sha256: 'a'.repeat(64) } }]) {
      expect(() => parseAwsControllerLaunch(JSON.stringify(bad))).toThrow(expect.objectContaining({ code: 'KEEL_CONFIG_INVALID' }) as Error);
    }
    expect(() => parseAwsControllerLaunch('{')).toThrow(expect.objectContaining({ code: 'KEEL_CONFIG_UNREADABLE' }) as Error);
  });

  it('refuses a launch without the nodes\' security group, naming the plan\'s group', () => {
    const refused = (() => {
      try {
        awsProviderOptions(example, { ...launch, securityGroupIds: [] });
      } catch (err) {
        return err;
      }
      return null;
    })();
    expect(refused).toBeInstanceOf(KeelError);
    expect((refused as KeelError).code).toBe('KEEL_CONFIG_INVALID');
    expect((refused as KeelError).hint).toContain('keel-main-db');
  });

  it('limits specs to the file\'s classes, and first specs to its zones and class', () => {
    expect(awsProviderLimits(example)).toEqual({ maxNodes: 20, instanceClasses: ['small', 'medium', 'large'] });
    expect(awsControllerDefaults(example)).toEqual({ zones: ['eu-west-1a', 'eu-west-1b', 'eu-west-1c'], instanceClass: 'medium', nodes: 3 });
  });
});
