/**
 * The NLB's target groups as the aws provider sees them: every node is a
 * target of both (rw and ro), and the groups' health checks on the REST API
 * (/primary, /replica) decide which node each one sends connections to. The
 * provider registers a node once it runs and deregisters it before it goes.
 * The groups are found by name once, then by ARN.
 */
import {
  DeregisterTargetsCommand,
  DescribeTargetGroupsCommand,
  ElasticLoadBalancingV2Client,
  RegisterTargetsCommand,
} from '@aws-sdk/client-elastic-load-balancing-v2';
import { KeelError } from '../errors.js';
import { awsErrorCode, callAws } from './aws-errors.js';

export interface AwsTargetGroupsOptions {
  region: string;
  /** the groups' names (keel aws up makes `<lb>-rw` and `<lb>-ro`) */
  names: string[];
  maxAttempts?: number | undefined;
  /** an ELB-compatible endpoint (tests); AWS's own by default */
  endpoint?: string | undefined;
}

export class AwsTargetGroups {
  readonly client: ElasticLoadBalancingV2Client;
  private arns: string[] | null = null;

  constructor(private readonly o: AwsTargetGroupsOptions) {
    this.client = new ElasticLoadBalancingV2Client({
      region: o.region,
      retryMode: 'standard',
      maxAttempts: o.maxAttempts ?? 5,
      ...(o.endpoint === undefined ? {} : { endpoint: o.endpoint }),
    });
  }

  async register(instanceIds: string[], port: number): Promise<void> {
    for (const arn of await this.groupArns()) {
      await callAws('elasticloadbalancing', new RegisterTargetsCommand({ TargetGroupArn: arn, Targets: instanceIds.map((Id) => ({ Id, Port: port })) }), (c) => this.client.send(c));
    }
  }

  /** Targets that are not registered (or whose instance is gone) are no error: the end state is the same. */
  async deregister(instanceIds: string[], port: number): Promise<void> {
    for (const arn of await this.groupArns()) {
      try {
        await callAws('elasticloadbalancing', new DeregisterTargetsCommand({ TargetGroupArn: arn, Targets: instanceIds.map((Id) => ({ Id, Port: port })) }), (c) => this.client.send(c));
      } catch (err) {
        if (!(err instanceof KeelError && awsErrorCode(err.cause) === 'InvalidTarget')) throw err;
      }
    }
  }

  private async groupArns(): Promise<string[]> {
    if (this.arns !== null) return this.arns;
    const out = await callAws('elasticloadbalancing', new DescribeTargetGroupsCommand({ Names: this.o.names }), (c) => this.client.send(c));
    const found = new Map((out.TargetGroups ?? []).map((g) => [g.TargetGroupName, g.TargetGroupArn]));
    const missing = this.o.names.filter((n) => found.get(n) === undefined);
    if (missing.length > 0) {
      throw new KeelError('KEEL_AWS_FAILED', `the NLB target groups ${missing.join(', ')} do not exist`, { hint: '`keel aws up` creates them; check keel-aws.yml\'s cluster and region' });
    }
    this.arns = this.o.names.map((n) => found.get(n)!);
    return this.arns;
  }

}
