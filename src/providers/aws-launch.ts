/**
 * aws-launch.json: what a controller on AWS needs beside keel-aws.yml, which
 * `keel aws up` learns while it creates the cluster (the nodes' security
 * group id, the NLB's DNS name) or is told (where nodes get Keel). A codec:
 * text in, checked value out; it holds no secret.
 */
import { z } from 'zod';
import { describeIssues } from '../config/load.js';
import { KeelError } from '../errors.js';
import { keelSourceSchema } from './aws-userdata.js';

const endpointSchema = z.string().max(256).regex(/^https?:\/\/[A-Za-z0-9.-]+(:\d{1,5})?\/?$/, 'http(s)://host[:port]');

export const awsControllerLaunchSchema = z
  .object({
    /** the nodes' security group (keel-<cluster>-db), by id: EC2 launches into ids */
    securityGroupIds: z.array(z.string().regex(/^sg-[0-9a-f]{8,17}$/, 'a security group id such as sg-0123456789abcdef0')).min(1).max(5),
    /** where a node gets Keel (a release tarball with its sha256, an S3 object, or a path on the AMI) */
    keel: keelSourceSchema,
    /** the nodes' instance profile; default keel-<cluster>-node */
    instanceProfileName: z.string().regex(/^[A-Za-z0-9+=,.@_-]{1,128}$/, 'an IAM instance profile name').optional(),
    nodejs: z.enum(['nodesource', 'present']).optional(),
    /** the NLB's DNS name: every node's certificate names it, so clients through the NLB verify the host */
    loadBalancerDnsName: z.string().max(255).regex(/^[a-z0-9.-]+$/, 'a DNS name').optional(),
    /** EC2-, SSM- and ELB-compatible endpoints (tests); AWS's own by default */
    endpoints: z.object({ ec2: endpointSchema.optional(), ssm: endpointSchema.optional(), elb: endpointSchema.optional() }).strict().optional(),
  })
  .strict();

export type AwsControllerLaunchFile = z.output<typeof awsControllerLaunchSchema>;

/** aws-launch.json's text to checked values, or KEEL_CONFIG_INVALID naming each wrong field. */
export function parseAwsControllerLaunch(text: string, source = 'aws-launch.json'): AwsControllerLaunchFile {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new KeelError('KEEL_CONFIG_UNREADABLE', `${source} is not valid JSON: ${(err as Error).message}`, { hint: 'keel aws up writes it; see README "On AWS"' });
  }
  const result = awsControllerLaunchSchema.safeParse(raw);
  if (!result.success) throw new KeelError('KEEL_CONFIG_INVALID', `${source} is invalid: ${describeIssues(result.error)}`, { hint: 'keel aws up writes it; see README "On AWS"' });
  return result.data;
}
