/**
 * The EC2 Query protocol's two halves, as the loopback endpoint speaks them:
 * a form-encoded request (`Action=RunInstances&Version=2016-11-15&
 * TagSpecification.1.Tag.1.Key=...`) read into nested values, and EC2's XML
 * answers (lower-camel element names, lists as `<item>`s) and errors
 * (`<Response><Errors><Error>`), with the HTTP status EC2 gives each code.
 * Pure: strings in, strings out.
 */
import { XMLBuilder } from 'fast-xml-parser';
import { ec2StateCodes, type Ec2Instance, type Ec2StateName } from './ec2-fleet.js';

export const ec2ApiVersion = '2016-11-15';
export const ec2XmlNamespace = `http://ec2.amazonaws.com/doc/${ec2ApiVersion}/`;

/** A request's parameters: `A.1.B=x` becomes { A: [{ B: 'x' }] } (the numbers are 1-based list positions). */
export type QueryValue = string | QueryValue[] | { [key: string]: QueryValue };

export function parseQueryForm(body: string): Record<string, QueryValue> {
  const root: Record<string, unknown> = {};
  for (const [key, value] of new URLSearchParams(body)) {
    const path = key.split('.');
    let node = root;
    for (const [i, segment] of path.entries()) {
      if (i === path.length - 1) {
        node[segment] = value;
      } else {
        const next = node[segment];
        node = (typeof next === 'object' && next !== null ? next : (node[segment] = {})) as Record<string, unknown>;
      }
    }
  }
  return listify(root) as Record<string, QueryValue>;
}

/** Objects whose keys are all positions become arrays, in their order. */
function listify(value: unknown): QueryValue {
  if (typeof value !== 'object' || value === null) return value as string;
  const entries = Object.entries(value as Record<string, unknown>);
  if (entries.length > 0 && entries.every(([k]) => /^[1-9]\d*$/.test(k))) {
    return entries.sort((a, b) => Number(a[0]) - Number(b[0])).map(([, v]) => listify(v));
  }
  return Object.fromEntries(entries.map(([k, v]) => [k, listify(v)]));
}

/** A string parameter, or undefined. */
export function text(params: Record<string, QueryValue> | QueryValue | undefined, key: string): string | undefined {
  const value = typeof params === 'object' && params !== null && !Array.isArray(params) ? params[key] : undefined;
  return typeof value === 'string' ? value : undefined;
}

/** A structure parameter, or an empty one. */
export function struct(params: Record<string, QueryValue> | QueryValue | undefined, key: string): Record<string, QueryValue> {
  const value = typeof params === 'object' && params !== null && !Array.isArray(params) ? params[key] : undefined;
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? value : {};
}

/** A list parameter (`Key.1`, `Key.2`), or an empty one. */
export function list(params: Record<string, QueryValue> | QueryValue | undefined, key: string): QueryValue[] {
  const value = typeof params === 'object' && params !== null && !Array.isArray(params) ? params[key] : undefined;
  return Array.isArray(value) ? value : [];
}

export function texts(params: Record<string, QueryValue> | QueryValue | undefined, key: string): string[] {
  return list(params, key).filter((v): v is string => typeof v === 'string');
}

/**
 * EC2's error codes this endpoint answers, with EC2's HTTP status for each:
 * 4xx for the caller's mistakes and refusals, 5xx for EC2's own trouble
 * (capacity, throttling), which the SDK's standard retry strategy retries.
 */
export const ec2ErrorStatus = {
  AuthFailure: 401,
  IncompleteSignature: 400,
  SignatureDoesNotMatch: 403,
  RequestExpired: 400,
  UnauthorizedOperation: 403,
  InvalidAction: 400,
  NoSuchVersion: 400,
  MissingParameter: 400,
  InvalidParameterValue: 400,
  InvalidParameterCombination: 400,
  InvalidPaginationToken: 400,
  'InvalidInstanceID.NotFound': 400,
  'InvalidInstanceID.Malformed': 400,
  'InvalidAMIID.NotFound': 400,
  'InvalidAMIID.Malformed': 400,
  'InvalidSubnetID.NotFound': 400,
  IdempotentParameterMismatch: 400,
  IncorrectInstanceState: 400,
  Unsupported: 400,
  InsufficientFreeAddressesInSubnet: 400,
  InsufficientInstanceCapacity: 500,
  InternalError: 500,
  RequestLimitExceeded: 503,
  Unavailable: 503,
} as const;

export type Ec2ErrorCode = keyof typeof ec2ErrorStatus;

/** An answer of EC2's error shape, thrown by the endpoint's handlers. */
export class Ec2Fault extends Error {
  constructor(
    readonly code: Ec2ErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'Ec2Fault';
  }

  get status(): number {
    return ec2ErrorStatus[this.code];
  }
}

const builder = new XMLBuilder({ ignoreAttributes: false, attributeNamePrefix: '@_', suppressEmptyNode: false, processEntities: true });
const declaration = '<?xml version="1.0" encoding="UTF-8"?>\n';

/** `<Response><Errors><Error><Code>...</Code><Message>...</Message></Error></Errors><RequestID>...</RequestID></Response>` */
export function errorXml(fault: Ec2Fault, requestId: string): string {
  return declaration + builder.build({ Response: { Errors: { Error: { Code: fault.code, Message: fault.message } }, RequestID: requestId } });
}

/** `<ActionResponse xmlns="...">` with the request id first, as EC2 answers. */
export function responseXml(action: string, requestId: string, body: Record<string, unknown>): string {
  return declaration + builder.build({ [`${action}Response`]: { '@_xmlns': ec2XmlNamespace, requestId, ...body } });
}

/** A list in EC2's XML: `<name><item>...</item>...</name>`. */
function items<T>(values: T[], each: (value: T) => unknown): { item: unknown[] } {
  return { item: values.map(each) };
}

function stateXml(state: Ec2StateName): { code: number; name: Ec2StateName } {
  return { code: ec2StateCodes[state], name: state };
}

/** One instance as DescribeInstances and RunInstances show it (everything but the user data). */
export function instanceXml(instance: Ec2Instance, region: string, accountId: string): Record<string, unknown> {
  const tags = instance.tags.length === 0 ? {} : { tagSet: items(instance.tags, (t) => ({ key: t.key, value: t.value })) };
  const reason = instance.stateReason === null ? {} : { stateReason: instance.stateReason };
  const profile =
    instance.iamInstanceProfile === null
      ? {}
      : { iamInstanceProfile: { arn: instance.iamInstanceProfile.arn ?? `arn:aws:iam::${accountId}:instance-profile/${instance.iamInstanceProfile.name ?? 'unnamed'}`, id: 'AIPAKEELTEST0000000000' } };
  return {
    instanceId: instance.instanceId,
    imageId: instance.imageId,
    instanceState: stateXml(instance.state),
    privateDnsName: `ip-${instance.privateIpAddress.replace(/\./g, '-')}.${region}.compute.internal`,
    dnsName: '',
    amiLaunchIndex: 0,
    instanceType: instance.instanceType,
    launchTime: instance.launchTime.toISOString(),
    placement: { availabilityZone: instance.zone, groupName: '', tenancy: 'default' },
    monitoring: { state: 'disabled' },
    subnetId: instance.subnetId,
    vpcId: instance.vpcId,
    privateIpAddress: instance.privateIpAddress,
    sourceDestCheck: true,
    groupSet: items(instance.securityGroupIds, (id) => ({ groupId: id, groupName: id })),
    ...reason,
    architecture: 'arm64',
    rootDeviceType: 'ebs',
    rootDeviceName: '/dev/xvda',
    blockDeviceMapping: items(instance.volumes, (v) => ({
      deviceName: v.deviceName,
      ebs: { volumeId: v.volumeId, status: instance.state === 'pending' ? 'attaching' : 'attached', attachTime: instance.launchTime.toISOString(), deleteOnTermination: v.deleteOnTermination },
    })),
    virtualizationType: 'hvm',
    ...(instance.clientToken === null ? {} : { clientToken: instance.clientToken }),
    ...tags,
    ...profile,
    hypervisor: 'xen',
    ebsOptimized: true,
    metadataOptions: { state: instance.state === 'pending' ? 'pending' : 'applied', ...instance.metadataOptions },
  };
}

/** A reservation: the instances one RunInstances launched. */
export function reservationXml(reservationId: string, accountId: string, instances: Ec2Instance[], region: string): Record<string, unknown> {
  const groups = instances[0]?.securityGroupIds ?? [];
  return {
    reservationId,
    ownerId: accountId,
    groupSet: items(groups, (id) => ({ groupId: id, groupName: id })),
    instancesSet: items(instances, (i) => instanceXml(i, region, accountId)),
  };
}

/** TerminateInstances' and StopInstances' answer per instance. */
export function stateChangeXml(changes: { instanceId: string; previous: Ec2StateName; current: Ec2StateName }[]): Record<string, unknown> {
  return { instancesSet: items(changes, (c) => ({ instanceId: c.instanceId, currentState: stateXml(c.current), previousState: stateXml(c.previous) })) };
}
