/**
 * `keel aws plan`: every resource `keel aws up` would create for one
 * keel-aws.yml, in the order it would create them, and what they cost a
 * month (an estimate, aws-prices.ts). Pure: a deployment in, a plan out; it
 * calls no AWS API and holds no secret (SSM parameters by name only).
 *
 * The order follows what each step needs: groups before their rules and
 * instances; roles before the instance profiles that carry them; etcd's
 * certificates (which name the members' fixed addresses) before the members;
 * the load balancer before the etcd members, whose controller gives each
 * database node a certificate that names the NLB's DNS name as well as the
 * node's own address, which EC2 gives at launch.
 *
 * `keel aws up` makes what is marked `up`; the database nodes, their own
 * parameters (their certificates name the address EC2 gives each) and their
 * registration in the target groups are the controller's, which runs on the
 * etcd members and launches the nodes itself. They stay in the plan: the
 * estimate counts them, and they are what the cluster is made of.
 */
import { clusterParameters, holdsOf, nodeParameterNames, secure, type ParameterSpec } from './aws-parameters.js';
import { loadBalancerBaseName, parameterPrefixOf, type AwsDeployment } from './aws-deployment.js';
import { estimateMonthlyCost, type CostEstimate } from './aws-prices.js';

export type AwsResourceKind =
  | 'security-group'
  | 'security-group-rule'
  | 'iam-role'
  | 'iam-policy'
  | 'iam-instance-profile'
  | 'ssm-parameter'
  | 'network-interface'
  | 'instance'
  | 'load-balancer'
  | 'target-group'
  | 'listener'
  | 'target-registration';

export type PropertyValue = string | number | boolean | string[];

export interface PolicyDocument {
  Version: '2012-10-17';
  Statement: { Sid: string; Effect: 'Allow' | 'Deny'; Action: string | string[]; Resource?: string | string[]; Principal?: { Service: string }; Condition?: Record<string, Record<string, string>> }[];
}

/** Who creates a resource: `keel aws up`, or the controller once it runs on the etcd members. */
export type CreatedBy = 'up' | 'controller';

export interface PlannedResource {
  kind: AwsResourceKind;
  name: string;
  createdBy: CreatedBy;
  /** the availability zone, for what lives in one */
  zone: string | null;
  /** the AWS call `keel aws up` would make for it */
  call: string;
  properties: Record<string, PropertyValue>;
  /** the policy of a role (trust) or of a policy; a file's path when the document is one of deploy/ */
  document?: PolicyDocument | { file: string };
}

export interface AwsPlan {
  cluster: string;
  region: string;
  resources: PlannedResource[];
  cost: CostEstimate;
  /** what the plan cannot settle itself, in one sentence each */
  notes: string[];
}

export { clusterParameters, type ParameterReader, type ParameterSpec } from './aws-parameters.js';

export const ports = { postgres: 5432, api: 8008, etcdClient: 2379, etcdPeer: 2380 } as const;

/** The aws provider's tags (aws.ts's awsTags, which a test holds this to): not imported, so the plan loads no AWS SDK. */
export const nodeTags = { cluster: 'keel:cluster', node: 'keel:node', zone: 'keel:zone', instanceClass: 'keel:class' } as const;

/** The zone of the i-th database node (0-based): round-robin over the zones in keel-aws.yml's order. */
export function zoneOfNode(d: AwsDeployment, index: number): string {
  return d.zones[index % d.zones.length]!.name;
}

export function nodeNames(d: AwsDeployment): string[] {
  return Array.from({ length: d.nodes }, (_, i) => `node${i + 1}`);
}

export function names(d: AwsDeployment) {
  const base = `keel-${d.cluster}`;
  const lb = loadBalancerBaseName(d.cluster);
  return {
    dbGroup: `${base}-db`,
    etcdGroup: `${base}-etcd`,
    lbGroup: `${base}-nlb`,
    // keel-*: the controller's iam:PassRole (deploy/aws/iam-policy.json) covers this name and no other
    nodeRole: `${base}-node`,
    etcdRole: `${base}-etcd`,
    controllerPolicy: `${base}-controller`,
    loadBalancer: lb,
    rwTargetGroup: `${lb}-rw`,
    roTargetGroup: `${lb}-ro`,
  };
}

function parameterResource(d: AwsDeployment, p: Pick<ParameterSpec, 'name' | 'readBy' | 'holds'>, createdBy: CreatedBy): PlannedResource {
  const type = secure(p.name) ? 'SecureString' : 'String';
  return {
    kind: 'ssm-parameter',
    name: p.name,
    createdBy,
    zone: null,
    call: 'ssm:PutParameter',
    properties: { type, tier: 'Standard', ...(type === 'SecureString' ? { kmsKeyId: d.ssm.kmsKeyId } : {}), readBy: p.readBy, holds: p.holds },
  };
}

function parameterArn(d: AwsDeployment, name: string): string {
  return `arn:aws:ssm:${d.region}:*:parameter${name}`;
}

const ec2Trust: PolicyDocument = {
  Version: '2012-10-17',
  Statement: [{ Sid: 'Ec2AssumesIt', Effect: 'Allow', Principal: { Service: 'ec2.amazonaws.com' }, Action: 'sts:AssumeRole' }],
};

/** With the AWS-managed aws/ssm key, its key policy lets SSM decrypt for the account; a key of one's own needs kms:Decrypt. */
function decryptStatement(d: AwsDeployment, alsoEncrypt = false): PolicyDocument['Statement'] {
  if (d.ssm.kmsKeyId === 'alias/aws/ssm') return [];
  return [
    {
      Sid: alsoEncrypt ? 'EncryptAndDecryptTheSecureStringsThroughSsm' : 'DecryptTheSecureStringsThroughSsm',
      Effect: 'Allow',
      Action: alsoEncrypt ? ['kms:Decrypt', 'kms:Encrypt'] : 'kms:Decrypt',
      Resource: d.ssm.kmsKeyId.startsWith('arn:') && d.ssm.kmsKeyId.includes(':key/') ? d.ssm.kmsKeyId : '*',
      Condition: { StringEquals: { 'kms:ViaService': `ssm.${d.region}.amazonaws.com` } },
    },
  ];
}

/** The database nodes' role: their own parameters (not etcd's, the controller's or the operator's), and describing instances. */
export function nodePolicy(d: AwsDeployment): PolicyDocument {
  const readable = clusterParameters(d).filter((p) => p.readBy === 'nodes').map((p) => parameterArn(d, p.name));
  return {
    Version: '2012-10-17',
    Statement: [
      {
        Sid: 'ReadTheClustersNodeParameters',
        Effect: 'Allow',
        Action: 'ssm:GetParameter',
        Resource: [...readable, parameterArn(d, `${parameterPrefixOf(d)}/nodes/*`)],
      },
      ...decryptStatement(d),
      // Describe calls have no resource-level permissions in IAM: "*" is the only resource they take
      { Sid: 'DescribeItself', Effect: 'Allow', Action: ['ec2:DescribeInstances', 'ec2:DescribeTags'], Resource: '*' },
    ],
  };
}

/** The etcd members' role (they run the controller too): etcd's and the controller's parameters. */
export function etcdPolicy(d: AwsDeployment): PolicyDocument {
  const prefix = parameterPrefixOf(d);
  const readable = [`${prefix}/tls/ca.crt`, ...clusterParameters(d).filter((p) => p.readBy === 'etcd' || p.readBy === 'controller').map((p) => p.name)];
  return {
    Version: '2012-10-17',
    // the controller writes each node's SecureStrings (its key, its token) with the deployment's key
    Statement: [{ Sid: 'ReadEtcdAndControllerParameters', Effect: 'Allow', Action: 'ssm:GetParameter', Resource: readable.map((n) => parameterArn(d, n)) }, ...decryptStatement(d, true)],
  };
}

function ingress(group: string, port: number, source: string, why: string): PlannedResource {
  return {
    kind: 'security-group-rule',
    name: `${group} tcp/${port} from ${source}`,
    createdBy: 'up',
    zone: null,
    call: 'ec2:AuthorizeSecurityGroupIngress',
    properties: { group, direction: 'ingress', protocol: 'tcp', port, source, why },
  };
}

function securityGroups(d: AwsDeployment): PlannedResource[] {
  const n = names(d);
  const vpc = d.vpc.cidr;
  const group = (name: string, description: string): PlannedResource => ({
    kind: 'security-group',
    name,
    createdBy: 'up',
    zone: null,
    call: 'ec2:CreateSecurityGroup',
    // no SSH rule anywhere: nothing in Keel needs it, and an open port 22 is the usual way in
    properties: { vpcId: d.vpc.id, description, egress: 'all (the default rule: packages, SSM, etcd, peers)' },
  });
  const lb = d.loadBalancer;
  return [
    group(n.dbGroup, `Keel ${d.cluster}: PostgreSQL nodes`),
    group(n.etcdGroup, `Keel ${d.cluster}: etcd members and the controller`),
    ...(lb === undefined ? [] : [group(n.lbGroup, `Keel ${d.cluster}: the internal NLB`)]),
    // the VPC's range, never 0.0.0.0/0: applications, the NLB (its health checks come from its own private addresses) and the controller are in it
    ingress(n.dbGroup, ports.postgres, vpc, 'PostgreSQL: applications, the NLB, replication between nodes'),
    ingress(n.dbGroup, ports.api, vpc, 'REST API (HTTPS): NLB health checks, the controller, keel CLI'),
    ingress(n.etcdGroup, ports.etcdClient, n.etcdGroup, 'etcd clients on the members (the controller)'),
    ingress(n.etcdGroup, ports.etcdPeer, n.etcdGroup, 'etcd peers'),
    ingress(n.etcdGroup, ports.etcdClient, n.dbGroup, "etcd clients: the nodes' agents"),
    ...(lb === undefined
      ? []
      : [ingress(n.lbGroup, lb.rwPort, vpc, 'the rw endpoint'), ingress(n.lbGroup, lb.roPort, vpc, 'the ro endpoint')]),
  ];
}

function iam(d: AwsDeployment): PlannedResource[] {
  const n = names(d);
  const role = (name: string, why: string): PlannedResource => ({ kind: 'iam-role', name, createdBy: 'up', zone: null, call: 'iam:CreateRole', properties: { assumedBy: 'ec2.amazonaws.com', why }, document: ec2Trust });
  const profile = (name: string): PlannedResource => ({ kind: 'iam-instance-profile', name, createdBy: 'up', zone: null, call: 'iam:CreateInstanceProfile + iam:AddRoleToInstanceProfile', properties: { role: name } });
  return [
    role(n.nodeRole, 'the database nodes: read their parameters at boot'),
    { kind: 'iam-policy', name: `${n.nodeRole}-boot`, createdBy: 'up', zone: null, call: 'iam:PutRolePolicy', properties: { role: n.nodeRole, scope: `ssm:GetParameter on the nodes' parameters under ${parameterPrefixOf(d)}, ec2:Describe*` }, document: nodePolicy(d) },
    profile(n.nodeRole),
    role(n.etcdRole, 'the etcd members, which run the controller too'),
    { kind: 'iam-policy', name: `${n.etcdRole}-boot`, createdBy: 'up', zone: null, call: 'iam:PutRolePolicy', properties: { role: n.etcdRole, scope: `ssm:GetParameter on etcd's and the controller's parameters under ${parameterPrefixOf(d)}` }, document: etcdPolicy(d) },
    {
      kind: 'iam-policy',
      name: n.controllerPolicy,
      createdBy: 'up',
      zone: null,
      call: 'iam:CreatePolicy + iam:AttachRolePolicy',
      properties: { role: n.etcdRole, scope: `the controller: launch, stop and terminate keel:cluster instances, pass ${n.nodeRole}` },
      document: { file: 'deploy/aws/iam-policy.json' },
    },
    profile(n.etcdRole),
  ];
}

function etcdMembers(d: AwsDeployment): PlannedResource[] {
  const n = names(d);
  const subnetOf = (zone: string) => d.zones.find((z) => z.name === zone)!.subnetId;
  const interfaces = d.etcd.members.map((m): PlannedResource => ({
    kind: 'network-interface',
    name: `${d.cluster}-${m.name}`,
    createdBy: 'up',
    zone: m.zone,
    call: 'ec2:CreateNetworkInterface',
    // kept when its instance goes: a replacement member gets the same address, the one every client and certificate names
    properties: { subnetId: subnetOf(m.zone), privateIp: m.address, securityGroup: n.etcdGroup, deleteOnTermination: false },
  }));
  const instances = d.etcd.members.map((m): PlannedResource => ({
    kind: 'instance',
    name: `${d.cluster}-${m.name}`,
    createdBy: 'up',
    zone: m.zone,
    call: 'ec2:RunInstances',
    properties: {
      purpose: 'etcd member + controller',
      instanceType: d.etcd.instanceType,
      amiId: d.amiId,
      networkInterface: `${d.cluster}-${m.name} (${m.address})`,
      instanceProfile: n.etcdRole,
      rootVolume: `gp3 ${d.etcd.rootVolumeGiB} GiB, encrypted`,
      metadata: 'IMDSv2 only',
      publicIp: false,
      // not keel:cluster: the controller may stop and terminate keel:cluster instances, and must never reach etcd
      tags: [`keel:etcd=${d.cluster}`, `keel:member=${m.name}`],
      userData: 'buildEtcdUserData() (src/providers/aws-etcd-userdata.ts): etcd, then the controller',
    },
  }));
  return [...interfaces, ...instances];
}

function loadBalancer(d: AwsDeployment): PlannedResource[] {
  const lb = d.loadBalancer;
  if (lb === undefined) return [];
  const n = names(d);
  const targetGroup = (name: string, path: '/primary' | '/replica', why: string): PlannedResource => ({
    kind: 'target-group',
    name,
    createdBy: 'up',
    zone: null,
    call: 'elasticloadbalancing:CreateTargetGroup',
    properties: {
      protocol: 'TCP',
      port: ports.postgres,
      targetType: 'instance',
      healthCheck: `HTTPS ${ports.api} GET ${path} (200)`,
      healthCheckIntervalSeconds: 5,
      healthyThreshold: 2,
      unhealthyThreshold: 2,
      // a node that stops being primary loses its connections at once: no write reaches a demoted node through the NLB
      unhealthyConnectionTermination: true,
      deregistrationDelaySeconds: 10,
      preserveClientIp: true,
      why,
    },
  });
  const listener = (port: number, target: string): PlannedResource => ({
    kind: 'listener',
    name: `${n.loadBalancer} tcp/${port}`,
    createdBy: 'up',
    zone: null,
    call: 'elasticloadbalancing:CreateListener',
    properties: { loadBalancer: n.loadBalancer, protocol: 'TCP', port, forwardTo: target },
  });
  return [
    {
      kind: 'load-balancer',
      name: n.loadBalancer,
      createdBy: 'up',
      zone: null,
      call: 'elasticloadbalancing:CreateLoadBalancer',
      properties: {
        type: 'network',
        scheme: 'internal',
        subnets: d.zones.map((z) => z.subnetId),
        securityGroup: n.lbGroup,
        // the primary is in one zone: without it, a client resolving another zone's address would find no target
        crossZone: true,
      },
    },
    targetGroup(n.rwTargetGroup, '/primary', 'rw: the leader only'),
    targetGroup(n.roTargetGroup, '/replica', 'ro: streaming replicas'),
    listener(lb.rwPort, n.rwTargetGroup),
    listener(lb.roPort, n.roTargetGroup),
  ];
}

function databaseNodes(d: AwsDeployment): PlannedResource[] {
  const n = names(d);
  const instanceType = d.instanceTypes[d.instanceClass]!;
  return nodeNames(d).map((node, i): PlannedResource => {
    const zone = zoneOfNode(d, i);
    return {
      kind: 'instance',
      // the Name tag the aws provider gives the nodes it launches (aws.ts)
      name: `${d.cluster}-${node}`,
      // the controller launches them (the aws provider) and gives each its certificate once EC2 gave it an address
      createdBy: 'controller',
      zone,
      call: 'ec2:RunInstances',
      properties: {
        purpose: i === 0 ? 'database node (bootstraps the cluster)' : 'database node (clones from the leader)',
        instanceType,
        instanceClass: d.instanceClass,
        amiId: d.amiId,
        subnetId: d.zones.find((z) => z.name === zone)!.subnetId,
        securityGroup: n.dbGroup,
        instanceProfile: n.nodeRole,
        rootVolume: `gp3 ${d.rootVolumeGiB} GiB, encrypted`,
        dataVolume: `gp3 ${d.dataVolumeGiB} GiB, encrypted, deleted with the instance`,
        metadata: 'IMDSv2 only',
        publicIp: false,
        tags: [`${nodeTags.cluster}=${d.cluster}`, `${nodeTags.node}=${node}`, `${nodeTags.zone}=${zone}`, `${nodeTags.instanceClass}=${d.instanceClass}`],
        userData: 'buildUserData() (src/providers/aws-userdata.ts): guard, agent',
      },
    };
  });
}

function nodeParameters(d: AwsDeployment): PlannedResource[] {
  return nodeNames(d).flatMap((node) => nodeParameterNames(d, node).own.map((name) => parameterResource(d, { name, readBy: 'nodes', holds: holdsOf(name) }, 'controller')));
}

function targetRegistrations(d: AwsDeployment): PlannedResource[] {
  if (d.loadBalancer === undefined) return [];
  const n = names(d);
  const targets = nodeNames(d).map((node) => `${d.cluster}-${node}`);
  return [n.rwTargetGroup, n.roTargetGroup].map((group) => ({
    kind: 'target-registration' as const,
    name: `${group} targets`,
    createdBy: 'controller' as const,
    zone: null,
    call: 'elasticloadbalancing:RegisterTargets',
    properties: { targetGroup: group, targets, port: ports.postgres },
  }));
}

/** Everything `keel aws up` would create, in order, and the monthly estimate. */
export function planAwsDeployment(d: AwsDeployment): AwsPlan {
  const resources = [
    ...securityGroups(d),
    ...iam(d),
    ...clusterParameters(d).map((p) => parameterResource(d, p, 'up')),
    // the NLB before the etcd members: the controller they run names its DNS name in every node's certificate
    ...loadBalancer(d),
    ...etcdMembers(d),
    ...databaseNodes(d),
    ...nodeParameters(d),
    ...targetRegistrations(d),
  ];
  const instances: Record<string, number> = {};
  for (const r of resources) {
    if (r.kind === 'instance') instances[r.properties.instanceType as string] = (instances[r.properties.instanceType as string] ?? 0) + 1;
  }
  const gp3GiB = d.nodes * (d.rootVolumeGiB + d.dataVolumeGiB) + d.etcd.members.length * d.etcd.rootVolumeGiB;
  const cost = estimateMonthlyCost({ region: d.region, instances, gp3GiB, loadBalancer: d.loadBalancer === undefined ? null : { assumedLcu: d.loadBalancer.assumedLcu } });
  return {
    cluster: d.cluster,
    region: d.region,
    resources,
    cost,
    notes: [
      "`keel aws up` makes what is marked up; the controller, once it runs on the etcd members, launches the database nodes, writes each node's parameters (its certificate names the address EC2 gives it at launch) and registers it in the target groups",
      'parameters are listed by name: `keel aws up` generates the values of the cluster-wide ones, keeps those that exist, and never prints one',
    ],
  };
}
