/**
 * `keel aws down`'s load balancer steps: the NLB's listeners, the target
 * groups (found by name, also when the NLB is gone already), then the NLB,
 * awaited until Elastic Load Balancing no longer knows it: its network
 * interfaces hold the NLB's security group until then.
 */
import {
  DeleteListenerCommand,
  DeleteLoadBalancerCommand,
  DeleteTargetGroupCommand,
  DescribeListenersCommand,
  DescribeLoadBalancersCommand,
  DescribeTargetGroupsCommand,
  type DescribeListenersCommandOutput,
  type DescribeLoadBalancersCommandOutput,
  type DescribeTargetGroupsCommandOutput,
} from '@aws-sdk/client-elastic-load-balancing-v2';
import type { AwsDeployment } from './aws-deployment.js';
import type { AwsOperator } from './aws-operator.js';
import { names } from './aws-plan.js';
import { loadBalancerAbsent, targetGroupAbsent } from './aws-up-elb.js';

const listenerAbsent = ['ListenerNotFound', 'ListenerNotFoundException'];

export async function deleteLoadBalancing(op: AwsOperator, d: AwsDeployment): Promise<void> {
  if (d.loadBalancer === undefined) return;
  const n = names(d);
  const described = await op.sendUnless<DescribeLoadBalancersCommandOutput>(loadBalancerAbsent, 'elasticloadbalancing', new DescribeLoadBalancersCommand({ Names: [n.loadBalancer] }));
  const arn = described?.LoadBalancers?.[0]?.LoadBalancerArn;
  if (arn !== undefined) {
    const listeners = await op.send<DescribeListenersCommandOutput>('elasticloadbalancing', new DescribeListenersCommand({ LoadBalancerArn: arn }));
    for (const l of listeners.Listeners ?? []) {
      await op.sendUnless(listenerAbsent, 'elasticloadbalancing', new DeleteListenerCommand({ ListenerArn: l.ListenerArn }));
      op.step('deleted', 'listener', `${n.loadBalancer} tcp/${l.Port}`);
    }
  }
  for (const group of [n.roTargetGroup, n.rwTargetGroup]) {
    const found = await op.sendUnless<DescribeTargetGroupsCommandOutput>(targetGroupAbsent, 'elasticloadbalancing', new DescribeTargetGroupsCommand({ Names: [group] }));
    const groupArn = found?.TargetGroups?.[0]?.TargetGroupArn;
    if (groupArn === undefined) {
      op.step('absent', 'target-group', group);
      continue;
    }
    await op.sendUnless(targetGroupAbsent, 'elasticloadbalancing', new DeleteTargetGroupCommand({ TargetGroupArn: groupArn }));
    op.step('deleted', 'target-group', group);
  }
  if (arn === undefined) {
    op.step('absent', 'load-balancer', n.loadBalancer);
    return;
  }
  await op.sendUnless(loadBalancerAbsent, 'elasticloadbalancing', new DeleteLoadBalancerCommand({ LoadBalancerArn: arn }));
  await op.poll(`the NLB ${n.loadBalancer} is gone`, async () => {
    const left = await op.sendUnless<DescribeLoadBalancersCommandOutput>(loadBalancerAbsent, 'elasticloadbalancing', new DescribeLoadBalancersCommand({ Names: [n.loadBalancer] }));
    return (left?.LoadBalancers ?? []).length === 0 ? true : undefined;
  });
  op.step('deleted', 'load-balancer', n.loadBalancer);
}
