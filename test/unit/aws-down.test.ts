/**
 * `keel aws down` against a test account (aws-account.ts): the etcd members
 * go first, then the database nodes, each volume snapshotted (and the
 * snapshot complete) before its instance is terminated; then the NLB, the
 * interfaces, IAM and the groups; parameters and snapshots stay unless told.
 * Twice, or on a half-made cluster, is fine.
 */
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { KeelError } from '../../src/errors.js';
import { awsDown, describeDown, type AwsDownInput } from '../../src/providers/aws-down.js';
import { awsUp } from '../../src/providers/aws-up.js';
import { fakeCredentials, operatorOptions, upInput, withAccount } from './aws-up-fixtures.js';

beforeAll(() => {
  Object.assign(process.env, fakeCredentials);
});
const { account, start, reset } = withAccount();
beforeEach(start);
afterEach(reset);

const input = upInput();

async function up(): Promise<void> {
  await awsUp(input, operatorOptions([]));
}

async function down(flags: Partial<AwsDownInput> = {}): Promise<string[]> {
  const lines: string[] = [];
  await awsDown({ deployment: input.deployment, deleteSnapshots: false, deleteParameters: false, ...flags }, operatorOptions(lines));
  return lines;
}

/** A cluster as the controller leaves it: up's resources and three database nodes, one with its own parameters. */
async function runningCluster(): Promise<string[]> {
  await up();
  const a = account();
  a.parameters.set('/keel/main/nodes/node1/api-token', { value: 'node1-token-from-the-controller', type: 'SecureString' });
  return [a.addDatabaseNode('main', 'node1', 'eu-west-1a'), a.addDatabaseNode('main', 'node2', 'eu-west-1b'), a.addDatabaseNode('main', 'node3', 'eu-west-1c')];
}

function expectNothingLeftButParametersAndSnapshots(): void {
  const a = account();
  expect([...a.instances.values()].every((i) => i.state === 'terminated')).toBe(true);
  expect(a.interfaces.size).toBe(0);
  expect(a.groups.size).toBe(0);
  expect([a.roles.size, a.policies.size, a.profiles.size]).toEqual([0, 0, 0]);
  expect([a.loadBalancers.size, a.targetGroups.size, a.listeners.size]).toEqual([0, 0, 0]);
}

describe('keel aws down', () => {
  it('snapshots then terminates the etcd members first, then the nodes, then the rest in reverse; keeps snapshots and parameters', async () => {
    const nodes = await runningCluster();
    const a = account();
    const etcd = [...a.instances].filter(([, i]) => i.tags['keel:etcd'] === 'main').map(([id]) => id);
    const volumeOf = (id: string, device: string) => a.instances.get(id)!.volumes.find((v) => v.device === device)!.volumeId;
    const etcdRoots = etcd.map((id) => volumeOf(id, '/dev/xvda'));
    const nodeData = nodes.map((id) => volumeOf(id, '/dev/sdf'));
    const parameters = [...a.parameters.keys()];
    const from = a.calls.length;

    await down();

    const calls = a.calls.slice(from);
    const at = (action: string, where: (input: any) => boolean = () => true) => calls.findIndex((c) => c.action === action && where(c.input));
    const last = (action: string) => calls.map((c) => c.action).lastIndexOf(action);
    const terminateEtcd = at('ec2:TerminateInstances', (i) => i.InstanceIds.includes(etcd[0]));
    const terminateNodes = at('ec2:TerminateInstances', (i) => i.InstanceIds.includes(nodes[0]));
    expect([...calls.filter((c) => c.action === 'ec2:TerminateInstances').map((c) => c.input.InstanceIds)]).toEqual([etcd, nodes]);
    for (const volume of etcdRoots) expect(at('ec2:CreateSnapshot', (i) => i.VolumeId === volume)).toBeLessThan(terminateEtcd);
    for (const volume of nodeData) {
      expect(at('ec2:CreateSnapshot', (i) => i.VolumeId === volume)).toBeGreaterThan(terminateEtcd);
      expect(at('ec2:CreateSnapshot', (i) => i.VolumeId === volume)).toBeLessThan(terminateNodes);
    }
    // the nodes' root volumes hold nothing a restore needs
    expect(calls.filter((c) => c.action === 'ec2:CreateSnapshot')).toHaveLength(6);
    // a snapshot is complete before its volume goes with the instance
    expect(at('ec2:DescribeSnapshots', (i) => i.SnapshotIds !== undefined)).toBeLessThan(terminateEtcd);
    expect(last('elasticloadbalancing:DeleteListener')).toBeGreaterThan(terminateNodes);
    expect(last('elasticloadbalancing:DeleteListener')).toBeLessThan(at('elasticloadbalancing:DeleteTargetGroup'));
    expect(last('elasticloadbalancing:DeleteTargetGroup')).toBeLessThan(at('elasticloadbalancing:DeleteLoadBalancer'));
    expect(at('elasticloadbalancing:DeleteLoadBalancer')).toBeLessThan(at('ec2:DeleteNetworkInterface'));
    const iam = ['iam:DeleteInstanceProfile', 'iam:DeletePolicy', 'iam:DeleteRolePolicy', 'iam:DeleteRole'];
    expect(last('ec2:DeleteNetworkInterface')).toBeLessThan(Math.min(...iam.map((x) => at(x))));
    expect(Math.max(...iam.map((x) => last(x)))).toBeLessThan(at('ec2:DeleteSecurityGroup'));
    for (const role of ['keel-main-etcd', 'keel-main-node']) {
      const roleGoes = at('iam:DeleteRole', (i) => i.RoleName === role);
      expect(at('iam:DeleteInstanceProfile', (i) => i.InstanceProfileName === role)).toBeLessThan(roleGoes);
      expect(at('iam:DeleteRolePolicy', (i) => i.RoleName === role)).toBeLessThan(roleGoes);
    }
    expect(at('iam:DetachRolePolicy')).toBeLessThan(at('iam:DeletePolicy'));
    expect(at('iam:DeletePolicy')).toBeLessThan(at('iam:DeleteRole', (i) => i.RoleName === 'keel-main-etcd'));

    expectNothingLeftButParametersAndSnapshots();
    expect([...a.parameters.keys()]).toEqual(parameters);
    const snapshots = [...a.snapshots.values()];
    expect(snapshots.map((s) => s.volumeId).sort()).toEqual([...etcdRoots, ...nodeData].sort());
    for (const s of snapshots) {
      expect(s.tags['keel:cluster']).toBe('main');
      expect(['etcd1', 'etcd2', 'etcd3', 'node1', 'node2', 'node3']).toContain(s.tags['keel:node']);
      expect(s.description).toContain('Keel main');
    }
  });

  it('twice is fine: the second run finds nothing and deletes nothing', async () => {
    await runningCluster();
    await down();
    const from = account().calls.length;
    const lines = await down();
    expect(account().actions(from).filter((a) => /:(Delete|Terminate|CreateSnapshot|Remove|Detach)/.test(a))).toEqual([]);
    expect(lines.filter((l) => /^ {2}deleted/.test(l))).toEqual([]);
    expect(lines.some((l) => /^ {2}absent/.test(l))).toBe(true);
  });

  it('--delete-snapshots terminates without a snapshot; --delete-parameters deletes every parameter, the nodes\' own too', async () => {
    await runningCluster();
    await down({ deleteSnapshots: true, deleteParameters: true });
    const a = account();
    expect(a.snapshots.size).toBe(0);
    expect(a.calls.some((c) => c.action === 'ec2:CreateSnapshot')).toBe(false);
    expect(a.parameters.size).toBe(0);
    expectNothingLeftButParametersAndSnapshots();
  });

  it('removes what a half-made cluster has', async () => {
    account().failOn('ec2:RunInstances', 1, 'UnauthorizedOperation');
    await expect(up()).rejects.toMatchObject({ code: 'KEEL_AWS_FORBIDDEN', message: expect.stringContaining('ec2:RunInstances') });
    expect(account().interfaces.size).toBe(3);
    account().clearFaults();
    await down();
    expectNothingLeftButParametersAndSnapshots();
  });

  it('waits for what AWS lets go slowly: an interface of a terminated member, a group still in use', async () => {
    await up();
    const lines = await down();
    const deletes = account().calls.filter((c) => c.action === 'ec2:DeleteNetworkInterface');
    // each interface is refused once while AWS detaches it, then deleted
    expect(deletes).toHaveLength(6);
    expect(lines.filter((l) => l.includes('deleted  network-interface'))).toHaveLength(3);
  });

  it('stops on a refusal, naming the action, with nothing of the next steps done', async () => {
    await runningCluster();
    account().failOn('ec2:TerminateInstances', 2);
    const err = await down().catch((e: unknown) => e as KeelError);
    expect(err).toBeInstanceOf(KeelError);
    expect((err as KeelError).code).toBe('KEEL_AWS_FORBIDDEN');
    expect((err as KeelError).message).toContain('ec2:TerminateInstances');
    expect(account().loadBalancers.size).toBe(1);
    account().clearFaults();
    await down();
    expectNothingLeftButParametersAndSnapshots();
  });

  it('says what it will do, and what it keeps, before it does it', () => {
    const kept = describeDown({ deployment: input.deployment, deleteSnapshots: false, deleteParameters: false }).join('\n');
    expect(kept).toMatch(/1\. terminate the etcd members.*snapshot/);
    expect(kept).toContain('keep the SSM parameters under /keel/main');
    const gone = describeDown({ deployment: input.deployment, deleteSnapshots: true, deleteParameters: true }).join('\n');
    expect(gone).toContain('NO snapshot');
    expect(gone).toContain('DELETE every SSM parameter');
  });
});
