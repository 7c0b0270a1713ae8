/**
 * `keel aws up`'s load balancer steps, each find-or-create by name: the
 * internal NLB in the three subnets with cross-zone load balancing on, a TCP
 * target group per endpoint health-checked over HTTPS on the REST API
 * (/primary for rw, /replica for ro), and a listener per endpoint. The
 * attributes (cross-zone, deregistration delay, closing connections to a
 * target that turns unhealthy) are checked on every run and set when they
 * differ, so a run cut after a creation is finished by the next.
 */
import {
  CreateListenerCommand,
  CreateLoadBalancerCommand,
  CreateTargetGroupCommand,
  DescribeListenersCommand,
  DescribeLoadBalancerAttributesCommand,
  DescribeLoadBalancersCommand,
  DescribeTargetGroupAttributesCommand,
  DescribeTargetGroupsCommand,
  ModifyLoadBalancerAttributesCommand,
  ModifyTargetGroupAttributesCommand,
  type CreateListenerCommandOutput,
  type CreateLoadBalancerCommandOutput,
  type CreateTargetGroupCommandOutput,
  type DescribeListenersCommandOutput,
  type DescribeLoadBalancerAttributesCommandOutput,
  type DescribeLoadBalancersCommandOutput,
  type DescribeTargetGroupAttributesCommandOutput,
  type DescribeTargetGroupsCommandOutput,
} from '@aws-sdk/client-elastic-load-balancing-v2';
import { KeelError } from '../errors.js';
import { keelTags } from './aws-operator.js';
import { names, ports, type PlannedResource } from './aws-plan.js';
import type { UpState } from './aws-up-state.js';

export const loadBalancerAbsent = ['LoadBalancerNotFound', 'LoadBalancerNotFoundException'];
export const targetGroupAbsent = ['TargetGroupNotFound', 'TargetGroupNotFoundException'];

function tags(s: UpState, name: string) {
  return keelTags({ 'keel:cluster': s.input.deployment.cluster, Name: name });
}

/** The attributes that differ from `wanted`, as ELB takes them. */
function differing(current: { Key?: string; Value?: string }[] | undefined, wanted: Record<string, string>): { Key: string; Value: string }[] {
  const now = new Map((current ?? []).map((a) => [a.Key, a.Value]));
  return Object.entries(wanted)
    .filter(([key, value]) => now.get(key) !== value)
    .map(([Key, Value]) => ({ Key, Value }));
}

export async function ensureLoadBalancer(s: UpState, r: PlannedResource): Promise<void> {
  const d = s.input.deployment;
  const found = await s.op.sendUnless<DescribeLoadBalancersCommandOutput>(loadBalancerAbsent, 'elasticloadbalancing', new DescribeLoadBalancersCommand({ Names: [r.name] }));
  let lb = found?.LoadBalancers?.[0];
  let outcome: 'found' | 'created' = 'found';
  if (lb === undefined) {
    const group = s.groups.get(names(d).lbGroup);
    if (group === undefined) throw new KeelError('KEEL_AWS_FAILED', `the security group ${names(d).lbGroup} was neither found nor created before the NLB`);
    const created = await s.op.send<CreateLoadBalancerCommandOutput>(
      'elasticloadbalancing',
      new CreateLoadBalancerCommand({
        Name: r.name,
        Type: 'network',
        Scheme: 'internal',
        Subnets: d.zones.map((z) => z.subnetId),
        SecurityGroups: [group.id],
        Tags: tags(s, r.name),
      }),
    );
    lb = created.LoadBalancers?.[0];
    outcome = 'created';
  }
  if (lb?.LoadBalancerArn === undefined || lb.DNSName === undefined) throw new KeelError('KEEL_AWS_FAILED', `Elastic Load Balancing gave no ARN or DNS name for ${r.name}`);
  s.loadBalancer = { arn: lb.LoadBalancerArn, dnsName: lb.DNSName };
  const attributes = await s.op.send<DescribeLoadBalancerAttributesCommandOutput>('elasticloadbalancing', new DescribeLoadBalancerAttributesCommand({ LoadBalancerArn: lb.LoadBalancerArn }));
  const change = differing(attributes.Attributes, { 'load_balancing.cross_zone.enabled': 'true' });
  if (change.length > 0) await s.op.send('elasticloadbalancing', new ModifyLoadBalancerAttributesCommand({ LoadBalancerArn: lb.LoadBalancerArn, Attributes: change }));
  s.op.step(outcome, r.kind, r.name, `${lb.DNSName}${change.length > 0 ? ', cross-zone set' : ''}`);
}

export async function ensureTargetGroup(s: UpState, r: PlannedResource): Promise<void> {
  const d = s.input.deployment;
  const n = names(d);
  const found = await s.op.sendUnless<DescribeTargetGroupsCommandOutput>(targetGroupAbsent, 'elasticloadbalancing', new DescribeTargetGroupsCommand({ Names: [r.name] }));
  let arn = found?.TargetGroups?.[0]?.TargetGroupArn;
  let outcome: 'found' | 'created' = 'found';
  if (arn === undefined) {
    const p = r.properties;
    const created = await s.op.send<CreateTargetGroupCommandOutput>(
      'elasticloadbalancing',
      new CreateTargetGroupCommand({
        Name: r.name,
        Protocol: 'TCP',
        Port: Number(p.port),
        VpcId: d.vpc.id,
        TargetType: 'instance',
        HealthCheckEnabled: true,
        HealthCheckProtocol: 'HTTPS',
        HealthCheckPort: String(ports.api),
        // the REST API answers 200 on /primary only on the leader, on /replica only on a streaming replica
        HealthCheckPath: r.name === n.rwTargetGroup ? '/primary' : '/replica',
        Matcher: { HttpCode: '200' },
        HealthCheckIntervalSeconds: Number(p.healthCheckIntervalSeconds),
        // below the interval, which ELB requires (its default for HTTPS, 10 s, is above the plan's 5)
        HealthCheckTimeoutSeconds: Math.max(2, Number(p.healthCheckIntervalSeconds) - 1),
        HealthyThresholdCount: Number(p.healthyThreshold),
        UnhealthyThresholdCount: Number(p.unhealthyThreshold),
        Tags: tags(s, r.name),
      }),
    );
    arn = created.TargetGroups?.[0]?.TargetGroupArn;
    outcome = 'created';
  }
  if (arn === undefined) throw new KeelError('KEEL_AWS_FAILED', `Elastic Load Balancing gave no ARN for the target group ${r.name}`);
  s.targetGroups.set(r.name, arn);
  const attributes = await s.op.send<DescribeTargetGroupAttributesCommandOutput>('elasticloadbalancing', new DescribeTargetGroupAttributesCommand({ TargetGroupArn: arn }));
  const change = differing(attributes.Attributes, {
    'deregistration_delay.timeout_seconds': String(r.properties.deregistrationDelaySeconds),
    // a node that stops being primary loses its connections at once: no write reaches a demoted node
    'target_health_state.unhealthy.connection_termination.enabled': String(r.properties.unhealthyConnectionTermination),
    'preserve_client_ip.enabled': String(r.properties.preserveClientIp),
  });
  if (change.length > 0) await s.op.send('elasticloadbalancing', new ModifyTargetGroupAttributesCommand({ TargetGroupArn: arn, Attributes: change }));
  s.op.step(outcome, r.kind, r.name, change.length > 0 ? `${change.length} attributes set` : '');
}

export async function ensureListener(s: UpState, r: PlannedResource): Promise<void> {
  const lb = s.loadBalancer;
  const target = s.targetGroups.get(String(r.properties.forwardTo));
  if (lb === null || target === undefined) throw new KeelError('KEEL_AWS_FAILED', `the NLB or the target group of ${r.name} was neither found nor created before it`);
  const port = Number(r.properties.port);
  const listeners = await s.op.send<DescribeListenersCommandOutput>('elasticloadbalancing', new DescribeListenersCommand({ LoadBalancerArn: lb.arn }));
  const existing = (listeners.Listeners ?? []).find((l) => l.Port === port);
  if (existing !== undefined) {
    const forwards = (existing.DefaultActions ?? []).some((a) => a.TargetGroupArn === target);
    s.op.step('found', r.kind, r.name, forwards ? '' : `it forwards elsewhere than ${String(r.properties.forwardTo)}: left as it is`);
    return;
  }
  await s.op.send<CreateListenerCommandOutput>(
    'elasticloadbalancing',
    new CreateListenerCommand({ LoadBalancerArn: lb.arn, Protocol: 'TCP', Port: port, DefaultActions: [{ Type: 'forward', TargetGroupArn: target }], Tags: tags(s, r.name) }),
  );
  s.op.step('created', r.kind, r.name);
}
