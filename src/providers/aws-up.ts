/**
 * `keel aws up`: walks the plan (aws-plan.ts) in its order and makes each
 * resource marked `up` that is missing. Every step finds first (by name, or
 * by its keel:* and Name tags) and creates only what it did not find, so a
 * second run creates nothing and a run cut half-way is finished by the next.
 * What the controller makes (the database nodes, their parameters and target
 * registrations) is left to it: it runs on the etcd members `up` launches.
 */
import { KeelError } from '../errors.js';
import { parameterPrefixOf, type AwsDeployment } from './aws-deployment.js';
import { buildEtcdUserData } from './aws-etcd-userdata.js';
import { AwsOperator, type AwsOperatorOptions } from './aws-operator.js';
import { names, planAwsDeployment, ports, type AwsResourceKind, type PlannedResource } from './aws-plan.js';
import { ensureEtcdMember, etcdMemberOptions, ensureIngressRule, ensureNetworkInterface, ensureSecurityGroup } from './aws-up-ec2.js';
import { ensureListener, ensureLoadBalancer, ensureTargetGroup } from './aws-up-elb.js';
import { ensureInstanceProfile, ensurePolicy, ensureRole } from './aws-up-iam.js';
import { ensureParameter } from './aws-up-ssm.js';
import { newUpState, type AwsUpInput, type UpState } from './aws-up-state.js';

export type { AwsUpInput } from './aws-up-state.js';

type Step = (s: UpState, r: PlannedResource) => Promise<void>;

const steps: Partial<Record<AwsResourceKind, Step>> = {
  'security-group': ensureSecurityGroup,
  'security-group-rule': ensureIngressRule,
  'iam-role': ensureRole,
  'iam-policy': ensurePolicy,
  'iam-instance-profile': ensureInstanceProfile,
  'ssm-parameter': ensureParameter,
  'network-interface': ensureNetworkInterface,
  instance: ensureEtcdMember,
  'load-balancer': ensureLoadBalancer,
  'target-group': ensureTargetGroup,
  listener: ensureListener,
};

export interface AwsUpResult {
  /** the NLB's endpoints, or null without one (keel router then) */
  endpoints: { rw: string; ro: string } | null;
  /** the parameter holding the CA's certificate, which clients verify the nodes with */
  caCertificateParameter: string;
}

/** The resources `up` makes, in order: the plan's, without the controller's. */
export function upResources(d: AwsDeployment): PlannedResource[] {
  return planAwsDeployment(d).resources.filter((r) => r.createdBy === 'up');
}

/**
 * What can be refused before any AWS call is: the Keel source, the controller's policy, and an etcd member's
 * user data (its size above all), made once with placeholders for the ids AWS gives later.
 */
export function checkUpInput(input: AwsUpInput): void {
  const d = input.deployment;
  try {
    JSON.parse(input.controllerPolicy);
  } catch {
    throw new KeelError('KEEL_CONFIG_INVALID', "deploy/aws/iam-policy.json (the controller's policy) is not JSON", { hint: 'restore it from the Keel release' });
  }
  buildEtcdUserData(etcdMemberOptions(input, d.etcd.members[0]!, { dbGroupId: 'sg-00000000000000000', loadBalancerDnsName: null }));
}

export async function awsUp(input: AwsUpInput, options: Omit<AwsOperatorOptions, 'region'>): Promise<AwsUpResult> {
  checkUpInput(input);
  const d = input.deployment;
  const op = new AwsOperator({ ...options, region: d.region });
  const state = newUpState(op, input);
  const resources = upResources(d);
  options.out(`keel aws up: cluster ${d.cluster} in ${d.region}, ${resources.length} resources`);
  try {
    for (const r of resources) {
      const step = steps[r.kind];
      // a plan that gains a kind `up` cannot make must not be passed over in silence
      if (step === undefined) throw new KeelError('KEEL_AWS_FAILED', `keel aws up has no step for ${r.kind} ${r.name}`);
      await step(state, r);
    }
  } finally {
    // the values made for parameters not yet written: held in memory only, and not past this run
    state.parameters?.values.clear();
  }
  const lb = d.loadBalancer;
  const endpoints = lb === undefined || state.loadBalancer === null ? null : { rw: `${state.loadBalancer.dnsName}:${lb.rwPort}`, ro: `${state.loadBalancer.dnsName}:${lb.roPort}` };
  const result = { endpoints, caCertificateParameter: resources.find((r) => r.name.endsWith('/tls/ca.crt'))?.name ?? '' };
  for (const line of nextSteps(d, result)) options.out(line);
  return result;
}

function nextSteps(d: AwsDeployment, result: AwsUpResult): string[] {
  const n = names(d);
  const lines = [
    '',
    `Done. The controller on the etcd members launches the ${d.nodes} database nodes (instance profile ${n.nodeRole}, group ${n.dbGroup}),`,
    "gives each its certificate and registers it in the NLB's target groups; the first one bootstraps the cluster, which takes a few minutes.",
  ];
  if (result.endpoints !== null) {
    lines.push(
      'Endpoints (internal NLB; health checks follow the REST API on port ' + ports.api + '):',
      `  rw: postgresql://app@${result.endpoints.rw}/app?sslmode=verify-full`,
      `  ro: postgresql://app@${result.endpoints.ro}/app?sslmode=verify-full`,
    );
  } else {
    lines.push("Endpoints: run `keel router` on each application host (README \"On AWS\"); its etcd client pair is under the prefix's router/tls/.");
  }
  lines.push(
    `The CA's certificate, to verify the nodes: aws ssm get-parameter --name ${result.caCertificateParameter} --query Parameter.Value --output text > ca.crt`,
    `The app role's password stays in SSM (${parameterPrefixOf(d)}/app-password); \`keel aws up\` never prints a secret.`,
  );
  return lines;
}
