/**
 * The test account's EC2 (aws-account.ts): security groups and their rules,
 * network interfaces, instances with their volumes, snapshots, one image.
 * A group used by an interface, an instance or another group's rule cannot go
 * (DependencyViolation); an interface of a terminated instance stays in use
 * for a try; a new instance profile is refused by RunInstances for a few.
 */
import {
  AuthorizeSecurityGroupIngressCommand,
  CreateNetworkInterfaceCommand,
  CreateSecurityGroupCommand,
  CreateSnapshotCommand,
  DeleteNetworkInterfaceCommand,
  DeleteSecurityGroupCommand,
  DescribeImagesCommand,
  DescribeInstancesCommand,
  DescribeNetworkInterfacesCommand,
  DescribeSecurityGroupsCommand,
  DescribeSnapshotsCommand,
  RunInstancesCommand,
  TerminateInstancesCommand,
} from '@aws-sdk/client-ec2';
import { fail, matches, tagList, tagsOf, type FakeAccount, type Handlers } from './aws-account.js';

export const imageId = 'ami-0123456789abcdef0';

const tagsFor = (specs: { ResourceType?: string; Tags?: { Key?: string; Value?: string }[] }[] | undefined, type: string) => tagsOf(specs?.find((s) => s.ResourceType === type)?.Tags);

function groupInUse(a: FakeAccount, id: string): boolean {
  const byInterface = [...a.interfaces.values()].some((e) => e.groupIds.includes(id));
  const byInstance = [...a.instances.values()].some((i) => i.state !== 'terminated' && i.groupIds.includes(id));
  const byRule = [...a.groups].some(([other, g]) => other !== id && g.rules.some((r) => r.groupId === id));
  const byLoadBalancer = [...a.loadBalancers.values()].some((lb) => lb.groups.includes(id));
  return byInterface || byInstance || byRule || byLoadBalancer;
}

export function ec2Handlers(a: FakeAccount): Handlers {
  const groupName = (id: string) => a.groups.get(id)?.name ?? fail('InvalidGroup.NotFound');
  return [
    [
      DescribeSecurityGroupsCommand,
      (input) => ({
        SecurityGroups: [...a.groups]
          .filter(([, g]) => matches(input.Filters, (f) => ({ 'vpc-id': g.vpcId, 'group-name': g.name })[f] ?? (f.startsWith('tag:') ? g.tags[f.slice(4)] : undefined)))
          .map(([id, g]) => ({
            GroupId: id,
            GroupName: g.name,
            VpcId: g.vpcId,
            Tags: tagList(g.tags),
            IpPermissions: g.rules.map((r) => ({
              IpProtocol: 'tcp',
              FromPort: r.port,
              ToPort: r.port,
              IpRanges: r.cidr === undefined ? [] : [{ CidrIp: r.cidr }],
              UserIdGroupPairs: r.groupId === undefined ? [] : [{ GroupId: r.groupId }],
            })),
          })),
      }),
    ],
    [
      CreateSecurityGroupCommand,
      (input) => {
        if ([...a.groups.values()].some((g) => g.name === input.GroupName && g.vpcId === input.VpcId)) fail('InvalidGroup.Duplicate');
        const id = a.id('sg');
        a.groups.set(id, { name: input.GroupName, vpcId: input.VpcId, description: input.Description, tags: tagsFor(input.TagSpecifications, 'security-group'), rules: [] });
        a.created('security-group', input.GroupName);
        return { GroupId: id };
      },
    ],
    [
      AuthorizeSecurityGroupIngressCommand,
      (input) => {
        const group = a.groups.get(input.GroupId) ?? fail('InvalidGroup.NotFound');
        for (const p of input.IpPermissions) {
          const cidr = p.IpRanges?.[0]?.CidrIp as string | undefined;
          const groupId = p.UserIdGroupPairs?.[0]?.GroupId as string | undefined;
          if (groupId !== undefined) groupName(groupId);
          if (group.rules.some((r) => r.port === p.FromPort && r.cidr === cidr && r.groupId === groupId)) fail('InvalidPermission.Duplicate');
          group.rules.push({ port: p.FromPort, ...(cidr === undefined ? {} : { cidr }), ...(groupId === undefined ? {} : { groupId }) });
          a.created('security-group-rule', `${group.name} tcp/${p.FromPort} from ${cidr ?? groupName(groupId!)}`);
        }
        return { Return: true };
      },
    ],
    [
      DeleteSecurityGroupCommand,
      (input) => {
        if (!a.groups.has(input.GroupId)) fail('InvalidGroup.NotFound');
        if (groupInUse(a, input.GroupId)) fail('DependencyViolation', `resource ${input.GroupId} has a dependent object`);
        a.groups.delete(input.GroupId);
        return {};
      },
    ],
    [
      DescribeNetworkInterfacesCommand,
      (input) => ({
        NetworkInterfaces: [...a.interfaces]
          .filter(([, e]) => matches(input.Filters, (f) => (f.startsWith('tag:') ? e.tags[f.slice(4)] : undefined)))
          .map(([id, e]) => ({ NetworkInterfaceId: id, PrivateIpAddress: e.address, SubnetId: e.subnetId, TagSet: tagList(e.tags), Status: e.attachedTo === null ? 'available' : 'in-use' })),
      }),
    ],
    [
      CreateNetworkInterfaceCommand,
      (input) => {
        if ([...a.interfaces.values()].some((e) => e.address === input.PrivateIpAddress)) fail('InvalidIPAddress.InUse');
        for (const g of input.Groups) groupName(g);
        const id = a.id('eni');
        const tags = tagsFor(input.TagSpecifications, 'network-interface');
        a.interfaces.set(id, { subnetId: input.SubnetId, address: input.PrivateIpAddress, groupIds: input.Groups, tags, attachedTo: null, busyTries: 0 });
        a.created('network-interface', tags.Name ?? id);
        return { NetworkInterface: { NetworkInterfaceId: id, PrivateIpAddress: input.PrivateIpAddress } };
      },
    ],
    [
      DeleteNetworkInterfaceCommand,
      (input) => {
        const eni = a.interfaces.get(input.NetworkInterfaceId) ?? fail('InvalidNetworkInterfaceID.NotFound');
        if (eni.attachedTo !== null || eni.busyTries > 0) {
          eni.busyTries = Math.max(0, eni.busyTries - 1);
          fail('InvalidNetworkInterface.InUse', `Network interface '${input.NetworkInterfaceId}' is currently in use.`);
        }
        a.interfaces.delete(input.NetworkInterfaceId);
        return {};
      },
    ],
    [DescribeImagesCommand, (input) => ({ Images: input.ImageIds.includes(imageId) ? [{ ImageId: imageId, RootDeviceName: '/dev/xvda' }] : [] })],
    [
      RunInstancesCommand,
      (input) => {
        const profile = a.profiles.get(input.IamInstanceProfile?.Name);
        if (profile === undefined || profile.roles.length === 0 || profile.refusalsLeft > 0) {
          if (profile !== undefined) profile.refusalsLeft -= 1;
          fail('InvalidParameterValue', `Value (${input.IamInstanceProfile?.Name}) for parameter iamInstanceProfile.name is invalid. Invalid IAM Instance Profile name`);
        }
        if (input.ImageId !== imageId) fail('InvalidAMIID.NotFound');
        const eniId = input.NetworkInterfaces?.[0]?.NetworkInterfaceId as string | undefined;
        const eni = eniId === undefined ? undefined : (a.interfaces.get(eniId) ?? fail('InvalidNetworkInterfaceID.NotFound'));
        if (eni !== undefined && eni.attachedTo !== null) fail('InvalidNetworkInterface.InUse');
        const id = a.id('i');
        const volumes = (input.BlockDeviceMappings ?? []).map((m: any) => {
          const volumeId = a.id('vol');
          a.volumes.set(volumeId, { sizeGiB: m.Ebs.VolumeSize, encrypted: m.Ebs.Encrypted === true });
          return { device: m.DeviceName, volumeId };
        });
        const tags = tagsFor(input.TagSpecifications, 'instance');
        if (eni !== undefined) eni.attachedTo = id;
        a.instances.set(id, { state: 'pending', tags, rootDeviceName: '/dev/xvda', volumes, groupIds: eni?.groupIds ?? [], interfaceId: eniId ?? null, profile: input.IamInstanceProfile.Name, userData: Buffer.from(input.UserData, 'base64').toString() });
        a.created('instance', tags.Name ?? id);
        return { Instances: [{ InstanceId: id, State: { Name: 'pending' }, PrivateIpAddress: eni?.address }] };
      },
    ],
    [
      DescribeInstancesCommand,
      (input) => {
        const found = [...a.instances]
          .filter(([id]) => input.InstanceIds === undefined || input.InstanceIds.includes(id))
          .filter(([, i]) => matches(input.Filters, (f) => (f === 'instance-state-name' ? i.state : f.startsWith('tag:') ? i.tags[f.slice(4)] : undefined)))
          .map(([id, i]) => ({
            InstanceId: id,
            State: { Name: i.state },
            Tags: tagList(i.tags),
            RootDeviceName: i.rootDeviceName,
            BlockDeviceMappings: i.state === 'terminated' ? [] : i.volumes.map((v) => ({ DeviceName: v.device, Ebs: { VolumeId: v.volumeId } })),
          }));
        return { Reservations: found.length === 0 ? [] : [{ Instances: found }] };
      },
    ],
    [
      TerminateInstancesCommand,
      (input) => {
        for (const id of input.InstanceIds) {
          const i = a.instances.get(id) ?? fail('InvalidInstanceID.NotFound');
          i.state = 'terminated';
          for (const v of i.volumes) a.volumes.delete(v.volumeId);
          if (i.interfaceId !== null) {
            const eni = a.interfaces.get(i.interfaceId);
            // detached, and busy for one more try: AWS takes a while to let it go
            if (eni !== undefined) Object.assign(eni, { attachedTo: null, busyTries: 1 });
          }
        }
        return { TerminatingInstances: input.InstanceIds.map((InstanceId: string) => ({ InstanceId, CurrentState: { Name: 'shutting-down' } })) };
      },
    ],
    [
      CreateSnapshotCommand,
      (input) => {
        if (!a.volumes.has(input.VolumeId)) fail('InvalidVolume.NotFound');
        const id = a.id('snap');
        a.snapshots.set(id, { volumeId: input.VolumeId, tags: tagsFor(input.TagSpecifications, 'snapshot'), description: input.Description, state: 'pending' });
        return { SnapshotId: id, State: 'pending' };
      },
    ],
    [
      DescribeSnapshotsCommand,
      (input) => {
        const found = [...a.snapshots]
          .filter(([id]) => input.SnapshotIds === undefined || input.SnapshotIds.includes(id))
          .filter(([, s]) => matches(input.Filters, (f) => ({ 'volume-id': s.volumeId, status: s.state })[f] ?? (f.startsWith('tag:') ? s.tags[f.slice(4)] : undefined)))
          .map(([id, s]) => ({ SnapshotId: id, VolumeId: s.volumeId, State: s.state, Tags: tagList(s.tags), Description: s.description }));
        // a snapshot completes between two looks
        for (const [, s] of a.snapshots) s.state = 'completed';
        return { Snapshots: found };
      },
    ],
  ];
}
