/**
 * `keel aws down`'s IAM steps, one planned resource at a time in the plan's
 * reverse order: an instance profile loses its roles and goes, the
 * controller's managed policy is detached and deleted, an inline policy is
 * deleted, then the role. What is not there is absent, not an error.
 */
import {
  DeleteInstanceProfileCommand,
  DeletePolicyCommand,
  DeleteRoleCommand,
  DeleteRolePolicyCommand,
  DetachRolePolicyCommand,
  GetInstanceProfileCommand,
  GetRoleCommand,
  GetRolePolicyCommand,
  ListPoliciesCommand,
  RemoveRoleFromInstanceProfileCommand,
  type GetInstanceProfileCommandOutput,
  type ListPoliciesCommandOutput,
} from '@aws-sdk/client-iam';
import type { AwsOperator } from './aws-operator.js';
import type { PlannedResource } from './aws-plan.js';

const absent = ['NoSuchEntity', 'NoSuchEntityException'];
const maxPages = 100;

/** The ARN of the account's own policy called `name`, or null. */
async function policyArn(op: AwsOperator, name: string): Promise<string | null> {
  let marker: string | undefined;
  for (let page = 0; page < maxPages; page++) {
    const out = await op.send<ListPoliciesCommandOutput>('iam', new ListPoliciesCommand({ Scope: 'Local', Marker: marker }));
    const found = (out.Policies ?? []).find((p) => p.PolicyName === name);
    if (found?.Arn !== undefined) return found.Arn;
    if (out.IsTruncated !== true || out.Marker === undefined) return null;
    marker = out.Marker;
  }
  return null;
}

export async function deleteIamResource(op: AwsOperator, r: PlannedResource): Promise<void> {
  if (r.kind === 'iam-instance-profile') {
    const found = await op.sendUnless<GetInstanceProfileCommandOutput>(absent, 'iam', new GetInstanceProfileCommand({ InstanceProfileName: r.name }));
    if (found === null) {
      op.step('absent', r.kind, r.name);
      return;
    }
    for (const role of found.InstanceProfile?.Roles ?? []) {
      await op.sendUnless(absent, 'iam', new RemoveRoleFromInstanceProfileCommand({ InstanceProfileName: r.name, RoleName: role.RoleName }));
    }
    await op.sendUnless(absent, 'iam', new DeleteInstanceProfileCommand({ InstanceProfileName: r.name }));
    op.step('deleted', r.kind, r.name);
    return;
  }
  if (r.kind === 'iam-policy' && r.document !== undefined && 'file' in r.document) {
    const arn = await policyArn(op, r.name);
    if (arn === null) {
      op.step('absent', r.kind, r.name);
      return;
    }
    await op.sendUnless(absent, 'iam', new DetachRolePolicyCommand({ RoleName: String(r.properties.role), PolicyArn: arn }));
    await op.sendUnless(absent, 'iam', new DeletePolicyCommand({ PolicyArn: arn }));
    op.step('deleted', r.kind, r.name);
    return;
  }
  if (r.kind === 'iam-policy') {
    const role = String(r.properties.role);
    const found = await op.sendUnless(absent, 'iam', new GetRolePolicyCommand({ RoleName: role, PolicyName: r.name }));
    if (found !== null) await op.sendUnless(absent, 'iam', new DeleteRolePolicyCommand({ RoleName: role, PolicyName: r.name }));
    op.step(found === null ? 'absent' : 'deleted', r.kind, r.name);
    return;
  }
  const found = await op.sendUnless(absent, 'iam', new GetRoleCommand({ RoleName: r.name }));
  if (found !== null) await op.sendUnless(absent, 'iam', new DeleteRoleCommand({ RoleName: r.name }));
  op.step(found === null ? 'absent' : 'deleted', r.kind, r.name);
}
