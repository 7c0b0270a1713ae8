/**
 * `keel aws up`'s IAM steps, each find-or-create by name: the roles EC2
 * assumes, their inline policies (the plan's documents), the controller's
 * managed policy (deploy/aws/iam-policy.json) attached to the etcd members'
 * role, and the instance profiles carrying the roles. IAM is eventually
 * consistent: a profile just made may be refused by RunInstances for a few
 * seconds, which the etcd step retries (aws-up-ec2.ts).
 */
import {
  AddRoleToInstanceProfileCommand,
  AttachRolePolicyCommand,
  CreateInstanceProfileCommand,
  CreatePolicyCommand,
  CreateRoleCommand,
  GetInstanceProfileCommand,
  GetPolicyCommand,
  GetRoleCommand,
  GetRolePolicyCommand,
  ListAttachedRolePoliciesCommand,
  PutRolePolicyCommand,
  type CreateInstanceProfileCommandOutput,
  type CreatePolicyCommandOutput,
  type CreateRoleCommandOutput,
  type GetInstanceProfileCommandOutput,
  type GetPolicyCommandOutput,
  type GetRoleCommandOutput,
  type GetRolePolicyCommandOutput,
  type ListAttachedRolePoliciesCommandOutput,
} from '@aws-sdk/client-iam';
import { KeelError } from '../errors.js';
import { keelTags } from './aws-operator.js';
import type { PlannedResource } from './aws-plan.js';
import type { UpState } from './aws-up-state.js';

const absent = ['NoSuchEntity', 'NoSuchEntityException'];

function tags(s: UpState) {
  return keelTags({ 'keel:cluster': s.input.deployment.cluster });
}

/** arn:aws:iam::123456789012 from arn:aws:iam::123456789012:role/NAME */
function learnArnPrefix(s: UpState, roleArn: string | undefined): void {
  const prefix = roleArn === undefined ? null : /^(arn:[^:]+:iam::\d+):/.exec(roleArn)?.[1];
  if (prefix !== undefined && prefix !== null) s.iamArnPrefix = prefix;
}

export async function ensureRole(s: UpState, r: PlannedResource): Promise<void> {
  const found = await s.op.sendUnless<GetRoleCommandOutput>(absent, 'iam', new GetRoleCommand({ RoleName: r.name }));
  if (found !== null) {
    learnArnPrefix(s, found.Role?.Arn);
    s.op.step('found', r.kind, r.name);
    return;
  }
  const created = await s.op.send<CreateRoleCommandOutput>(
    'iam',
    new CreateRoleCommand({
      RoleName: r.name,
      AssumeRolePolicyDocument: JSON.stringify(r.document),
      Description: `Keel ${s.input.deployment.cluster}: ${String(r.properties.why)}`.slice(0, 1000),
      Tags: tags(s),
    }),
  );
  learnArnPrefix(s, created.Role?.Arn);
  s.op.step('created', r.kind, r.name);
}

/** An inline policy (the plan's document) or the controller's managed one (a file of deploy/). */
export async function ensurePolicy(s: UpState, r: PlannedResource): Promise<void> {
  const role = String(r.properties.role);
  if (r.document !== undefined && 'file' in r.document) {
    await ensureManagedPolicy(s, r, role);
    return;
  }
  const found = await s.op.sendUnless<GetRolePolicyCommandOutput>(absent, 'iam', new GetRolePolicyCommand({ RoleName: role, PolicyName: r.name }));
  if (found !== null) {
    s.op.step('found', r.kind, r.name, `on ${role}`);
    return;
  }
  await s.op.send('iam', new PutRolePolicyCommand({ RoleName: role, PolicyName: r.name, PolicyDocument: JSON.stringify(r.document) }));
  s.op.step('created', r.kind, r.name, `on ${role}`);
}

async function ensureManagedPolicy(s: UpState, r: PlannedResource, role: string): Promise<void> {
  if (s.iamArnPrefix === null) {
    learnArnPrefix(s, (await s.op.send<GetRoleCommandOutput>('iam', new GetRoleCommand({ RoleName: role }))).Role?.Arn);
  }
  if (s.iamArnPrefix === null) throw new KeelError('KEEL_AWS_FAILED', `IAM gave ${role} no ARN: the account of the policy ${r.name} is unknown`);
  const arn = `${s.iamArnPrefix}:policy/${r.name}`;
  const found = await s.op.sendUnless<GetPolicyCommandOutput>(absent, 'iam', new GetPolicyCommand({ PolicyArn: arn }));
  let outcome: 'found' | 'created' = 'found';
  if (found === null) {
    await s.op.send<CreatePolicyCommandOutput>(
      'iam',
      new CreatePolicyCommand({ PolicyName: r.name, PolicyDocument: s.input.controllerPolicy, Description: `Keel ${s.input.deployment.cluster}: the controller`, Tags: tags(s) }),
    );
    outcome = 'created';
  }
  const attached = await s.op.send<ListAttachedRolePoliciesCommandOutput>('iam', new ListAttachedRolePoliciesCommand({ RoleName: role }));
  if ((attached.AttachedPolicies ?? []).some((p) => p.PolicyArn === arn)) {
    s.op.step(outcome, r.kind, r.name, `attached to ${role}`);
    return;
  }
  await s.op.send('iam', new AttachRolePolicyCommand({ RoleName: role, PolicyArn: arn }));
  s.op.step(outcome, r.kind, r.name, `attached to ${role} now`);
}

export async function ensureInstanceProfile(s: UpState, r: PlannedResource): Promise<void> {
  const role = String(r.properties.role);
  const found = await s.op.sendUnless<GetInstanceProfileCommandOutput>(absent, 'iam', new GetInstanceProfileCommand({ InstanceProfileName: r.name }));
  let outcome: 'found' | 'created' = 'found';
  let roles = (found?.InstanceProfile?.Roles ?? []).map((x) => x.RoleName);
  if (found === null) {
    const created = await s.op.send<CreateInstanceProfileCommandOutput>('iam', new CreateInstanceProfileCommand({ InstanceProfileName: r.name, Tags: tags(s) }));
    roles = (created.InstanceProfile?.Roles ?? []).map((x) => x.RoleName);
    outcome = 'created';
  }
  if (roles.includes(role)) {
    s.op.step(outcome, r.kind, r.name, `carries ${role}`);
    return;
  }
  if (roles.length > 0) {
    throw new KeelError('KEEL_AWS_FAILED', `the instance profile ${r.name} carries ${roles.join(', ')}, not ${role}`, {
      hint: `remove that role from it (aws iam remove-role-from-instance-profile --instance-profile-name ${r.name} --role-name ...) and run up again`,
    });
  }
  await s.op.send('iam', new AddRoleToInstanceProfileCommand({ InstanceProfileName: r.name, RoleName: role }));
  s.op.step(outcome, r.kind, r.name, `carries ${role} now`);
}
