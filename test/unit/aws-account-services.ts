/**
 * The test account's IAM, SSM and Elastic Load Balancing (aws-account.ts), as
 * far as `keel aws up` and `down` use them: names that exist or not, what is
 * attached to what, and the conflicts AWS answers when something still holds
 * what is being deleted.
 */
import {
  CreateListenerCommand,
  CreateLoadBalancerCommand,
  CreateTargetGroupCommand,
  DeleteListenerCommand,
  DeleteLoadBalancerCommand,
  DeleteTargetGroupCommand,
  DescribeListenersCommand,
  DescribeLoadBalancerAttributesCommand,
  DescribeLoadBalancersCommand,
  DescribeTargetGroupAttributesCommand,
  DescribeTargetGroupsCommand,
  ModifyLoadBalancerAttributesCommand,
  ModifyTargetGroupAttributesCommand,
} from '@aws-sdk/client-elastic-load-balancing-v2';
import {
  AddRoleToInstanceProfileCommand,
  AttachRolePolicyCommand,
  CreateInstanceProfileCommand,
  CreatePolicyCommand,
  CreateRoleCommand,
  DeleteInstanceProfileCommand,
  DeletePolicyCommand,
  DeleteRoleCommand,
  DeleteRolePolicyCommand,
  DetachRolePolicyCommand,
  GetInstanceProfileCommand,
  GetPolicyCommand,
  GetRoleCommand,
  GetRolePolicyCommand,
  ListAttachedRolePoliciesCommand,
  ListPoliciesCommand,
  PutRolePolicyCommand,
  RemoveRoleFromInstanceProfileCommand,
} from '@aws-sdk/client-iam';
import { DeleteParametersCommand, GetParameterCommand, GetParametersByPathCommand, GetParametersCommand, PutParameterCommand } from '@aws-sdk/client-ssm';
import { fail, tagsOf, type FakeAccount, type Handlers } from './aws-account.js';

export function iamHandlers(a: FakeAccount): Handlers {
  const arnOf = (kind: string, name: string) => `arn:aws:iam::${a.accountId}:${kind}/${name}`;
  const role = (name: string) => a.roles.get(name) ?? fail('NoSuchEntity', `The role with name ${name} cannot be found.`);
  const profile = (name: string) => a.profiles.get(name) ?? fail('NoSuchEntity', `Instance Profile ${name} cannot be found.`);
  const profileOut = (name: string) => ({ InstanceProfile: { InstanceProfileName: name, Arn: arnOf('instance-profile', name), Roles: profile(name).roles.map((r) => ({ RoleName: r, Arn: arnOf('role', r) })) } });
  return [
    [GetRoleCommand, (i) => (role(i.RoleName), { Role: { RoleName: i.RoleName, Arn: arnOf('role', i.RoleName) } })],
    [
      CreateRoleCommand,
      (i) => {
        if (a.roles.has(i.RoleName)) fail('EntityAlreadyExists');
        JSON.parse(i.AssumeRolePolicyDocument);
        a.roles.set(i.RoleName, { trust: i.AssumeRolePolicyDocument, inline: new Map(), attached: new Set(), tags: tagsOf(i.Tags) });
        a.created('iam-role', i.RoleName);
        return { Role: { RoleName: i.RoleName, Arn: arnOf('role', i.RoleName) } };
      },
    ],
    [GetRolePolicyCommand, (i) => ({ RoleName: i.RoleName, PolicyName: i.PolicyName, PolicyDocument: encodeURIComponent(role(i.RoleName).inline.get(i.PolicyName) ?? fail('NoSuchEntity')) })],
    [
      PutRolePolicyCommand,
      (i) => {
        JSON.parse(i.PolicyDocument);
        role(i.RoleName).inline.set(i.PolicyName, i.PolicyDocument);
        a.created('iam-policy', i.PolicyName);
        return {};
      },
    ],
    [DeleteRolePolicyCommand, (i) => (role(i.RoleName).inline.delete(i.PolicyName) ? {} : fail('NoSuchEntity'))],
    [GetPolicyCommand, (i) => ({ Policy: { Arn: i.PolicyArn, PolicyName: (a.policies.get(i.PolicyArn) ?? fail('NoSuchEntity')).name } })],
    [
      CreatePolicyCommand,
      (i) => {
        const arn = arnOf('policy', i.PolicyName);
        if (a.policies.has(arn)) fail('EntityAlreadyExists');
        JSON.parse(i.PolicyDocument);
        a.policies.set(arn, { name: i.PolicyName, document: i.PolicyDocument });
        a.created('iam-policy', i.PolicyName);
        return { Policy: { Arn: arn, PolicyName: i.PolicyName } };
      },
    ],
    [ListPoliciesCommand, () => ({ Policies: [...a.policies].map(([Arn, p]) => ({ Arn, PolicyName: p.name })), IsTruncated: false })],
    [
      DeletePolicyCommand,
      (i) => {
        if (!a.policies.has(i.PolicyArn)) fail('NoSuchEntity');
        if ([...a.roles.values()].some((r) => r.attached.has(i.PolicyArn))) fail('DeleteConflict', 'Cannot delete a policy attached to entities.');
        a.policies.delete(i.PolicyArn);
        return {};
      },
    ],
    [ListAttachedRolePoliciesCommand, (i) => ({ AttachedPolicies: [...role(i.RoleName).attached].map((PolicyArn) => ({ PolicyArn, PolicyName: a.policies.get(PolicyArn)?.name })) })],
    [
      AttachRolePolicyCommand,
      (i) => {
        if (!a.policies.has(i.PolicyArn)) fail('NoSuchEntity');
        role(i.RoleName).attached.add(i.PolicyArn);
        a.created('attachment', `${i.PolicyArn} to ${i.RoleName}`);
        return {};
      },
    ],
    [DetachRolePolicyCommand, (i) => (role(i.RoleName).attached.delete(i.PolicyArn) ? {} : fail('NoSuchEntity'))],
    [
      DeleteRoleCommand,
      (i) => {
        const r = role(i.RoleName);
        const inProfile = [...a.profiles.values()].some((p) => p.roles.includes(i.RoleName));
        if (r.inline.size > 0 || r.attached.size > 0 || inProfile) fail('DeleteConflict', 'Cannot delete entity, must delete policies first.');
        a.roles.delete(i.RoleName);
        return {};
      },
    ],
    [GetInstanceProfileCommand, (i) => profileOut(i.InstanceProfileName)],
    [
      CreateInstanceProfileCommand,
      (i) => {
        if (a.profiles.has(i.InstanceProfileName)) fail('EntityAlreadyExists');
        a.profiles.set(i.InstanceProfileName, { roles: [], refusalsLeft: a.profileDelayTries });
        a.created('iam-instance-profile', i.InstanceProfileName);
        return profileOut(i.InstanceProfileName);
      },
    ],
    [
      AddRoleToInstanceProfileCommand,
      (i) => {
        role(i.RoleName);
        const p = profile(i.InstanceProfileName);
        if (p.roles.length > 0) fail('LimitExceeded', 'Cannot exceed quota for InstanceSessionsPerInstanceProfile: 1');
        p.roles.push(i.RoleName);
        a.created('attachment', `${i.RoleName} to ${i.InstanceProfileName}`);
        return {};
      },
    ],
    [
      RemoveRoleFromInstanceProfileCommand,
      (i) => {
        const p = profile(i.InstanceProfileName);
        if (!p.roles.includes(i.RoleName)) fail('NoSuchEntity');
        p.roles = p.roles.filter((r) => r !== i.RoleName);
        return {};
      },
    ],
    [
      DeleteInstanceProfileCommand,
      (i) => {
        if (profile(i.InstanceProfileName).roles.length > 0) fail('DeleteConflict', 'Cannot delete entity, must remove roles from instance profile first.');
        a.profiles.delete(i.InstanceProfileName);
        return {};
      },
    ],
  ];
}

export function ssmHandlers(a: FakeAccount): Handlers {
  return [
    [
      GetParametersCommand,
      (i) => {
        if (i.Names.length > 10) fail('ValidationException', 'at most 10 names');
        const found = i.Names.filter((n: string) => a.parameters.has(n));
        // without decryption a SecureString comes back encrypted: never its value
        const shown = (n: string) => (a.parameters.get(n)!.type === 'SecureString' && i.WithDecryption !== true ? 'AQICAH-encrypted' : a.parameters.get(n)!.value);
        return { Parameters: found.map((Name: string) => ({ Name, Type: a.parameters.get(Name)!.type, Value: shown(Name) })), InvalidParameters: i.Names.filter((n: string) => !a.parameters.has(n)) };
      },
    ],
    [GetParameterCommand, (i) => ({ Parameter: { Name: i.Name, Value: (a.parameters.get(i.Name) ?? fail('ParameterNotFound')).value } })],
    [
      PutParameterCommand,
      (i) => {
        if (a.parameters.has(i.Name) && i.Overwrite !== true) fail('ParameterAlreadyExists', 'The parameter already exists. To overwrite this value, set the overwrite option in the request to true.');
        a.parameters.set(i.Name, { value: i.Value, type: i.Type, ...(i.KeyId === undefined ? {} : { keyId: i.KeyId }) });
        a.created('ssm-parameter', i.Name);
        return { Version: 1 };
      },
    ],
    [GetParametersByPathCommand, (i) => ({ Parameters: [...a.parameters.keys()].filter((n) => n.startsWith(`${i.Path}/`)).map((Name) => ({ Name })) })],
    [
      DeleteParametersCommand,
      (i) => {
        const deleted = i.Names.filter((n: string) => a.parameters.delete(n));
        return { DeletedParameters: deleted, InvalidParameters: i.Names.filter((n: string) => !deleted.includes(n)) };
      },
    ],
  ];
}

export function elbHandlers(a: FakeAccount): Handlers {
  const lbByArn = (arn: string) => [...a.loadBalancers.values()].find((lb) => lb.arn === arn && !lb.deleted) ?? fail('LoadBalancerNotFoundException');
  const lbOut = (name: string, lb: { arn: string; dnsName: string }) => ({ LoadBalancerName: name, LoadBalancerArn: lb.arn, DNSName: lb.dnsName, Type: 'network', Scheme: 'internal' });
  const tgByArn = (arn: string) => [...a.targetGroups.values()].find((g) => g.arn === arn) ?? fail('TargetGroupNotFoundException');
  return [
    [
      DescribeLoadBalancersCommand,
      (i) => {
        const found = (i.Names as string[]).flatMap((n) => {
          const lb = a.loadBalancers.get(n);
          if (lb === undefined) return [];
          // a deleted NLB is still seen once, then gone
          if (lb.deleted) a.loadBalancers.delete(n);
          return [lbOut(n, lb)];
        });
        return found.length === 0 ? fail('LoadBalancerNotFoundException', `Load balancers '[${i.Names.join(', ')}]' not found`) : { LoadBalancers: found };
      },
    ],
    [
      CreateLoadBalancerCommand,
      (i) => {
        if (a.loadBalancers.has(i.Name)) fail('DuplicateLoadBalancerNameException');
        const lb = { arn: `arn:aws:elasticloadbalancing:eu-west-1:${a.accountId}:loadbalancer/net/${i.Name}/${a.id('lb').slice(3)}`, dnsName: `${i.Name}-0123456789abcdef.elb.eu-west-1.amazonaws.com`, subnets: i.Subnets, groups: i.SecurityGroups ?? [], attributes: { 'load_balancing.cross_zone.enabled': 'false' }, deleted: false };
        a.loadBalancers.set(i.Name, lb);
        a.created('load-balancer', i.Name);
        return { LoadBalancers: [lbOut(i.Name, lb)] };
      },
    ],
    [DescribeLoadBalancerAttributesCommand, (i) => ({ Attributes: Object.entries(lbByArn(i.LoadBalancerArn).attributes).map(([Key, Value]) => ({ Key, Value })) })],
    [
      ModifyLoadBalancerAttributesCommand,
      (i) => {
        const lb = lbByArn(i.LoadBalancerArn);
        for (const { Key, Value } of i.Attributes) lb.attributes[Key] = Value;
        return {};
      },
    ],
    [
      DeleteLoadBalancerCommand,
      (i) => {
        const lb = [...a.loadBalancers.values()].find((x) => x.arn === i.LoadBalancerArn);
        if (lb !== undefined) Object.assign(lb, { deleted: true, groups: [] });
        return {};
      },
    ],
    [
      DescribeTargetGroupsCommand,
      (i) => {
        const found = (i.Names as string[]).filter((n) => a.targetGroups.has(n));
        return found.length === 0 ? fail('TargetGroupNotFoundException') : { TargetGroups: found.map((n) => ({ TargetGroupName: n, TargetGroupArn: a.targetGroups.get(n)!.arn })) };
      },
    ],
    [
      CreateTargetGroupCommand,
      (i) => {
        if (a.targetGroups.has(i.Name)) fail('DuplicateTargetGroupNameException');
        const arn = `arn:aws:elasticloadbalancing:eu-west-1:${a.accountId}:targetgroup/${i.Name}/${a.id('tg').slice(3)}`;
        a.targetGroups.set(i.Name, { arn, input: i, attributes: { 'deregistration_delay.timeout_seconds': '300', 'preserve_client_ip.enabled': 'true' } });
        a.created('target-group', i.Name);
        return { TargetGroups: [{ TargetGroupName: i.Name, TargetGroupArn: arn }] };
      },
    ],
    [DescribeTargetGroupAttributesCommand, (i) => ({ Attributes: Object.entries(tgByArn(i.TargetGroupArn).attributes).map(([Key, Value]) => ({ Key, Value })) })],
    [
      ModifyTargetGroupAttributesCommand,
      (i) => {
        const g = tgByArn(i.TargetGroupArn);
        for (const { Key, Value } of i.Attributes) g.attributes[Key] = Value;
        return {};
      },
    ],
    [
      DeleteTargetGroupCommand,
      (i) => {
        const [name] = [...a.targetGroups].find(([, g]) => g.arn === i.TargetGroupArn) ?? fail('TargetGroupNotFoundException');
        if ([...a.listeners.values()].some((l) => l.targetGroupArn === i.TargetGroupArn)) fail('ResourceInUseException', 'Target group is currently in use by a listener');
        a.targetGroups.delete(name);
        return {};
      },
    ],
    [
      DescribeListenersCommand,
      (i) => (lbByArn(i.LoadBalancerArn), { Listeners: [...a.listeners].filter(([, l]) => l.lbArn === i.LoadBalancerArn).map(([ListenerArn, l]) => ({ ListenerArn, Port: l.port, DefaultActions: [{ Type: 'forward', TargetGroupArn: l.targetGroupArn }] })) }),
    ],
    [
      CreateListenerCommand,
      (i) => {
        lbByArn(i.LoadBalancerArn);
        tgByArn(i.DefaultActions[0].TargetGroupArn);
        if ([...a.listeners.values()].some((l) => l.lbArn === i.LoadBalancerArn && l.port === i.Port)) fail('DuplicateListenerException');
        const arn = `${i.LoadBalancerArn.replace(':loadbalancer/', ':listener/')}/${a.id('l').slice(2)}`;
        a.listeners.set(arn, { lbArn: i.LoadBalancerArn, port: i.Port, targetGroupArn: i.DefaultActions[0].TargetGroupArn });
        const name = [...a.loadBalancers].find(([, lb]) => lb.arn === i.LoadBalancerArn)![0];
        a.created('listener', `${name} tcp/${i.Port}`);
        return { Listeners: [{ ListenerArn: arn, Port: i.Port }] };
      },
    ],
    [DeleteListenerCommand, (i) => (a.listeners.delete(i.ListenerArn) ? {} : fail('ListenerNotFoundException'))],
  ];
}
