/**
 * The instances of the loopback EC2 endpoint (ec2-endpoint.ts), as values:
 * the state table, DescribeInstances' filters, and private addresses from a
 * subnet's range. Pure: no timers, no sockets; the endpoint drives it.
 */

export type Ec2StateName = 'pending' | 'running' | 'stopping' | 'stopped' | 'shutting-down' | 'terminated';

/** EC2's numeric state codes, as DescribeInstances answers them (instanceState.code). */
export const ec2StateCodes: Record<Ec2StateName, number> = {
  pending: 0,
  running: 16,
  'shutting-down': 32,
  terminated: 48,
  stopping: 64,
  stopped: 80,
};

/** What moves an instance: a request (stop, terminate) or the end of one (booted, halted, gone). */
export type Ec2Event = 'booted' | 'stop' | 'halted' | 'terminate' | 'gone';

/**
 * Every transition the endpoint makes; a pair that is not here is refused
 * with IncorrectInstanceState (for a request) or ignored (for the end of
 * one that another request overtook).
 */
export const ec2Transitions: readonly { from: Ec2StateName; event: Ec2Event; to: Ec2StateName; comment: string }[] = [
  { from: 'pending', event: 'booted', to: 'running', comment: 'the boot delay passed' },
  { from: 'running', event: 'stop', to: 'stopping', comment: 'StopInstances' },
  { from: 'stopping', event: 'stop', to: 'stopping', comment: 'a second (forced) stop of a stopping instance is accepted' },
  { from: 'stopped', event: 'stop', to: 'stopped', comment: 'stopped already: EC2 answers with the state it has' },
  { from: 'stopping', event: 'halted', to: 'stopped', comment: 'the stop delay passed and onStop finished' },
  { from: 'pending', event: 'terminate', to: 'shutting-down', comment: 'TerminateInstances of an instance still booting' },
  { from: 'running', event: 'terminate', to: 'shutting-down', comment: 'TerminateInstances' },
  { from: 'stopping', event: 'terminate', to: 'shutting-down', comment: 'TerminateInstances overtakes a stop' },
  { from: 'stopped', event: 'terminate', to: 'shutting-down', comment: 'TerminateInstances of a stopped instance' },
  { from: 'shutting-down', event: 'terminate', to: 'shutting-down', comment: 'terminating already' },
  { from: 'terminated', event: 'terminate', to: 'terminated', comment: 'terminated already: EC2 answers with the state it has' },
  { from: 'shutting-down', event: 'gone', to: 'terminated', comment: 'the terminate delay passed and onTerminate finished' },
];

/** The state after `event`, or null when the table has no such transition. */
export function nextState(from: Ec2StateName, event: Ec2Event): Ec2StateName | null {
  return ec2Transitions.find((t) => t.from === from && t.event === event)?.to ?? null;
}

export interface Ec2Tag {
  key: string;
  value: string;
}

export interface Ec2Volume {
  deviceName: string;
  volumeId: string;
  volumeType: string;
  sizeGiB: number;
  encrypted: boolean;
  deleteOnTermination: boolean;
  tags: Ec2Tag[];
}

/** One instance as the endpoint keeps it; DescribeInstances shows all of it but the user data. */
export interface Ec2Instance {
  instanceId: string;
  reservationId: string;
  imageId: string;
  instanceType: string;
  subnetId: string;
  vpcId: string;
  zone: string;
  privateIpAddress: string;
  state: Ec2StateName;
  /** why the state last changed, as EC2's stateReason (code and message) */
  stateReason: { code: string; message: string } | null;
  launchTime: Date;
  clientToken: string | null;
  tags: Ec2Tag[];
  securityGroupIds: string[];
  iamInstanceProfile: { name?: string; arn?: string } | null;
  metadataOptions: { httpTokens: string; httpEndpoint: string; httpPutResponseHopLimit: number };
  volumes: Ec2Volume[];
  /** the user data, decoded from base64 (EC2 keeps the text it was given) */
  userData: string;
  /** when it became terminated (for how long terminated instances stay visible) */
  terminatedAtMs: number | null;
}

export interface Ec2Filter {
  name: string;
  values: string[];
}

/** EC2's filter values: `*` any run of characters, `?` one, `\` escapes either. */
export function filterValueMatches(pattern: string, value: string): boolean {
  let regex = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === '\\' && i + 1 < pattern.length) regex += escapeRegex(pattern[++i]!);
    else if (c === '*') regex += '.*';
    else if (c === '?') regex += '.';
    else regex += escapeRegex(c);
  }
  return new RegExp(`^${regex}$`, 's').test(value);
}

function escapeRegex(c: string): string {
  return c.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** The filters this endpoint knows; another name is EC2's InvalidParameterValue. */
export const knownFilterNames = ['instance-state-name', 'instance-id', 'availability-zone', 'subnet-id', 'instance-type', 'private-ip-address', 'tag-key', 'client-token'] as const;

export function isKnownFilter(name: string): boolean {
  return name.startsWith('tag:') || (knownFilterNames as readonly string[]).includes(name);
}

/** Whether the instance passes one filter (any of its values); the filters of a request must all pass. */
export function matchesFilter(instance: Ec2Instance, filter: Ec2Filter): boolean {
  const any = (value: string | null): boolean => value !== null && filter.values.some((pattern) => filterValueMatches(pattern, value));
  if (filter.name.startsWith('tag:')) {
    const key = filter.name.slice(4);
    return instance.tags.some((t) => t.key === key && any(t.value));
  }
  switch (filter.name) {
    case 'instance-state-name':
      return any(instance.state);
    case 'instance-id':
      return any(instance.instanceId);
    case 'availability-zone':
      return any(instance.zone);
    case 'subnet-id':
      return any(instance.subnetId);
    case 'instance-type':
      return any(instance.instanceType);
    case 'private-ip-address':
      return any(instance.privateIpAddress);
    case 'tag-key':
      return instance.tags.some((t) => any(t.key));
    case 'client-token':
      return any(instance.clientToken);
    default:
      return false;
  }
}

function ipToNumber(ip: string): number {
  return ip.split('.').reduce((n, octet) => n * 256 + Number(octet), 0);
}

function numberToIp(n: number): string {
  return [24, 16, 8, 0].map((shift) => Math.floor(n / 2 ** shift) % 256).join('.');
}

/** A subnet's usable addresses, as EC2 hands them out: the first four and the last one are AWS's own. */
export function subnetRange(cidr: string): { first: number; last: number } {
  const match = /^(\d{1,3}(?:\.\d{1,3}){3})\/(\d{1,2})$/.exec(cidr);
  if (match === null) throw new RangeError(`${cidr} is not an IPv4 CIDR`);
  const bits = Number(match[2]);
  if (bits < 16 || bits > 28) throw new RangeError(`${cidr}: EC2 subnets are /16 to /28`);
  const size = 2 ** (32 - bits);
  const network = Math.floor(ipToNumber(match[1]!) / size) * size;
  return { first: network + 4, last: network + size - 2 };
}

/** The lowest free address of the subnet, or null when every one is taken. */
export function nextFreeAddress(cidr: string, taken: ReadonlySet<string>): string | null {
  const { first, last } = subnetRange(cidr);
  for (let n = first; n <= last; n++) {
    const ip = numberToIp(n);
    if (!taken.has(ip)) return ip;
  }
  return null;
}
