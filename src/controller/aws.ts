/**
 * What a controller needs to run with the aws provider, read from
 * keel-aws.yml (aws-deployment.ts): the provider's options, its limits and
 * the spec's defaults, and how it gives new nodes their credentials. Pure: a
 * checked deployment and what the file does not hold (aws-launch.json: the
 * nodes' group id, where nodes get Keel) in, values out; no AWS call.
 */
import type { ProviderLimits } from './spec.js';
import { KeelError } from '../errors.js';
import type { AwsDeployment } from '../providers/aws-deployment.js';
import { parameterPrefixOf } from '../providers/aws-deployment.js';
import { names, ports } from '../providers/aws-plan.js';
import type { AwsProviderOptions, AwsUserDataNodeOptions } from '../providers/aws.js';
import type { AwsNodeCredentialsOptions } from '../providers/aws-credentials.js';
import type { AwsControllerLaunchFile } from '../providers/aws-launch.js';

/** What keel-aws.yml does not say (aws-launch.json, which `keel aws up` writes), and for tests the provider's waits. */
export interface AwsControllerLaunch extends AwsControllerLaunchFile {
  /** more for the provider: waits, retries (tests shorten them) */
  provider?: Partial<Pick<AwsProviderOptions, 'maxAttempts' | 'fenceWaitSeconds' | 'destroyWaitSeconds' | 'waiterDelaySeconds' | 'pgPort' | 'apiPort'>>;
}

/** The aws provider of a deployment: a subnet per zone in the file's order, its classes, its AMI, etcd at its fixed addresses. */
export function awsProviderOptions(d: AwsDeployment, launch: AwsControllerLaunch): AwsProviderOptions {
  if (launch.securityGroupIds.length === 0) {
    throw new KeelError('KEEL_CONFIG_INVALID', 'the AWS controller needs the nodes\' security group id', {
      hint: `give the id of ${names(d).dbGroup} (aws ec2 describe-security-groups --filters Name=group-name,Values=${names(d).dbGroup})`,
    });
  }
  const nodeOptions: AwsUserDataNodeOptions = {
    etcdEndpoints: d.etcd.members.map((m) => `https://${m.address}:${ports.etcdClient}`),
    clusterCidrs: [d.vpc.cidr],
    keel: launch.keel,
    nodejs: launch.nodejs ?? 'nodesource',
    parameterPrefix: parameterPrefixOf(d),
  };
  return {
    region: d.region,
    cluster: d.cluster,
    // the file's order is the order a zone without capacity hands over to the next
    subnets: Object.fromEntries(d.zones.map((z) => [z.name, z.subnetId])),
    instanceTypes: { default: d.instanceTypes[d.instanceClass]!, byClass: { ...d.instanceTypes } },
    amiId: d.amiId,
    securityGroupIds: launch.securityGroupIds,
    instanceProfileName: launch.instanceProfileName ?? names(d).nodeRole,
    dataVolume: { sizeGiB: d.dataVolumeGiB },
    userData: { nodeOptions },
    ...(launch.endpoints?.ec2 === undefined ? {} : { endpoint: launch.endpoints.ec2 }),
    // every node is a target of both groups; their health checks (/primary, /replica) pick who serves
    ...(d.loadBalancer === undefined ? {} : { targetGroups: { names: [names(d).rwTargetGroup, names(d).roTargetGroup], ...(launch.endpoints?.elb === undefined ? {} : { endpoint: launch.endpoints.elb }) } }),
    ...launch.provider,
  };
}

/** How the controller gives each node it launches its certificate and token (aws-credentials.ts). */
export function awsNodeCredentialsOptions(d: AwsDeployment, launch: AwsControllerLaunch): AwsNodeCredentialsOptions {
  return {
    region: d.region,
    cluster: d.cluster,
    parameterPrefix: parameterPrefixOf(d),
    kmsKeyId: d.ssm.kmsKeyId,
    serverNames: launch.loadBalancerDnsName === undefined ? [] : [launch.loadBalancerDnsName],
    ...(launch.endpoints?.ssm === undefined ? {} : { endpoint: launch.endpoints.ssm }),
    ...(launch.provider?.maxAttempts === undefined ? {} : { maxAttempts: launch.provider.maxAttempts }),
  };
}

/** Specs beyond this are refused: the file's limit on nodes, and its instance classes. */
export function awsProviderLimits(d: AwsDeployment): ProviderLimits {
  return { maxNodes: 20, instanceClasses: Object.keys(d.instanceTypes) };
}

/** The spec a controller writes first: the deployment's zones, class and number of nodes (it launches them all). */
export function awsControllerDefaults(d: AwsDeployment): { zones: string[]; instanceClass: string; nodes: number } {
  return { zones: d.zones.map((z) => z.name), instanceClass: d.instanceClass, nodes: d.nodes };
}
