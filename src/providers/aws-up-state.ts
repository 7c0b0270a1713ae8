/**
 * What one run of `keel aws up` learns as it walks the plan (the ids AWS gave
 * what it found or created), so that a later step can name an earlier one's
 * resource. Each run learns it again from the start: nothing is kept between
 * runs but what is in AWS.
 */
import type { AwsDeployment } from './aws-deployment.js';
import type { AwsKeelSource } from './aws-etcd-userdata.js';
import type { AwsOperator } from './aws-operator.js';

export interface AwsUpInput {
  deployment: AwsDeployment;
  /** keel-aws.yml's text: the controller on the etcd members reads it */
  deploymentText: string;
  /** where the etcd members and the nodes get Keel */
  keel: AwsKeelSource;
  nodejs: 'nodesource' | 'present';
  /** deploy/aws/iam-policy.json's text: the controller's policy */
  controllerPolicy: string;
}

export interface UpState {
  readonly op: AwsOperator;
  readonly input: AwsUpInput;
  /** security group name -> id, and the ingress rules it has */
  groups: Map<string, { id: string; rules: { port: number; cidrs: string[]; groupIds: string[] }[] }>;
  /** arn:aws:iam::ACCOUNT: the partition and account, from a role's ARN */
  iamArnPrefix: string | null;
  /** network interface name -> id */
  interfaces: Map<string, string>;
  loadBalancer: { arn: string; dnsName: string } | null;
  /** target group name -> ARN */
  targetGroups: Map<string, string>;
  /** the cluster's parameters: which exist, and the values made for the missing ones (dropped once written) */
  parameters: { existing: Set<string>; values: Map<string, string> } | null;
  /** the AMI's root device, once asked */
  rootDeviceName: string | null;
}

export function newUpState(op: AwsOperator, input: AwsUpInput): UpState {
  return { op, input, groups: new Map(), iamArnPrefix: null, interfaces: new Map(), loadBalancer: null, targetGroups: new Map(), parameters: null, rootDeviceName: null };
}
