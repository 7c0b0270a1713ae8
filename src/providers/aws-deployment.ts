/**
 * keel-aws.yml: what one cluster on AWS is made of, as an operator writes it
 * (region, VPC, a subnet per zone, instance types, etcd's fixed addresses,
 * SSM names, the optional NLB). A codec: text in, checked value out; no I/O,
 * no AWS call. It holds no secret and refuses any key it does not know, so a
 * password written into it by mistake is an error that names the key, never
 * its value.
 */
import { z } from 'zod';
import { parse as parseYaml } from 'yaml';
import { describeIssues } from '../config/load.js';
import { KeelError } from '../errors.js';
import { nameSchema } from '../model/names.js';

const idOf = (prefix: string) => z.string().regex(new RegExp(`^${prefix}-[0-9a-f]{8,17}$`), `an id such as ${prefix}-0123456789abcdef0`);
const regionSchema = z.string().regex(/^[a-z]{2}(-[a-z]+)+-\d{1,2}$/, 'an AWS region such as eu-west-1');
const zoneSchema = z.string().regex(/^[a-z]{2}(-[a-z]+)+-\d{1,2}[a-z]$/, 'an availability zone such as eu-west-1a');
const ipv4Schema = z.string().regex(/^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/, 'an IPv4 address such as 10.0.1.10');
const cidrSchema = z
  .string()
  .regex(/^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}\/(1[6-9]|2[0-8])$/, 'an IPv4 range from /16 to /28 (what a VPC or subnet may be), such as 10.0.0.0/16');
const instanceTypeSchema = z.string().regex(/^[a-z][a-z0-9-]*\.[a-z0-9]+$/, 'an EC2 instance type such as m6i.large');
const instanceClassSchema = z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, 'letters, digits, _ . -, at most 64 characters (as the spec\'s instanceClass)');
const parameterPrefixSchema = z
  .string()
  .max(900)
  .regex(/^(\/[A-Za-z0-9_.-]+)+$/, 'an SSM parameter path such as /keel/main (letters, digits, _ . - between slashes)')
  .refine((path) => !/^\/(aws|ssm)(\/|$)/i.test(path), 'the /aws and /ssm prefixes are reserved by AWS');
const kmsKeySchema = z
  .string()
  .regex(/^(alias\/[A-Za-z0-9/_-]+|arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:(key|alias)\/[A-Za-z0-9/_-]+)$/, 'alias/aws/ssm, alias/NAME or a KMS key ARN');
const portSchema = z.number().int().min(1).max(65535);

/** The three zones, each with its subnet; the order is the order nodes are spread in. */
const zoneEntrySchema = z.object({ name: zoneSchema, subnetId: idOf('subnet'), subnetCidr: cidrSchema }).strict();

const etcdMemberSchema = z
  .object({
    name: nameSchema,
    zone: zoneSchema,
    /** fixed: etcd's peers and every client know the members by address, and its certificate names it */
    address: ipv4Schema,
  })
  .strict();

export const awsDeploymentSchema = z
  .object({
    region: regionSchema,
    cluster: nameSchema,
    vpc: z.object({ id: idOf('vpc'), cidr: cidrSchema }).strict(),
    zones: z.array(zoneEntrySchema).length(3, 'give exactly three zones, one subnet each'),
    /** a Debian 12 (bookworm) amd64 image: the user data installs PostgreSQL 15 and PostGIS 3 from its archive */
    amiId: idOf('ami'),
    /** the spec's instance classes and the EC2 type each one runs on */
    instanceTypes: z.record(instanceClassSchema, instanceTypeSchema).refine((map) => Object.keys(map).length > 0, 'give at least one class'),
    /** the class of the first nodes (the spec's instanceClass) */
    instanceClass: instanceClassSchema.default('medium'),
    nodes: z.number().int().min(1).max(20).default(3),
    dataVolumeGiB: z.number().int().min(10).max(16384).default(100),
    rootVolumeGiB: z.number().int().min(8).max(1024).default(8),
    etcd: z
      .object({
        instanceType: instanceTypeSchema.default('t3.small'),
        /** etcd's data lives on the root volume */
        rootVolumeGiB: z.number().int().min(8).max(1024).default(20),
        members: z.array(etcdMemberSchema).length(3, 'give three etcd members, one per zone'),
      })
      .strict(),
    ssm: z
      .object({
        /** every parameter of the cluster lives under it; default /keel/<cluster> */
        prefix: parameterPrefixSchema.optional(),
        /** the KMS key of the SecureStrings; the account's AWS-managed key by default */
        kmsKeyId: kmsKeySchema.default('alias/aws/ssm'),
      })
      .strict()
      .default({ kmsKeyId: 'alias/aws/ssm' }),
    /** an internal NLB: rw and ro listeners whose target groups follow the REST API's /primary and /replica */
    loadBalancer: z
      .object({
        rwPort: portSchema.default(5432),
        roPort: portSchema.default(5433),
        /** NLCUs assumed for the estimate (one NLCU: 800 new TCP flows/s, 100,000 active flows, 1 GB/h) */
        assumedLcu: z.number().min(0).max(1000).default(1),
      })
      .strict()
      .optional(),
  })
  .strict()
  .superRefine((d, ctx) => {
    const issue = (path: (string | number)[], message: string) => ctx.addIssue({ code: 'custom', path, message });
    const zoneNames = d.zones.map((z) => z.name);
    d.zones.forEach((zone, i) => {
      if (zoneNames.indexOf(zone.name) !== i) issue(['zones', i, 'name'], `${zone.name} is given twice: the three zones must differ`);
      if (!zone.name.startsWith(d.region)) issue(['zones', i, 'name'], `${zone.name} is not a zone of ${d.region}`);
      if (!cidrInside(zone.subnetCidr, d.vpc.cidr)) issue(['zones', i, 'subnetCidr'], `${zone.subnetCidr} is not inside the VPC's ${d.vpc.cidr}`);
    });
    if (!(d.instanceClass in d.instanceTypes)) {
      issue(['instanceClass'], `${d.instanceClass} is not a class of instanceTypes (${Object.keys(d.instanceTypes).join(', ')})`);
    }
    const seen = new Set<string>();
    d.etcd.members.forEach((member, i) => {
      if (seen.has(member.name)) issue(['etcd', 'members', i, 'name'], `${member.name} is given twice`);
      seen.add(member.name);
      const zone = d.zones.find((z) => z.name === member.zone);
      if (zone === undefined) {
        issue(['etcd', 'members', i, 'zone'], `${member.zone} is not one of the zones (${zoneNames.join(', ')})`);
        return;
      }
      if (d.etcd.members.findIndex((m) => m.zone === member.zone) !== i) issue(['etcd', 'members', i, 'zone'], `a second member in ${member.zone}: one member per zone`);
      const reason = unusableAddress(member.address, zone.subnetCidr);
      if (reason !== null) issue(['etcd', 'members', i, 'address'], reason);
    });
    if (d.loadBalancer !== undefined) {
      if (d.loadBalancer.rwPort === d.loadBalancer.roPort) issue(['loadBalancer', 'roPort'], 'the ro listener needs a port other than rw\'s');
      // load balancer and target group names: 32 characters, letters, digits and hyphens
      if (loadBalancerBaseName(d.cluster).length + '-ro'.length > 32) issue(['cluster'], 'at most 24 characters with a loadBalancer (its target group names hold it)');
    }
  });

export type AwsDeploymentInput = z.input<typeof awsDeploymentSchema>;
export type AwsDeployment = z.output<typeof awsDeploymentSchema>;

/** `keel-<cluster>` with _ as - : what ELB accepts in a name. */
export function loadBalancerBaseName(cluster: string): string {
  return `keel-${cluster.replace(/_/g, '-')}`;
}

export function parameterPrefixOf(d: AwsDeployment): string {
  return d.ssm.prefix ?? `/keel/${d.cluster}`;
}

/** A checked deployment, or KEEL_CONFIG_INVALID naming each wrong field (never a value). */
export function parseAwsDeployment(input: unknown, source = 'keel-aws.yml'): AwsDeployment {
  const result = awsDeploymentSchema.safeParse(input ?? {});
  if (!result.success) {
    throw new KeelError('KEEL_CONFIG_INVALID', `${source} is invalid: ${describeIssues(result.error)}`, {
      hint: 'fix the named fields; deploy/aws/keel-aws.yml is a complete example, and README "On AWS" says what each one is for',
    });
  }
  return result.data;
}

/** keel-aws.yml's text to a checked deployment. */
export function parseAwsDeploymentText(text: string, source = 'keel-aws.yml'): AwsDeployment {
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (err) {
    throw new KeelError('KEEL_CONFIG_UNREADABLE', `${source} is not valid YAML: ${(err as Error).message}`);
  }
  return parseAwsDeployment(raw, source);
}

function toNumber(ip: string): number {
  return ip.split('.').reduce((n, octet) => n * 256 + Number(octet), 0);
}

function range(cidr: string): { first: number; last: number } {
  const [ip, bits] = cidr.split('/') as [string, string];
  const size = 2 ** (32 - Number(bits));
  const first = Math.floor(toNumber(ip) / size) * size;
  return { first, last: first + size - 1 };
}

export function cidrInside(inner: string, outer: string): boolean {
  const a = range(inner);
  const b = range(outer);
  return a.first >= b.first && a.last <= b.last;
}

/** Why EC2 would refuse this fixed address in this subnet, or null. */
export function unusableAddress(address: string, subnetCidr: string): string | null {
  const n = toNumber(address);
  const { first, last } = range(subnetCidr);
  if (n < first || n > last) return `${address} is not in its zone's subnet ${subnetCidr}`;
  // AWS keeps the first four addresses of every subnet (network, router, DNS, future) and the last (broadcast)
  if (n - first < 4 || n === last) return `${address} is one of the five addresses AWS reserves in ${subnetCidr} (the first four and the last)`;
  return null;
}
