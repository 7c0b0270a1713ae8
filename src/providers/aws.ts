/**
 * The aws provider: each node is an EC2 instance in its zone's subnet, with a
 * gp3 data volume, tagged keel:cluster, keel:node and keel:zone; the instance's
 * user data (cloud-init) installs and starts its guard and agent. The
 * provider finds its nodes by those tags alone, so any controller of the
 * cluster sees the same ones.
 *
 * Throttling and transient failures are the SDK's standard retry strategy's
 * (`maxAttempts`); the one retry of Keel's own is the next zone, when a zone
 * has no capacity for the instance type. Every AWS error becomes a KEEL_AWS_*
 * error (aws-errors.ts). IAM: deploy/aws/iam-policy.json lists exactly what
 * this file calls.
 */
import { createHash, randomUUID } from 'node:crypto';
import {
  DescribeInstancesCommand,
  EC2Client,
  paginateDescribeInstances,
  RunInstancesCommand,
  StopInstancesCommand,
  TerminateInstancesCommand,
  waitUntilInstanceRunning,
  waitUntilInstanceStopped,
  waitUntilInstanceTerminated,
  type Instance,
  type InstanceStateName,
  type RunInstancesCommandInput,
  type Tag,
} from '@aws-sdk/client-ec2';
import { KeelError } from '../errors.js';
import type { NodeCredentials } from './aws-credentials.js';
import { awsError, awsErrorCode, callAws, iamActionOf, isZoneCapacityError } from './aws-errors.js';
import { AwsTargetGroups } from './aws-targets.js';
import { buildUserData, type AwsNodeOptionsInput } from './aws-userdata.js';
import type { FenceResult, NodeInfo, NodeSpec, Provider } from './types.js';

export const awsTags = { cluster: 'keel:cluster', node: 'keel:node', zone: 'keel:zone', instanceClass: 'keel:class' } as const;

/** What the user data is made for: one node, in the zone it is launched in (maybe not the one asked for). */
export interface AwsNodeLaunch {
  cluster: string;
  region: string;
  name: string;
  zone: string;
  instanceClass: string | null;
  instanceType: string;
}

export interface AwsProviderOptions {
  region: string;
  cluster: string;
  /** Keel zone -> subnet id; the order of the keys is the order zones are tried in when one has no capacity */
  subnets: Record<string, string>;
  /** EC2 instance type per instance class, and the one for a class not in the map (or none) */
  instanceTypes: { default: string; byClass?: Record<string, string> };
  amiId: string;
  securityGroupIds: string[];
  /** the IAM instance profile the nodes run with (RunInstances passes its role: iam:PassRole) */
  instanceProfileName: string;
  /** the data volume: gp3, encrypted, deleted with the instance (destroy), kept when stopped (fence) */
  dataVolume: { sizeGiB: number; deviceName?: string };
  /**
   * cloud-init user data, plain text (the provider encodes it); or the node options of
   * buildUserData() (aws-userdata.ts) but for what the provider knows: each node's
   * name, cluster, region, zone and ports
   */
  userData: string | ((node: AwsNodeLaunch) => string) | { nodeOptions: AwsUserDataNodeOptions };
  pgPort?: number;
  apiPort?: number;
  /** an EC2-compatible endpoint (a loopback server in tests); AWS's own by default */
  endpoint?: string;
  /** attempts per call under the SDK's standard retry strategy (throttling, 5xx, timeouts); default 5 */
  maxAttempts?: number;
  /** how long fence waits for the instance to be stopped; default 300 */
  fenceWaitSeconds?: number;
  /** how long destroy waits for the instance to be terminated; default 600 */
  destroyWaitSeconds?: number;
  /** the waiters' polling delays (the SDK's backoff between them); default 5 and 30 */
  waiterDelaySeconds?: { min: number; max: number };
  /** the nonce of a creation without `creationId` (tests inject it) */
  randomId?: () => string;
  /**
   * gives each launched node its certificate and token, which name the address EC2 picked
   * (aws-credentials.ts); without it the nodes' parameters are written by someone else
   */
  credentials?: NodeCredentials;
  /** the NLB's target groups (by name) every node is registered in once running; health checks pick who serves */
  targetGroups?: { names: string[]; endpoint?: string };
}

/** What buildUserData() needs that the provider does not know itself. */
export type AwsUserDataNodeOptions = Omit<AwsNodeOptionsInput, 'name' | 'cluster' | 'region' | 'zone' | 'postgresPort' | 'apiPort'>;

const defaultDeviceName = '/dev/sdf';
/** EC2's limit on user data, before base64 */
const userDataMaxBytes = 16 * 1024;
/** states of an instance that is there and may come back, by Keel's two states */
const liveStates: Record<Exclude<InstanceStateName, 'terminated'>, NodeInfo['state']> = {
  // on its way up: counted as a node, so the controller does not replace it while it boots
  pending: 'running',
  running: 'running',
  stopping: 'stopped',
  stopped: 'stopped',
  'shutting-down': 'stopped',
};

/**
 * EC2's idempotency token of one attempt: the same creation retried in the
 * same zone gets the same instance back, never a second one. The zone is in
 * it because an attempt in the next zone is another request.
 */
export function clientToken(cluster: string, node: string, nonce: string, zone: string): string {
  return createHash('sha256').update([cluster, node, nonce, zone].join('\0')).digest('hex').slice(0, 64);
}

/** The zones to try for `zone`: it first, then the ones after it in the map's order, then the ones before. */
export function zoneOrder(zones: string[], zone: string): string[] {
  const at = zones.indexOf(zone);
  return at < 0 ? [] : [...zones.slice(at), ...zones.slice(0, at)];
}

function tagOf(instance: Instance, key: string): string | undefined {
  return instance.Tags?.find((t) => t.Key === key)?.Value;
}

export class AwsProvider implements Provider {
  readonly client: EC2Client;
  private readonly pgPort: number;
  private readonly apiPort: number;
  private readonly waiterDelay: { minDelay: number; maxDelay: number };
  private readonly targets: AwsTargetGroups | null;

  constructor(private readonly o: AwsProviderOptions) {
    const problems: string[] = [];
    if (Object.keys(o.subnets).length === 0) problems.push('subnets: give at least one zone and its subnet');
    if (!Number.isInteger(o.dataVolume.sizeGiB) || o.dataVolume.sizeGiB < 1 || o.dataVolume.sizeGiB > 16384) problems.push('dataVolume.sizeGiB: a gp3 volume holds 1 to 16384 GiB');
    if (o.securityGroupIds.length === 0) problems.push('securityGroupIds: give at least one');
    if (problems.length > 0) throw new KeelError('KEEL_CONFIG_INVALID', `the AWS provider options are invalid: ${problems.join('; ')}`);
    this.pgPort = o.pgPort ?? 5432;
    this.apiPort = o.apiPort ?? 8008;
    this.waiterDelay = { minDelay: o.waiterDelaySeconds?.min ?? 5, maxDelay: o.waiterDelaySeconds?.max ?? 30 };
    // credentials: the SDK's default chain (instance profile, environment, shared files)
    this.client = new EC2Client({
      region: o.region,
      retryMode: 'standard',
      maxAttempts: o.maxAttempts ?? 5,
      ...(o.endpoint === undefined ? {} : { endpoint: o.endpoint }),
    });
    this.targets = o.targetGroups === undefined || o.targetGroups.names.length === 0 ? null : new AwsTargetGroups({ region: o.region, names: o.targetGroups.names, maxAttempts: o.maxAttempts, endpoint: o.targetGroups.endpoint });
  }

  async list(cluster: string): Promise<NodeInfo[]> {
    this.sameCluster(cluster);
    const nodes: NodeInfo[] = [];
    for (const instance of await this.instances([])) {
      const node = this.nodeInfo(instance);
      if (node !== null) nodes.push(node);
    }
    return nodes;
  }

  async create(cluster: string, spec: NodeSpec): Promise<NodeInfo> {
    this.sameCluster(cluster);
    const zones = zoneOrder(Object.keys(this.o.subnets), spec.zone);
    if (zones.length === 0) {
      throw new KeelError('KEEL_AWS_FAILED', `${spec.name} cannot be created in zone ${spec.zone}: the AWS provider has no subnet there`, {
        hint: `add a subnet for ${spec.zone} to the provider's subnets (known zones: ${Object.keys(this.o.subnets).join(', ')})`,
      });
    }
    const nonce = spec.creationId ?? (this.o.randomId ?? randomUUID)();
    const refusals: string[] = [];
    for (const zone of zones) {
      try {
        const out = await this.call(new RunInstancesCommand(this.runInput(spec, zone, nonce)), (c) => this.client.send(c));
        const instance = out.Instances?.[0];
        if (instance === undefined) throw new KeelError('KEEL_AWS_FAILED', `ec2:RunInstances returned no instance for ${spec.name}`);
        await this.afterLaunch(spec.name, instance);
        return this.launched(spec.name, zone, instance);
      } catch (err) {
        // another zone may have capacity for this type; anything else is not a zone's problem
        if (!(err instanceof KeelError && isZoneCapacityError(err.cause))) throw err;
        refusals.push(`${zone}: ${awsErrorCode(err.cause)}`);
      }
    }
    throw new KeelError('KEEL_AWS_CAPACITY', `no zone could launch ${spec.name} (${this.instanceTypeOf(spec.instanceClass)}): ${refusals.join(', ')}`);
  }

  async destroy(name: string): Promise<void> {
    const ids = (await this.instances([{ Name: `tag:${awsTags.node}`, Values: [name] }])).flatMap((i) => (i.InstanceId === undefined ? [] : [i.InstanceId]));
    // nothing left: destroyed already
    if (ids.length === 0) return;
    // out of the NLB first, so no new connection is sent to a node on its way out
    await this.targets?.deregister(ids, this.pgPort);
    await this.call(new TerminateInstancesCommand({ InstanceIds: ids }), (c) => this.client.send(c));
    const maxWaitTime = this.o.destroyWaitSeconds ?? 600;
    try {
      await waitUntilInstanceTerminated({ client: this.client, maxWaitTime, ...this.waiterDelay }, { InstanceIds: ids });
    } catch {
      const states = await this.statesOf(ids);
      if (!states.every((s) => s.state === 'terminated' || s.state === 'absent')) {
        throw new KeelError('KEEL_AWS_FAILED', `${name} (${describeStates(states)}) is not terminated ${maxWaitTime} s after ec2:TerminateInstances`, {
          hint: 'look at the instance in the EC2 console; destroy it again, or terminate it there',
        });
      }
    }
    await this.o.credentials?.forget(name, ids);
  }

  /**
   * A launched instance gets its credentials, then joins the NLB once running. If it cannot get them it
   * is terminated: it would wait at boot for parameters that never come.
   */
  private async afterLaunch(name: string, instance: Instance): Promise<void> {
    const id = instance.InstanceId;
    if (id === undefined) throw new KeelError('KEEL_AWS_FAILED', `ec2:RunInstances returned an instance without an id for ${name}`);
    const credentials = this.o.credentials;
    if (credentials !== undefined) {
      try {
        const address = instance.PrivateIpAddress;
        if (address === undefined) throw new KeelError('KEEL_AWS_FAILED', `ec2:RunInstances returned ${id} without a private address`);
        await credentials.issue({ name, instanceId: id, address });
      } catch (err) {
        await this.call(new TerminateInstancesCommand({ InstanceIds: [id] }), (c) => this.client.send(c)).catch(() => undefined);
        throw err;
      }
    }
    if (this.targets !== null) {
      // an NLB takes only running instances as targets
      await waitUntilInstanceRunning({ client: this.client, maxWaitTime: this.o.destroyWaitSeconds ?? 600, ...this.waiterDelay }, { InstanceIds: [id] }).catch(() => undefined);
      await this.targets.register([id], this.pgPort);
    }
  }

  async fence(name: string): Promise<FenceResult> {
    const ids = (await this.instances([{ Name: `tag:${awsTags.node}`, Values: [name] }])).flatMap((i) => (i.InstanceId === undefined ? [] : [i.InstanceId]));
    if (ids.length === 0) return { confirmed: true, detail: `no instance of ${name} is left in the cluster` };
    try {
      // Force: the instance gets no chance to flush or shut down cleanly, which is the point: it must stop writing now
      await this.call(new StopInstancesCommand({ InstanceIds: ids, Force: true }), (c) => this.client.send(c));
    } catch (err) {
      // gone, or in a state it cannot be stopped from (shutting down, pending): what the wait sees decides
      const code = err instanceof KeelError ? awsErrorCode(err.cause) : null;
      if (code !== 'InvalidInstanceID.NotFound' && code !== 'IncorrectInstanceState') throw err;
    }
    const maxWaitTime = this.o.fenceWaitSeconds ?? 300;
    try {
      await waitUntilInstanceStopped({ client: this.client, maxWaitTime, ...this.waiterDelay }, { InstanceIds: ids });
      return { confirmed: true, detail: `${ids.join(', ')} stopped (forced)` };
    } catch {
      // the waiter gives up on a terminated instance, or at its deadline: look once more at what is there
      const states = await this.statesOf(ids);
      const confirmed = states.every((s) => s.state === 'stopped' || s.state === 'terminated' || s.state === 'absent');
      return confirmed
        ? { confirmed, detail: `${describeStates(states)} after a forced stop` }
        : { confirmed, detail: `${describeStates(states)} ${maxWaitTime} s after a forced stop: it may still write` };
    }
  }

  /** Every instance of the cluster not terminated, with more filters; all pages. */
  private async instances(filters: { Name: string; Values: string[] }[]): Promise<Instance[]> {
    const input = {
      Filters: [
        { Name: `tag:${awsTags.cluster}`, Values: [this.o.cluster] },
        { Name: 'instance-state-name', Values: Object.keys(liveStates) },
        ...filters,
      ],
    };
    const found: Instance[] = [];
    try {
      for await (const page of paginateDescribeInstances({ client: this.client }, input)) {
        for (const reservation of page.Reservations ?? []) found.push(...(reservation.Instances ?? []));
      }
    } catch (err) {
      throw awsError(err, iamActionOf(DescribeInstancesCommand.name));
    }
    return found;
  }

  /** Each instance's state now; an instance EC2 no longer knows is absent. */
  private async statesOf(ids: string[]): Promise<{ id: string; state: string }[]> {
    let instances: Instance[];
    try {
      const out = await this.call(new DescribeInstancesCommand({ InstanceIds: ids }), (c) => this.client.send(c));
      instances = (out.Reservations ?? []).flatMap((r) => r.Instances ?? []);
    } catch (err) {
      if (err instanceof KeelError && awsErrorCode(err.cause) === 'InvalidInstanceID.NotFound') instances = [];
      else throw err;
    }
    return ids.map((id) => ({ id, state: instances.find((i) => i.InstanceId === id)?.State?.Name ?? 'absent' }));
  }

  private runInput(spec: NodeSpec, zone: string, nonce: string): RunInstancesCommandInput {
    const instanceType = this.instanceTypeOf(spec.instanceClass);
    const tags: Tag[] = [
      { Key: awsTags.cluster, Value: this.o.cluster },
      { Key: awsTags.node, Value: spec.name },
      { Key: awsTags.zone, Value: zone },
      { Key: 'Name', Value: `${this.o.cluster}-${spec.name}` },
      ...(spec.instanceClass === undefined ? [] : [{ Key: awsTags.instanceClass, Value: spec.instanceClass }]),
    ];
    const launch: AwsNodeLaunch = { cluster: this.o.cluster, region: this.o.region, name: spec.name, zone, instanceClass: spec.instanceClass ?? null, instanceType };
    const userData = this.userDataOf(launch);
    if (Buffer.byteLength(userData) > userDataMaxBytes) {
      throw new KeelError('KEEL_AWS_FAILED', `the user data of ${spec.name} is ${Buffer.byteLength(userData)} bytes; EC2 takes at most ${userDataMaxBytes}`, {
        hint: 'keep large files out of the user data: have cloud-init fetch them',
      });
    }
    return {
      ImageId: this.o.amiId,
      InstanceType: instanceType as RunInstancesCommandInput['InstanceType'],
      MinCount: 1,
      MaxCount: 1,
      SubnetId: this.o.subnets[zone],
      SecurityGroupIds: this.o.securityGroupIds,
      IamInstanceProfile: { Name: this.o.instanceProfileName },
      UserData: Buffer.from(userData).toString('base64'),
      ClientToken: clientToken(this.o.cluster, spec.name, nonce, zone),
      // IMDSv2 only: a request forged through the node cannot read the role's credentials
      MetadataOptions: { HttpTokens: 'required', HttpEndpoint: 'enabled' },
      BlockDeviceMappings: [
        {
          DeviceName: this.o.dataVolume.deviceName ?? defaultDeviceName,
          Ebs: { VolumeType: 'gp3', VolumeSize: this.o.dataVolume.sizeGiB, Encrypted: true, DeleteOnTermination: true },
        },
      ],
      TagSpecifications: [
        { ResourceType: 'instance', Tags: tags },
        { ResourceType: 'volume', Tags: tags },
      ],
    };
  }

  /** The user data of one launch: the zone in it is the one tried, so node.yml names the zone the node is in. */
  private userDataOf(launch: AwsNodeLaunch): string {
    const given = this.o.userData;
    if (typeof given === 'string') return given;
    if (typeof given === 'function') return given(launch);
    return buildUserData({ ...given.nodeOptions, name: launch.name, cluster: launch.cluster, region: launch.region, zone: launch.zone, postgresPort: this.pgPort, apiPort: this.apiPort });
  }

  private instanceTypeOf(instanceClass: string | undefined): string {
    return (instanceClass === undefined ? undefined : this.o.instanceTypes.byClass?.[instanceClass]) ?? this.o.instanceTypes.default;
  }

  /** A node of this cluster from its instance; null for an instance without a node tag. */
  private nodeInfo(instance: Instance): NodeInfo | null {
    const name = tagOf(instance, awsTags.node);
    const stateName = instance.State?.Name;
    if (name === undefined || stateName === undefined || stateName === 'terminated') return null;
    const zone = tagOf(instance, awsTags.zone) ?? instance.Placement?.AvailabilityZone ?? '';
    return this.launched(name, zone, instance);
  }

  private launched(name: string, zone: string, instance: Instance): NodeInfo {
    const state = instance.State?.Name;
    // an instance EC2 has just accepted has its private address already; without one it cannot be reached yet
    const ip = instance.PrivateIpAddress ?? '';
    return {
      name,
      zone,
      state: state === undefined ? 'running' : state === 'terminated' ? 'stopped' : liveStates[state],
      agentPid: null,
      pgAddress: `${ip}:${this.pgPort}`,
      apiAddress: `${ip}:${this.apiPort}`,
    };
  }

  private sameCluster(cluster: string): void {
    if (cluster !== this.o.cluster) {
      throw new KeelError('KEEL_CONFIG_INVALID', `this AWS provider serves cluster ${this.o.cluster}, not ${cluster}`, { hint: 'give the provider the cluster name the controller runs for' });
    }
  }

  /** One EC2 call; what it throws becomes a KeelError naming the command's IAM action. */
  private call<C extends object, T>(command: C, send: (command: C) => Promise<T>): Promise<T> {
    return callAws('ec2', command, send);
  }
}

function describeStates(states: { id: string; state: string }[]): string {
  return states.map((s) => `${s.id} ${s.state}`).join(', ');
}
