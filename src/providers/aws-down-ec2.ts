/**
 * `keel aws down`'s EC2 steps: instances retired (their volumes snapshotted
 * and the snapshots complete, then terminated and awaited), the etcd
 * members' network interfaces and the security groups deleted, each retried
 * within a bound while AWS still sees what used them.
 */
import {
  CreateSnapshotCommand,
  DeleteNetworkInterfaceCommand,
  DeleteSecurityGroupCommand,
  DescribeInstancesCommand,
  DescribeNetworkInterfacesCommand,
  DescribeSecurityGroupsCommand,
  DescribeSnapshotsCommand,
  TerminateInstancesCommand,
  type CreateSnapshotCommandOutput,
  type DescribeInstancesCommandOutput,
  type DescribeNetworkInterfacesCommandOutput,
  type DescribeSecurityGroupsCommandOutput,
  type DescribeSnapshotsCommandOutput,
  type Instance,
} from '@aws-sdk/client-ec2';
import { KeelError } from '../errors.js';
import type { AwsDeployment } from './aws-deployment.js';
import { codeOf, keelTags, type AwsOperator } from './aws-operator.js';
import { etcdTags, liveInstanceStates } from './aws-up-ec2.js';

export interface RetireOptions {
  /** the tag whose value is the cluster: keel:etcd or keel:cluster */
  tag: string;
  what: string;
  /** the tag naming the member or node */
  nameTag: string;
  /** which volumes hold what a restore needs: the root (etcd's data) or the others (a node's data volume) */
  volumes: 'root' | 'data';
  snapshot: boolean;
}

const maxPages = 100;

async function instancesTagged(op: AwsOperator, tag: string, cluster: string, states: string[]): Promise<Instance[]> {
  const found: Instance[] = [];
  let token: string | undefined;
  for (let page = 0; page < maxPages; page++) {
    const out = await op.send<DescribeInstancesCommandOutput>(
      'ec2',
      new DescribeInstancesCommand({ Filters: [{ Name: `tag:${tag}`, Values: [cluster] }, { Name: 'instance-state-name', Values: states }], NextToken: token }),
    );
    for (const reservation of out.Reservations ?? []) found.push(...(reservation.Instances ?? []));
    token = out.NextToken;
    if (token === undefined) break;
  }
  return found;
}

const tagOf = (i: Instance, key: string): string => i.Tags?.find((t) => t.Key === key)?.Value ?? i.InstanceId ?? '?';

function volumesOf(i: Instance, which: 'root' | 'data'): string[] {
  return (i.BlockDeviceMappings ?? [])
    .filter((m) => (m.DeviceName === i.RootDeviceName) === (which === 'root'))
    .flatMap((m) => (m.Ebs?.VolumeId === undefined ? [] : [m.Ebs.VolumeId]));
}

/** A snapshot of the volume taken by an earlier down, or a new one; its id. */
async function snapshotOf(op: AwsOperator, d: AwsDeployment, volumeId: string, owner: string, which: string): Promise<string> {
  const earlier = await op.send<DescribeSnapshotsCommandOutput>(
    'ec2',
    new DescribeSnapshotsCommand({
      OwnerIds: ['self'],
      Filters: [{ Name: 'volume-id', Values: [volumeId] }, { Name: 'tag:keel:cluster', Values: [d.cluster] }, { Name: 'status', Values: ['pending', 'completed'] }],
    }),
  );
  const found = earlier.Snapshots?.[0]?.SnapshotId;
  if (found !== undefined) {
    op.step('found', `snapshot of ${which} volume of`, owner, `${found} of ${volumeId}, from an earlier run`);
    return found;
  }
  const created = await op.send<CreateSnapshotCommandOutput>(
    'ec2',
    new CreateSnapshotCommand({
      VolumeId: volumeId,
      Description: `Keel ${d.cluster}: ${owner}'s ${which} volume, before keel aws down`,
      TagSpecifications: [{ ResourceType: 'snapshot', Tags: keelTags({ 'keel:cluster': d.cluster, 'keel:node': owner, Name: `${d.cluster}-${owner}-${which}` }) }],
    }),
  );
  op.step('snapshot', `${which} volume of`, owner, `${created.SnapshotId} of ${volumeId}`);
  return created.SnapshotId!;
}

async function waitForSnapshots(op: AwsOperator, ids: string[]): Promise<void> {
  if (ids.length === 0) return;
  await op.poll(`the snapshots ${ids.join(', ')} are complete`, async () => {
    const out = await op.send<DescribeSnapshotsCommandOutput>('ec2', new DescribeSnapshotsCommand({ SnapshotIds: ids }));
    const failed = (out.Snapshots ?? []).filter((x) => x.State === 'error');
    if (failed.length > 0) {
      throw new KeelError('KEEL_AWS_FAILED', `the snapshot ${failed.map((x) => x.SnapshotId).join(', ')} failed: nothing was terminated`, {
        hint: 'delete the failed snapshot and run keel aws down again, or give --delete-snapshots to go without',
      });
    }
    return (out.Snapshots ?? []).length === ids.length && (out.Snapshots ?? []).every((x) => x.State === 'completed') ? true : undefined;
  });
}

/** Snapshots (unless told not to), then terminates the instances tagged `tag`=cluster, and waits until they are gone. */
export async function retireInstances(op: AwsOperator, d: AwsDeployment, o: RetireOptions): Promise<void> {
  const instances = await instancesTagged(op, o.tag, d.cluster, liveInstanceStates);
  if (instances.length === 0) {
    op.step('absent', 'instance', `${o.tag}=${d.cluster}`, `no ${o.what}`);
  } else {
    if (o.snapshot) {
      const snapshots: string[] = [];
      for (const i of instances) {
        for (const volume of volumesOf(i, o.volumes)) snapshots.push(await snapshotOf(op, d, volume, tagOf(i, o.nameTag), o.volumes));
      }
      // complete before the volumes go with their instances
      await waitForSnapshots(op, snapshots);
      if (snapshots.length > 0) op.step('waited', 'snapshots', `of every ${o.what}`, `${snapshots.length} complete`);
    }
    const ids = instances.map((i) => i.InstanceId!);
    await op.sendUnless(['InvalidInstanceID.NotFound'], 'ec2', new TerminateInstancesCommand({ InstanceIds: ids }));
    for (const i of instances) op.step('deleted', 'instance', tagOf(i, o.nameTag), `${i.InstanceId} ${o.what}, terminating`);
  }
  // and any still on their way out from an earlier run
  await op.poll(`every ${o.what} of ${d.cluster} is terminated`, async () => {
    const left = await instancesTagged(op, o.tag, d.cluster, [...liveInstanceStates, 'shutting-down']);
    return left.length === 0 ? true : undefined;
  });
}

export async function deleteNetworkInterfaces(op: AwsOperator, d: AwsDeployment): Promise<void> {
  const out = await op.send<DescribeNetworkInterfacesCommandOutput>('ec2', new DescribeNetworkInterfacesCommand({ Filters: [{ Name: `tag:${etcdTags.cluster}`, Values: [d.cluster] }] }));
  const interfaces = out.NetworkInterfaces ?? [];
  if (interfaces.length === 0) op.step('absent', 'network-interface', `${etcdTags.cluster}=${d.cluster}`);
  for (const eni of interfaces) {
    const id = eni.NetworkInterfaceId!;
    const name = eni.TagSet?.find((t) => t.Key === 'Name')?.Value ?? id;
    // an interface of an instance just terminated stays in use for a while
    await op.retrying((err) => codeOf(err) === 'InvalidNetworkInterface.InUse', `${name} (${id}) can be deleted`, () =>
      op.sendUnless(['InvalidNetworkInterfaceID.NotFound'], 'ec2', new DeleteNetworkInterfaceCommand({ NetworkInterfaceId: id })),
    );
    op.step('deleted', 'network-interface', name, id);
  }
}

export async function deleteSecurityGroup(op: AwsOperator, d: AwsDeployment, name: string): Promise<void> {
  const out = await op.send<DescribeSecurityGroupsCommandOutput>(
    'ec2',
    new DescribeSecurityGroupsCommand({ Filters: [{ Name: 'vpc-id', Values: [d.vpc.id] }, { Name: 'group-name', Values: [name] }] }),
  );
  const id = out.SecurityGroups?.[0]?.GroupId;
  if (id === undefined) {
    op.step('absent', 'security-group', name);
    return;
  }
  // the interfaces of terminated instances and of the NLB take a while to go: until then the group is in use
  await op.retrying((err) => codeOf(err) === 'DependencyViolation', `${name} (${id}) is no longer in use`, () =>
    op.sendUnless(['InvalidGroup.NotFound'], 'ec2', new DeleteSecurityGroupCommand({ GroupId: id })),
  );
  op.step('deleted', 'security-group', name, `${id}, with its rules`);
}
