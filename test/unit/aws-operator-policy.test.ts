/**
 * deploy/aws/operator-policy.json allows exactly what `keel aws up` and
 * `keel aws down` call: a full up and down (with the NLB, snapshots, a run cut
 * half-way and resumed, parameters deleted, and a KMS key of one's own) run
 * against the test account, every command sent becomes its IAM action, plus
 * the actions AWS checks besides the call itself (tags given at creation,
 * passing a role to EC2, ELB's service-linked role, KMS behind SecureString),
 * and that set must be the policy's actions, no more, no fewer.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { awsDown } from '../../src/providers/aws-down.js';
import { awsUp } from '../../src/providers/aws-up.js';
import { FakeAccount, type Call } from './aws-account.js';
import { fakeCredentials, operatorOptions, upInput } from './aws-up-fixtures.js';

interface Statement {
  Sid: string;
  Effect: string;
  Action: string | string[];
  Resource: string | string[];
  Condition?: Record<string, Record<string, string | string[]>>;
}

const policy = JSON.parse(readFileSync(join(import.meta.dirname, '../../deploy/aws/operator-policy.json'), 'utf8')) as { Version: string; Statement: Statement[] };
const list = (x: string | string[]): string[] => (Array.isArray(x) ? x : [x]);
const allowed = policy.Statement.filter((s) => s.Effect === 'Allow');
const statementsFor = (action: string) => allowed.filter((s) => list(s.Action).includes(action));

/** The actions AWS authorizes for a call beside the call's own. */
function impliedBy(call: Call): string[] {
  const i = call.input;
  const [service, name] = call.action.split(':') as [string, string];
  const implied: string[] = [];
  const tagged = (i.TagSpecifications ?? []).some((t: { Tags?: unknown[] }) => (t.Tags ?? []).length > 0) || (i.Tags ?? []).length > 0;
  if (tagged) {
    if (service === 'ec2') implied.push('ec2:CreateTags');
    if (service === 'elasticloadbalancing') implied.push('elasticloadbalancing:AddTags');
    if (service === 'ssm') implied.push('ssm:AddTagsToResource');
    if (service === 'iam') implied.push({ CreateRole: 'iam:TagRole', CreatePolicy: 'iam:TagPolicy', CreateInstanceProfile: 'iam:TagInstanceProfile' }[name]!);
  }
  if (call.action === 'ec2:RunInstances' && i.IamInstanceProfile !== undefined) implied.push('iam:PassRole');
  // the account's first load balancer makes ELB's service-linked role
  if (call.action === 'elasticloadbalancing:CreateLoadBalancer') implied.push('iam:CreateServiceLinkedRole');
  const ownKey = (keyId: unknown) => typeof keyId === 'string' && keyId !== 'alias/aws/ssm';
  if (call.action === 'ssm:PutParameter' && i.Type === 'SecureString' && ownKey(i.KeyId)) implied.push('kms:Encrypt');
  return implied;
}

const ownKey = 'arn:aws:kms:eu-west-1:123456789012:key/0f0f0f0f-1234-5678-9abc-def012345678';
let needed = new Set<string>();
let customerKeyCalls: Call[] = [];

beforeAll(async () => {
  Object.assign(process.env, fakeCredentials);
  const run = async (change: ((raw: Record<string, any>) => void) | undefined, cutAt: string | null): Promise<Call[]> => {
    const account = new FakeAccount().install();
    try {
      const input = upInput(change);
      const options = operatorOptions([]);
      if (cutAt !== null) {
        account.failOn(cutAt, 2);
        await awsUp(input, options).catch(() => undefined);
        account.clearFaults();
      }
      await awsUp(input, options);
      await awsUp(input, options);
      account.addDatabaseNode('main', 'node1', 'eu-west-1a');
      account.parameters.set('/keel/main/nodes/node1/api-token', { value: 'x'.repeat(43), type: 'SecureString' });
      await awsDown({ deployment: input.deployment, deleteSnapshots: false, deleteParameters: false }, options);
      await awsDown({ deployment: input.deployment, deleteSnapshots: false, deleteParameters: true }, options);
      return account.calls;
    } finally {
      account.restore();
    }
  };
  const calls = await run(undefined, 'ssm:PutParameter');
  customerKeyCalls = await run((raw) => (raw.ssm.kmsKeyId = ownKey), 'ssm:PutParameter');
  needed = new Set([...calls, ...customerKeyCalls].flatMap((c) => [c.action, ...impliedBy(c)]));
  // reading back a SecureString made with one's own key: a run resumed after a cut reads the CA's key
  if (customerKeyCalls.some((c) => c.action === 'ssm:GetParameter' && c.input.WithDecryption === true)) needed.add('kms:Decrypt');
});


describe('deploy/aws/operator-policy.json', () => {
  it('allows exactly the actions keel aws up and down need', () => {
    const granted = new Set(allowed.flatMap((s) => list(s.Action)));
    expect([...needed].sort()).toEqual([...granted].sort());
    // what the runs went through, so that the comparison covers it
    for (const action of ['ec2:RunInstances', 'ec2:CreateSnapshot', 'ec2:TerminateInstances', 'iam:CreatePolicy', 'iam:DeletePolicy', 'ssm:GetParameter', 'ssm:DeleteParameters', 'elasticloadbalancing:DeleteLoadBalancer', 'kms:Encrypt', 'kms:Decrypt']) {
      expect(needed, action).toContain(action);
    }
  });

  it('is a policy document whose statements each have a Sid and resources', () => {
    expect(policy.Version).toBe('2012-10-17');
    expect(new Set(allowed.map((s) => s.Sid)).size).toBe(allowed.length);
    for (const s of allowed) expect(list(s.Resource).length, s.Sid).toBeGreaterThan(0);
  });

  it('terminates only keel-tagged instances, tags only while creating, and passes only keel-* roles to EC2', () => {
    const terminate = statementsFor('ec2:TerminateInstances').map((s) => Object.keys(s.Condition?.StringLike ?? {}));
    expect(terminate.sort()).toEqual([['aws:ResourceTag/keel:cluster'], ['aws:ResourceTag/keel:etcd']]);
    const tags = statementsFor('ec2:CreateTags');
    expect(tags).toHaveLength(1);
    expect(list(tags[0]!.Condition!.StringEquals!['ec2:CreateAction']!).sort()).toEqual(['CreateNetworkInterface', 'CreateSecurityGroup', 'CreateSnapshot', 'RunInstances']);
    const passRole = statementsFor('iam:PassRole');
    expect(passRole).toHaveLength(1);
    expect(passRole[0]!.Resource).toBe('arn:aws:iam::*:role/keel-*');
    expect(passRole[0]!.Condition?.StringEquals?.['iam:PassedToService']).toBe('ec2.amazonaws.com');
    expect(statementsFor('iam:CreateServiceLinkedRole')[0]!.Condition?.StringEquals?.['iam:AWSServiceName']).toBe('elasticloadbalancing.amazonaws.com');
  });

  it("reaches only keel-* IAM names, the /keel/ parameters, keel-* load balancers, and KMS through SSM alone", () => {
    for (const s of allowed) {
      const actions = list(s.Action);
      const resources = list(s.Resource);
      if (actions.some((a) => a.startsWith('iam:')) && !actions.includes('iam:ListPolicies')) {
        expect(resources.every((r) => /^arn:aws:iam::\*:(role|instance-profile|policy)\/(keel-\*|aws-service-role\/elasticloadbalancing\.amazonaws\.com\/\*)$/.test(r)), s.Sid).toBe(true);
      }
      if (actions.some((a) => a.startsWith('ssm:'))) expect(resources, s.Sid).toEqual(['arn:aws:ssm:*:*:parameter/keel/*']);
      if (actions.some((a) => a.startsWith('kms:'))) expect(s.Condition?.StringLike?.['kms:ViaService'], s.Sid).toBe('ssm.*.amazonaws.com');
      if (actions.some((a) => a.startsWith('elasticloadbalancing:') && !a.includes(':Describe'))) {
        expect(resources.every((r) => r.includes('/keel-*')), s.Sid).toBe(true);
      }
    }
    // the SecureStrings of the run with one's own key were made with it
    expect(customerKeyCalls.filter((c) => c.action === 'ssm:PutParameter' && c.input.Type === 'SecureString').every((c) => c.input.KeyId === ownKey)).toBe(true);
  });
});
