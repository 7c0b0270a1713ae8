/**
 * What a controller needs to run with the aws provider, read from
 * keel-aws.yml (aws-deployment.ts): the provider's options, its limits and
 * the spec's defaults. Pure: a checked deployment and what the file does not
 * hold (the ids of what was created by hand, where nodes get Keel) in, values
 * out; no AWS call.
 */
import type { ProviderLimits } from './spec.js';
import { KeelError } from '../errors.js';
import type { AwsDeployment } from '../providers/aws-deployment.js';
import { parameterPrefixOf } from '../providers/aws-deployment.js';
import { names, ports } from '../providers/aws-plan.js';
import type { AwsProviderOptions, AwsUserDataNodeOptions } from '../providers/aws.js';

/** What keel-aws.yml does not say: created by hand (the plan's step 4) or chosen by whoever starts the controller. */
export interface AwsControllerLaunch {
  /** the nodes' security group (the plan's keel-<cluster>-db), by id: EC2 launches into ids */
  securityGroupIds: string[];
  /** where a node gets Keel (a release tarball with its sha256, an S3 object, or a path on the AMI) */
  keel: AwsUserDataNodeOptions['keel'];
  /** the nodes' instance profile; default the plan's keel-<cluster>-node */
  instanceProfileName?: string;
  nodejs?: AwsUserDataNodeOptions['nodejs'];
  /** an EC2-compatible endpoint (tests); AWS's own by default */
  endpoint?: string;
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
    ...(launch.endpoint === undefined ? {} : { endpoint: launch.endpoint }),
    ...launch.provider,
  };
}

/** Specs beyond this are refused: the file's limit on nodes, and its instance classes. */
export function awsProviderLimits(d: AwsDeployment): ProviderLimits {
  return { maxNodes: 20, instanceClasses: Object.keys(d.instanceTypes) };
}

/** The spec a controller writes first: the deployment's zones and class. */
export function awsControllerDefaults(d: AwsDeployment): { zones: string[]; instanceClass: string } {
  return { zones: d.zones.map((z) => z.name), instanceClass: d.instanceClass };
}
