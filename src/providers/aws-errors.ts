/**
 * AWS's answers as Keel errors: every error the EC2 API (or the SDK on its
 * way there) throws becomes a KEEL_AWS_* error that names the EC2 action, and
 * the capacity errors the provider answers by trying the next zone are told
 * apart here. Pure.
 */
import { KeelError } from '../errors.js';

/** EC2's error code (the SDK puts it in `name`; a few older shapes in `Code`), or null for something that is not an AWS error. */
export function awsErrorCode(err: unknown): string | null {
  if (typeof err !== 'object' || err === null) return null;
  const e = err as { name?: unknown; Code?: unknown; $metadata?: unknown };
  if (typeof e.Code === 'string') return e.Code;
  return typeof e.name === 'string' && e.name !== 'Error' ? e.name : null;
}

/**
 * Errors that say this zone cannot take this instance now (or ever, for this
 * type), while another zone may: the one case the provider retries itself,
 * elsewhere.
 */
const zoneErrors = new Set(['InsufficientInstanceCapacity', 'Unsupported', 'InsufficientFreeAddressesInSubnet']);

export function isZoneCapacityError(err: unknown): boolean {
  const code = awsErrorCode(err);
  return code !== null && zoneErrors.has(code);
}

/** `ec2:RunInstances` for the SDK's RunInstancesCommand (`ssm:PutParameter` with service 'ssm'): the IAM action a command needs. */
export function iamActionOf(commandName: string, service: AwsService = 'ec2'): string {
  return `${service}:${commandName.replace(/Command$/, '')}`;
}

export type AwsService = 'ec2' | 'ssm' | 'iam' | 'elasticloadbalancing';

/** One call to an AWS service; what it throws becomes a KeelError naming the command's IAM action. */
export async function callAws<C extends object, T>(service: AwsService, command: C, send: (command: C) => Promise<T>): Promise<T> {
  try {
    return await send(command);
  } catch (err) {
    throw awsError(err, iamActionOf(command.constructor.name, service));
  }
}

function messageOf(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  // EC2 appends an encoded authorization failure message: long, and useless without decoding
  return text.replace(/\s*Encoded authorization failure message:\s*\S+/, '').trim();
}

function encodedMessageOf(err: unknown): string | null {
  const text = err instanceof Error ? err.message : String(err);
  return /Encoded authorization failure message:\s*(\S+)/.exec(text)?.[1] ?? null;
}

/** The one mapping of anything a call to EC2 threw; `action` is the IAM action of the call (ec2:RunInstances). */
export function awsError(err: unknown, action: string): KeelError {
  if (err instanceof KeelError) return err;
  const code = awsErrorCode(err);
  const detail = messageOf(err);
  if (code === 'UnauthorizedOperation' || code === 'AccessDenied' || code === 'AccessDeniedException') {
    const passRole = action === 'ec2:RunInstances' ? ' (or iam:PassRole on the instance profile\'s role)' : '';
    const encoded = encodedMessageOf(err);
    const decode = encoded === null ? '' : '; `aws sts decode-authorization-message --encoded-message ...` with the message AWS returned says which one';
    return new KeelError('KEEL_AWS_FORBIDDEN', `AWS refused ${action}${passRole}: the role Keel runs with may not call it (${code})`, {
      hint: `allow ${action}${passRole} in the role's policy, as deploy/aws/iam-policy.json does${decode}`,
      cause: err,
    });
  }
  if (code === 'AuthFailure' || code === 'CredentialsProviderError' || code === 'ExpiredToken' || code === 'RequestExpired') {
    return new KeelError('KEEL_AWS_FAILED', `AWS did not accept the credentials for ${action}: ${detail}`, {
      hint: "give Keel credentials through the SDK's default chain: an instance profile, AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and check the clock)",
      cause: err,
    });
  }
  if (code === 'InvalidAMIID.NotFound' || code === 'InvalidAMIID.Malformed' || code === 'InvalidSubnetID.NotFound' || code === 'InvalidGroup.NotFound' || code === 'InvalidParameterValue') {
    return new KeelError('KEEL_AWS_FAILED', `${action} failed: ${code}: ${detail}`, {
      hint: 'check the AMI, subnets, security groups, instance profile and instance types in the AWS provider options: they must exist in the region',
      cause: err,
    });
  }
  return new KeelError('KEEL_AWS_FAILED', `${action} failed: ${code ?? 'error'}: ${detail}`, { cause: err });
}
