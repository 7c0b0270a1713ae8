/**
 * `keel aws up`'s EC2 steps, each find-or-create: the security groups (found
 * by name in the VPC) and their ingress rules, the etcd members' network
 * interfaces at their fixed addresses and the members themselves (found by
 * their keel:etcd and keel:member tags; never keel:cluster, which the
 * controller may stop and terminate).
 */
import { randomUUID } from 'node:crypto';
import {
  AuthorizeSecurityGroupIngressCommand,
  CreateNetworkInterfaceCommand,
  CreateSecurityGroupCommand,
  DescribeImagesCommand,
  DescribeInstancesCommand,
  DescribeNetworkInterfacesCommand,
  DescribeSecurityGroupsCommand,
  RunInstancesCommand,
  type AuthorizeSecurityGroupIngressCommandOutput,
  type CreateNetworkInterfaceCommandOutput,
  type CreateSecurityGroupCommandOutput,
  type DescribeImagesCommandOutput,
  type DescribeInstancesCommandOutput,
  type DescribeNetworkInterfacesCommandOutput,
  type DescribeSecurityGroupsCommandOutput,
  type IpPermission,
  type RunInstancesCommandInput,
  type RunInstancesCommandOutput,
  type SecurityGroup,
} from '@aws-sdk/client-ec2';
import { KeelError } from '../errors.js';
import { buildEtcdUserData, type AwsEtcdMemberOptions } from './aws-etcd-userdata.js';
import { parameterPrefixOf } from './aws-deployment.js';
import { names, type PlannedResource } from './aws-plan.js';
import { codeOf, keelTags } from './aws-operator.js';
import type { AwsUpInput, UpState } from './aws-up-state.js';

/** The etcd members' tags: `keel:etcd`, so the controller's keel:cluster policy never reaches them. */
export const etcdTags = { cluster: 'keel:etcd', member: 'keel:member' } as const;
/** instance states of a member that is there (or coming back) */
export const liveInstanceStates = ['pending', 'running', 'stopping', 'stopped'];

const isCidr = (source: string): boolean => /^\d{1,3}(\.\d{1,3}){3}\/\d{1,2}$/.test(source);
/** what EC2 takes in a rule's description */
const ruleDescription = (why: string): string => why.replace(/[^A-Za-z0-9 ._\-:/()#,@[\]+=&;{}!$*]/g, '').slice(0, 255);

function rulesOf(permissions: IpPermission[] | undefined) {
  return (permissions ?? [])
    .filter((p) => p.IpProtocol === 'tcp' && p.FromPort === p.ToPort && p.FromPort !== undefined)
    .map((p) => ({ port: p.FromPort!, cidrs: (p.IpRanges ?? []).map((r) => r.CidrIp ?? ''), groupIds: (p.UserIdGroupPairs ?? []).map((g) => g.GroupId ?? '') }));
}

function remember(s: UpState, name: string, group: SecurityGroup): string {
  s.groups.set(name, { id: group.GroupId!, rules: rulesOf(group.IpPermissions) });
  return group.GroupId!;
}

export async function ensureSecurityGroup(s: UpState, r: PlannedResource): Promise<void> {
  const d = s.input.deployment;
  const found = await s.op.send<DescribeSecurityGroupsCommandOutput>(
    'ec2',
    new DescribeSecurityGroupsCommand({ Filters: [{ Name: 'vpc-id', Values: [d.vpc.id] }, { Name: 'group-name', Values: [r.name] }] }),
  );
  const group = found.SecurityGroups?.[0];
  if (group !== undefined) {
    s.op.step('found', r.kind, r.name, remember(s, r.name, group));
    return;
  }
  const created = await s.op.send<CreateSecurityGroupCommandOutput>(
    'ec2',
    new CreateSecurityGroupCommand({
      GroupName: r.name,
      Description: String(r.properties.description),
      VpcId: d.vpc.id,
      TagSpecifications: [{ ResourceType: 'security-group', Tags: keelTags({ 'keel:cluster': d.cluster, Name: r.name }) }],
    }),
  );
  s.groups.set(r.name, { id: created.GroupId!, rules: [] });
  s.op.step('created', r.kind, r.name, created.GroupId!);
}

function groupIdOf(s: UpState, name: string): string {
  const group = s.groups.get(name);
  if (group === undefined) throw new KeelError('KEEL_AWS_FAILED', `the security group ${name} was neither found nor created before a step that needs it`);
  return group.id;
}

export async function ensureIngressRule(s: UpState, r: PlannedResource): Promise<void> {
  const groupName = String(r.properties.group);
  const group = s.groups.get(groupName);
  const groupId = groupIdOf(s, groupName);
  const port = Number(r.properties.port);
  const source = String(r.properties.source);
  const sourceId = isCidr(source) ? null : groupIdOf(s, source);
  const present = group!.rules.some((rule) => rule.port === port && (sourceId === null ? rule.cidrs.includes(source) : rule.groupIds.includes(sourceId)));
  if (present) {
    s.op.step('found', r.kind, r.name);
    return;
  }
  const description = ruleDescription(String(r.properties.why));
  const permission: IpPermission = {
    IpProtocol: 'tcp',
    FromPort: port,
    ToPort: port,
    ...(sourceId === null ? { IpRanges: [{ CidrIp: source, Description: description }] } : { UserIdGroupPairs: [{ GroupId: sourceId, Description: description }] }),
  };
  const out = await s.op.sendUnless<AuthorizeSecurityGroupIngressCommandOutput>(['InvalidPermission.Duplicate'], 'ec2', new AuthorizeSecurityGroupIngressCommand({ GroupId: groupId, IpPermissions: [permission] }));
  s.op.step(out === null ? 'found' : 'created', r.kind, r.name);
}

/** The etcd member a planned `<cluster>-<member>` resource is for. */
function memberOf(s: UpState, r: PlannedResource) {
  const d = s.input.deployment;
  const member = d.etcd.members.find((m) => `${d.cluster}-${m.name}` === r.name);
  if (member === undefined) throw new KeelError('KEEL_AWS_FAILED', `${r.name} is no etcd member of keel-aws.yml`);
  return member;
}

export async function ensureNetworkInterface(s: UpState, r: PlannedResource): Promise<void> {
  const d = s.input.deployment;
  const member = memberOf(s, r);
  const found = await s.op.send<DescribeNetworkInterfacesCommandOutput>(
    'ec2',
    new DescribeNetworkInterfacesCommand({ Filters: [{ Name: `tag:${etcdTags.cluster}`, Values: [d.cluster] }, { Name: 'tag:Name', Values: [r.name] }] }),
  );
  const existing = found.NetworkInterfaces?.[0];
  if (existing !== undefined) {
    s.interfaces.set(r.name, existing.NetworkInterfaceId!);
    s.op.step('found', r.kind, r.name, `${existing.NetworkInterfaceId} ${existing.PrivateIpAddress ?? ''}`.trim());
    return;
  }
  const created = await s.op.send<CreateNetworkInterfaceCommandOutput>(
    'ec2',
    new CreateNetworkInterfaceCommand({
      SubnetId: String(r.properties.subnetId),
      PrivateIpAddress: member.address,
      Groups: [groupIdOf(s, String(r.properties.securityGroup))],
      Description: `Keel ${d.cluster}: etcd member ${member.name} (its fixed address)`,
      TagSpecifications: [{ ResourceType: 'network-interface', Tags: keelTags({ [etcdTags.cluster]: d.cluster, [etcdTags.member]: member.name, Name: r.name }) }],
    }),
  );
  const id = created.NetworkInterface!.NetworkInterfaceId!;
  s.interfaces.set(r.name, id);
  s.op.step('created', r.kind, r.name, `${id} ${member.address}`);
}

/** The AMI's root device: the root volume's size and type go to that device, or EC2 would add a second volume. */
async function rootDeviceName(s: UpState): Promise<string> {
  if (s.rootDeviceName !== null) return s.rootDeviceName;
  const d = s.input.deployment;
  const out = await s.op.send<DescribeImagesCommandOutput>('ec2', new DescribeImagesCommand({ ImageIds: [d.amiId] }));
  const name = out.Images?.[0]?.RootDeviceName;
  if (name === undefined) {
    throw new KeelError('KEEL_AWS_FAILED', `the AMI ${d.amiId} was not found in ${d.region}`, { hint: "put a Debian 12 AMI of the region in keel-aws.yml's amiId" });
  }
  s.rootDeviceName = name;
  return name;
}

/** RunInstances' answer while a new instance profile is not yet seen by EC2 (IAM is eventually consistent). */
function profileNotYetVisible(err: unknown): boolean {
  const code = codeOf(err);
  const message = err instanceof KeelError ? String((err.cause as Error | undefined)?.message ?? '') : '';
  return code === 'InvalidParameterValue' && /iamInstanceProfile|instance profile/i.test(message);
}

export async function ensureEtcdMember(s: UpState, r: PlannedResource): Promise<void> {
  const d = s.input.deployment;
  const member = memberOf(s, r);
  const found = await s.op.send<DescribeInstancesCommandOutput>(
    'ec2',
    new DescribeInstancesCommand({
      Filters: [
        { Name: `tag:${etcdTags.cluster}`, Values: [d.cluster] },
        { Name: `tag:${etcdTags.member}`, Values: [member.name] },
        { Name: 'instance-state-name', Values: liveInstanceStates },
      ],
    }),
  );
  const running = (found.Reservations ?? []).flatMap((x) => x.Instances ?? [])[0];
  if (running !== undefined) {
    s.op.step('found', r.kind, r.name, `${running.InstanceId} ${running.State?.Name ?? ''}`.trim());
    return;
  }
  const input = await etcdRunInput(s, r, member);
  const out = await s.op.retrying(profileNotYetVisible, `the instance profile ${String(r.properties.instanceProfile)} is not usable by EC2 yet`, () =>
    // a new token for each try: a refused request launched nothing; the SDK's own retries within one try reuse it
    s.op.send<RunInstancesCommandOutput>('ec2', new RunInstancesCommand({ ...input, ClientToken: randomUUID() })),
  );
  s.op.step('created', r.kind, r.name, out.Instances?.[0]?.InstanceId ?? '');
}

/** One member's user data options: what it is, where Keel comes from, and what the controller it runs needs. */
export function etcdMemberOptions(input: AwsUpInput, member: { name: string; zone: string; address: string }, made: { dbGroupId: string; loadBalancerDnsName: string | null }): AwsEtcdMemberOptions {
  const d = input.deployment;
  return {
    cluster: d.cluster,
    region: d.region,
    member: { name: member.name, zone: member.zone, address: member.address },
    members: d.etcd.members.map((m) => ({ name: m.name, address: m.address })),
    parameterPrefix: parameterPrefixOf(d),
    keel: input.keel,
    nodejs: input.nodejs,
    deploymentYaml: input.deploymentText,
    controllerLaunch: {
      securityGroupIds: [made.dbGroupId],
      keel: input.keel,
      instanceProfileName: names(d).nodeRole,
      nodejs: input.nodejs,
      // ELB answers it in mixed case at times; certificates and the schema take it in lower case
      ...(made.loadBalancerDnsName === null ? {} : { loadBalancerDnsName: made.loadBalancerDnsName.toLowerCase() }),
    },
  };
}

async function etcdRunInput(s: UpState, r: PlannedResource, member: { name: string; zone: string; address: string }): Promise<Omit<RunInstancesCommandInput, 'ClientToken'>> {
  const d = s.input.deployment;
  const n = names(d);
  const eni = s.interfaces.get(r.name);
  if (eni === undefined) throw new KeelError('KEEL_AWS_FAILED', `the network interface of ${r.name} was neither found nor created before the member`);
  const userData = buildEtcdUserData(etcdMemberOptions(s.input, member, { dbGroupId: groupIdOf(s, n.dbGroup), loadBalancerDnsName: s.loadBalancer?.dnsName ?? null }));
  const tags = keelTags({ [etcdTags.cluster]: d.cluster, [etcdTags.member]: member.name, Name: r.name });
  return {
    ImageId: d.amiId,
    InstanceType: d.etcd.instanceType as RunInstancesCommandInput['InstanceType'],
    MinCount: 1,
    MaxCount: 1,
    // the member's fixed address: the interface every certificate and client names
    NetworkInterfaces: [{ DeviceIndex: 0, NetworkInterfaceId: eni }],
    IamInstanceProfile: { Name: String(r.properties.instanceProfile) },
    // IMDSv2 only: a request forged through the member cannot read the role's credentials
    MetadataOptions: { HttpTokens: 'required', HttpEndpoint: 'enabled' },
    BlockDeviceMappings: [{ DeviceName: await rootDeviceName(s), Ebs: { VolumeType: 'gp3', VolumeSize: d.etcd.rootVolumeGiB, Encrypted: true, DeleteOnTermination: true } }],
    UserData: Buffer.from(userData).toString('base64'),
    TagSpecifications: [
      { ResourceType: 'instance', Tags: tags },
      { ResourceType: 'volume', Tags: tags },
    ],
  };
}
