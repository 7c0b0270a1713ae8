/**
 * What `keel aws up` and `keel aws down` share: the four AWS clients an
 * operator's credentials drive (EC2, IAM, SSM, Elastic Load Balancing), one
 * way to call them (every error becomes a KEEL_AWS_* error naming the IAM
 * action, aws-errors.ts), bounded waits and retries with an injected sleep,
 * and the line printed for each step. Nothing here prints a value: steps are
 * named by kind and name.
 */
import { EC2Client } from '@aws-sdk/client-ec2';
import { ElasticLoadBalancingV2Client } from '@aws-sdk/client-elastic-load-balancing-v2';
import { IAMClient } from '@aws-sdk/client-iam';
import { SSMClient } from '@aws-sdk/client-ssm';
import { KeelError } from '../errors.js';
import { awsError, awsErrorCode } from './aws-errors.js';

/** The operator's policy: what up and down may call (test/unit/aws-operator-policy.test.ts holds it to that). */
export const operatorPolicyFile = 'deploy/aws/operator-policy.json';

export type AwsServicePrefix = 'ec2' | 'iam' | 'ssm' | 'elasticloadbalancing';

export interface AwsOperatorOptions {
  region: string;
  /** one endpoint for every service (tests); otherwise the SDK's own, which honours AWS_ENDPOINT_URL */
  endpoint?: string;
  /** attempts per call under the SDK's standard retries (throttling, 5xx); default 5 */
  maxAttempts?: number;
  /** one line per step, never a value */
  out: (line: string) => void;
  /** the pause between two tries of a bounded wait; tests make it nothing */
  sleep?: (ms: number) => Promise<void>;
  /** the delay between two tries (default 5000 ms) and how many tries a wait gets (default 120: ten minutes) */
  pollDelayMs?: number;
  pollAttempts?: number;
}

/** Steps as printed: what happened to a resource. */
export type StepOutcome = 'created' | 'found' | 'kept' | 'deleted' | 'absent' | 'snapshot' | 'waited';

export class AwsOperator {
  readonly ec2: EC2Client;
  readonly iam: IAMClient;
  readonly ssm: SSMClient;
  readonly elb: ElasticLoadBalancingV2Client;
  private readonly sleep: (ms: number) => Promise<void>;
  readonly pollDelayMs: number;
  readonly pollAttempts: number;

  constructor(readonly o: AwsOperatorOptions) {
    // credentials: the SDK's default chain (environment, AWS_PROFILE, SSO, an instance profile)
    const config = { region: o.region, retryMode: 'standard', maxAttempts: o.maxAttempts ?? 5, ...(o.endpoint === undefined ? {} : { endpoint: o.endpoint }) };
    this.ec2 = new EC2Client(config);
    this.iam = new IAMClient(config);
    this.ssm = new SSMClient(config);
    this.elb = new ElasticLoadBalancingV2Client(config);
    this.sleep = o.sleep ?? ((ms) => new Promise((resolve) => setTimeout(resolve, ms)));
    this.pollDelayMs = o.pollDelayMs ?? 5000;
    this.pollAttempts = o.pollAttempts ?? 120;
  }

  /** One call; what it throws becomes a KeelError naming the IAM action (`iam:CreateRole`). */
  async send<T>(service: AwsServicePrefix, command: { constructor: { name: string } }): Promise<T> {
    const client = { ec2: this.ec2, iam: this.iam, ssm: this.ssm, elasticloadbalancing: this.elb }[service] as unknown as { send(c: unknown): Promise<T> };
    try {
      return await client.send(command);
    } catch (err) {
      throw operatorError(err, `${service}:${command.constructor.name.replace(/Command$/, '')}`);
    }
  }

  /** The same call, where one of `codes` means there is nothing to do: null then. */
  async sendUnless<T>(codes: string[], service: AwsServicePrefix, command: { constructor: { name: string } }): Promise<T | null> {
    try {
      return await this.send<T>(service, command);
    } catch (err) {
      if (codes.includes(codeOf(err) ?? '')) return null;
      throw err;
    }
  }

  /**
   * `attempt` until it returns a value, at most pollAttempts times, pollDelayMs apart; `what` says what is
   * awaited when it never comes. `attempt` returns undefined to try again.
   */
  async poll<T>(what: string, attempt: () => Promise<T | undefined>, lastAnswer: () => string = () => ''): Promise<T> {
    for (let i = 1; i <= this.pollAttempts; i++) {
      const value = await attempt();
      if (value !== undefined) return value;
      if (i < this.pollAttempts) await this.sleep(this.pollDelayMs);
    }
    const last = lastAnswer();
    throw new KeelError('KEEL_AWS_FAILED', `${what}: not so after ${this.pollAttempts} tries ${this.pollDelayMs / 1000} s apart${last === '' ? '' : ` (last answer: ${last})`}`, {
      hint: 'run the command again: it goes on from where it stopped',
    });
  }

  /** `action` again while it fails with an error `retryable` accepts (AWS not caught up yet), within the poll bound. */
  async retrying<T>(retryable: (err: unknown) => boolean, what: string, action: () => Promise<T>): Promise<T> {
    let last = '';
    const attempt = async (): Promise<{ value: T } | undefined> => {
      try {
        return { value: await action() };
      } catch (err) {
        if (!retryable(err)) throw err;
        last = codeOf(err) ?? 'error';
        return undefined;
      }
    };
    return (await this.poll(what, attempt, () => last)).value;
  }

  step(outcome: StepOutcome, kind: string, name: string, detail = ''): void {
    this.o.out(`  ${outcome.padEnd(8)} ${kind} ${name}${detail === '' ? '' : ` (${detail})`}`);
  }
}

/** AWS's error code under a KEEL_AWS_* error, or of the error itself. */
export function codeOf(err: unknown): string | null {
  return err instanceof KeelError ? awsErrorCode(err.cause) : awsErrorCode(err);
}

/** aws-errors.ts's mapping, with the operator's policy in the hint of a refusal. */
export function operatorError(err: unknown, action: string): KeelError {
  const mapped = awsError(err, action);
  if (mapped.code !== 'KEEL_AWS_FORBIDDEN') return mapped;
  return new KeelError('KEEL_AWS_FORBIDDEN', mapped.message, {
    hint: `allow ${action} to the credentials running keel aws up/down: ${operatorPolicyFile} lists every action they call`,
    cause: err,
  });
}

/** The tags Keel puts on what up makes; `keel:etcd` on the etcd members' things, never `keel:cluster` there. */
export function keelTags(pairs: Record<string, string>): { Key: string; Value: string }[] {
  return Object.entries(pairs).map(([Key, Value]) => ({ Key, Value }));
}
