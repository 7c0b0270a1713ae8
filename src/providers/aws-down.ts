/**
 * `keel aws down`: the plan in reverse. First the etcd members, the
 * controller's home, so that no controller replaces nodes while they go; then
 * every keel:cluster instance. Before an instance is terminated its volume is
 * snapshotted (an etcd member's root, a node's data), and the snapshot is
 * complete, unless the operator asked for no snapshot. Then the listeners,
 * target groups and NLB, the network interfaces, the instance profiles,
 * policies and roles, and the security groups (retried while AWS still sees
 * what used them). The SSM parameters stay unless asked: they hold the
 * passwords and the CA that a cluster restored from the snapshots needs.
 *
 * Every step finds what is there and deletes it; what is not there is
 * "absent", so down runs twice, or on a half-made cluster, without error.
 */
import { DeleteParametersCommand, GetParametersByPathCommand, type GetParametersByPathCommandOutput } from '@aws-sdk/client-ssm';
import { parameterPrefixOf, type AwsDeployment } from './aws-deployment.js';
import { AwsOperator, type AwsOperatorOptions } from './aws-operator.js';
import { clusterParameters } from './aws-parameters.js';
import { planAwsDeployment } from './aws-plan.js';
import { deleteNetworkInterfaces, deleteSecurityGroup, retireInstances } from './aws-down-ec2.js';
import { deleteLoadBalancing } from './aws-down-elb.js';
import { deleteIamResource } from './aws-down-iam.js';

export interface AwsDownInput {
  deployment: AwsDeployment;
  /** no snapshot before terminating (the data is gone with the instances) */
  deleteSnapshots: boolean;
  /** delete the cluster's SSM parameters too (passwords, keys, the CA) */
  deleteParameters: boolean;
}

/** What down will do, in order, for the confirmation: pure. */
export function describeDown(input: AwsDownInput): string[] {
  const d = input.deployment;
  const snap = input.deleteSnapshots ? 'with NO snapshot (--delete-snapshots)' : 'after a snapshot of each';
  return [
    `keel aws down: cluster ${d.cluster} in ${d.region}, in this order:`,
    `  1. terminate the etcd members (keel:etcd=${d.cluster}) ${snap} root volume: the controller stops with them`,
    `  2. terminate every keel:cluster=${d.cluster} instance (the database nodes) ${snap} data volume`,
    ...(d.loadBalancer === undefined ? [] : ['  3. delete the NLB\'s listeners, its target groups and the NLB']),
    "  4. delete the etcd members' network interfaces, the instance profiles, policies and roles, and the security groups",
    input.deleteParameters
      ? `  5. DELETE every SSM parameter under ${parameterPrefixOf(d)} (passwords, keys, the CA): a snapshot cannot be started again without them`
      : `  5. keep the SSM parameters under ${parameterPrefixOf(d)} (--delete-parameters deletes them)`,
  ];
}

export async function awsDown(input: AwsDownInput, options: Omit<AwsOperatorOptions, 'region'>): Promise<void> {
  const d = input.deployment;
  const op = new AwsOperator({ ...options, region: d.region });
  options.out(`keel aws down: cluster ${d.cluster} in ${d.region}`);
  const snapshot = !input.deleteSnapshots;
  await retireInstances(op, d, { tag: 'keel:etcd', what: 'etcd member', nameTag: 'keel:member', volumes: 'root', snapshot });
  await retireInstances(op, d, { tag: 'keel:cluster', what: 'database node', nameTag: 'keel:node', volumes: 'data', snapshot });
  await deleteLoadBalancing(op, d);
  await deleteNetworkInterfaces(op, d);
  const reversed = [...planAwsDeployment(d).resources].reverse();
  for (const r of reversed) {
    if (r.kind === 'iam-role' || r.kind === 'iam-policy' || r.kind === 'iam-instance-profile') await deleteIamResource(op, r);
  }
  for (const r of reversed) if (r.kind === 'security-group') await deleteSecurityGroup(op, d, r.name);
  if (input.deleteParameters) await deleteParameters(op, d);
  else options.out(`  kept     ssm parameters under ${parameterPrefixOf(d)} (they hold what a cluster restored from the snapshots needs)`);
  options.out(`Done: cluster ${d.cluster} is down${snapshot ? '; its snapshots are tagged keel:cluster=' + d.cluster : ''}.`);
}

/** Pages of a listing, bounded: a token that never ends is an error, not a hang. */
const maxPages = 100;

async function deleteParameters(op: AwsOperator, d: AwsDeployment): Promise<void> {
  const names = new Set(clusterParameters(d).map((p) => p.name));
  // the nodes' own parameters: the controller wrote them, for whichever nodes it launched
  let token: string | undefined;
  for (let page = 0; page < maxPages; page++) {
    const out = await op.send<GetParametersByPathCommandOutput>('ssm', new GetParametersByPathCommand({ Path: `${parameterPrefixOf(d)}/nodes`, Recursive: true, WithDecryption: false, NextToken: token }));
    for (const p of out.Parameters ?? []) if (p.Name !== undefined) names.add(p.Name);
    token = out.NextToken;
    if (token === undefined) break;
  }
  const all = [...names];
  let deleted = 0;
  for (let i = 0; i < all.length; i += 10) {
    const out = await op.send<{ DeletedParameters?: string[] }>('ssm', new DeleteParametersCommand({ Names: all.slice(i, i + 10) }));
    deleted += out.DeletedParameters?.length ?? 0;
  }
  op.step('deleted', 'ssm-parameter', `${deleted} under ${parameterPrefixOf(d)}`, `${all.length - deleted} absent`);
}
