/**
 * How an EC2 instance becomes a Keel node: the user data of one node and the
 * node.yml it ends up with. Pure: options in, text out; no I/O.
 *
 * The user data is a bash script, not a #cloud-config document: cloud-init runs
 * it once on first boot (scripts-user), and the very same file runs without
 * cloud-init in a test host, passes `bash -n` and shellcheck, and does its
 * steps in one explicit order (packages, Keel, secrets, files, units).
 *
 * It never holds a secret. It names SSM parameters, which it reads at boot
 * through the instance role (`aws ssm get-parameter --with-decryption`), and
 * the node's private address comes from the instance metadata (IMDSv2) at boot
 * too. Writing the files (node.yml 0600, keys owned by postgres) is left to
 * Keel's own code (aws-boot.ts), not to shell text substitution.
 *
 * Everything from the options that reaches the script is validated by a strict
 * pattern and then single-quoted, so no value can become shell; the rest goes
 * in as one line of JSON inside a quoted here-document, which the shell never
 * expands.
 */
import { z } from 'zod';
import { KeelError } from '../errors.js';
import { describeIssues } from '../config/load.js';
import { dynamicConfigSchema, nodeConfigSchema, type NodeConfig } from '../config/schema.js';
import { nameSchema } from '../model/names.js';
import { nodeBootBody } from './aws-userdata-body.js';

/** Where Keel puts things on a node (before the test harness's root prefix, if any). */
export const awsPaths = {
  configDir: '/etc/keel',
  tlsDir: '/etc/keel/tls',
  /** the unit instance is `node`: keel-agent@node.service reads /etc/keel/node.yml */
  nodeConfig: '/etc/keel/node.yml',
  bootOptions: '/etc/keel/aws-node.json',
  routerEnv: '/etc/keel/router.env',
  stateDir: '/var/lib/keel',
  /** PostgreSQL's own directory (owned by postgres): data, socket, log; node.yml and keys stay outside it */
  postgresDir: '/var/lib/keel/postgres',
  dataDir: '/var/lib/keel/postgres/data',
  guardSocket: '/var/lib/keel/guard.sock',
  keelHome: '/opt/keel',
  unitInstance: 'node',
} as const;

/** What a node fetches at boot, each from one SSM parameter (SecureString for the secret ones). */
export const nodeSecretKeys = [
  'superuser-password',
  'rewind-password',
  'app-password',
  'api-token',
  'ca.crt',
  'node.crt',
  'node.key',
  'replication.crt',
  'replication.key',
] as const;
export const routerSecretKeys = ['router.crt', 'router.key'] as const;
export type SecretKey = (typeof nodeSecretKeys)[number] | (typeof routerSecretKeys)[number];

// SSM's own alphabet for parameter names, absolute, without the reserved aws/ssm prefixes
const parameterNameSchema = z
  .string()
  .max(1011)
  .regex(/^(\/[A-Za-z0-9_.-]+)+$/, 'an SSM parameter path such as /keel/main (letters, digits, _ . - between slashes)')
  .refine((path) => !/^\/(aws|ssm)(\/|$)/i.test(path), 'the /aws and /ssm prefixes are reserved by AWS');

const regionSchema = z.string().regex(/^[a-z]{2}(-[a-z]+)+-\d{1,2}$/, 'an AWS region such as eu-west-1');
const zoneSchema = z.string().max(64).regex(/^[a-z]{2}(-[a-z0-9]+)+$/, 'an availability zone such as eu-west-1a');
const sha256Schema = z.string().regex(/^[0-9a-f]{64}$/, 'a SHA-256 in lower-case hex');
const httpsEndpointSchema = z
  .string()
  .regex(/^https:\/\/[A-Za-z0-9.-]+:\d{1,5}$/, 'https://host:port (etcd with TLS; an address or a DNS name)');
const listenSchema = z.string().regex(/^[0-9.]+:\d{1,5}$/, 'an IPv4 address and port such as 0.0.0.0:5432');
const cidrSchema = z.string().regex(/^\d{1,3}(\.\d{1,3}){3}\/\d{1,2}$/, 'an IPv4 range such as 10.0.0.0/16');
const portSchema = z.number().int().min(1).max(65535);

/** Where the node gets Keel: a release tarball (one top directory holding bin/, dist/, node_modules/, deploy/). */
export const keelSourceSchema = z.discriminatedUnion('kind', [
  z
    .object({
      kind: z.literal('url'),
      url: z
        .string()
        .max(2048)
        .regex(/^https:\/\/[A-Za-z0-9.-]+(:\d{1,5})?(\/[A-Za-z0-9._~%+=,@-]*)*$/, 'an https:// URL of letters, digits and . _ ~ % + = , @ - /'),
      sha256: sha256Schema,
    })
    .strict(),
  z
    .object({
      kind: z.literal('s3'),
      uri: z.string().max(1100).regex(/^s3:\/\/[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](\/[A-Za-z0-9._+=,@-]+)+$/, 's3://bucket/key (letters, digits and . _ + = , @ - /)'),
      sha256: sha256Schema.optional(),
    })
    .strict(),
  /** already on the machine (an AMI with Keel baked in; the tests' own checkout) */
  z.object({ kind: z.literal('path'), path: z.string().max(512).regex(/^(\/[A-Za-z0-9._-]+)+$/, 'an absolute path of letters, digits and . _ -') }).strict(),
]);

export const awsNodeOptionsSchema = z
  .object({
    name: nameSchema,
    cluster: nameSchema,
    region: regionSchema,
    zone: zoneSchema,
    etcdEndpoints: z.array(httpsEndpointSchema).min(1).max(9),
    /** the cluster's own addresses (replication, pg_rewind): the VPC's range */
    clusterCidrs: z.array(cidrSchema).min(1).max(16),
    /** the applications' addresses (and the routers'); by default the cluster's */
    applicationCidrs: z.array(cidrSchema).min(1).max(16).optional(),
    postgresPort: portSchema.default(5432),
    apiPort: portSchema.default(8008),
    nofailover: z.boolean().default(false),
    keel: keelSourceSchema,
    /** Node 20 from NodeSource's apt repository (what `make setup` machines run), or already present (an AMI) */
    nodejs: z.enum(['nodesource', 'present']).default('nodesource'),
    /** SSM parameters live under this path: cluster-wide ones at PREFIX/..., this node's at PREFIX/nodes/NAME/... */
    parameterPrefix: parameterNameSchema.optional(),
    /** a router on this node too, with its own client pair (PREFIX/router/tls/router.{crt,key}) */
    router: z.object({ rw: listenSchema, ro: listenSchema }).strict().optional(),
    /** settings for the `config` key when this node bootstraps the cluster */
    dynamic: dynamicConfigSchema.optional(),
  })
  .strict();

export type AwsNodeOptionsInput = z.input<typeof awsNodeOptionsSchema>;
export type AwsNodeOptions = z.output<typeof awsNodeOptionsSchema>;

/** Options checked, or KEEL_CONFIG_INVALID naming each field that is wrong. */
export function parseAwsNodeOptions(input: unknown): AwsNodeOptions {
  const result = awsNodeOptionsSchema.safeParse(input);
  if (!result.success) {
    throw new KeelError('KEEL_CONFIG_INVALID', `AWS node options are invalid: ${describeIssues(result.error)}`, {
      hint: 'names, zones, URLs and SSM paths are used in a shell script: only the characters each field names are accepted',
    });
  }
  return result.data;
}

/** The SSM parameter each secret and certificate of this node comes from. */
export function secretParameters(options: AwsNodeOptions): Partial<Record<SecretKey, string>> {
  const prefix = options.parameterPrefix ?? `/keel/${options.cluster}`;
  const node = `${prefix}/nodes/${options.name}`;
  const parameters: Partial<Record<SecretKey, string>> = {
    'superuser-password': `${prefix}/superuser-password`,
    'rewind-password': `${prefix}/rewind-password`,
    'app-password': `${prefix}/app-password`,
    'ca.crt': `${prefix}/tls/ca.crt`,
    'api-token': `${node}/api-token`,
    'node.crt': `${node}/tls/node.crt`,
    'node.key': `${node}/tls/node.key`,
    'replication.crt': `${node}/tls/replication.crt`,
    'replication.key': `${node}/tls/replication.key`,
  };
  if (options.router !== undefined) {
    parameters['router.crt'] = `${prefix}/router/tls/router.crt`;
    parameters['router.key'] = `${prefix}/router/tls/router.key`;
  }
  return parameters;
}

/** The parameter a node's user data waits on: it names the instance the node's other parameters are for (aws-credentials.ts writes it last). */
export function instanceIdParameter(parameterPrefix: string, node: string): string {
  return `${parameterPrefix}/nodes/${node}/instance-id`;
}

/** The files a node's TLS lives in, under an optional root prefix (the test harness's). */
export function awsTlsFiles(root = ''): Record<'ca' | 'nodeCert' | 'nodeKey' | 'replicationCert' | 'replicationKey' | 'routerCert' | 'routerKey', string> {
  const dir = `${root}${awsPaths.tlsDir}`;
  return {
    ca: `${dir}/ca.crt`,
    nodeCert: `${dir}/node.crt`,
    nodeKey: `${dir}/node.key`,
    replicationCert: `${dir}/replication.crt`,
    replicationKey: `${dir}/replication.key`,
    routerCert: `${dir}/router.crt`,
    routerKey: `${dir}/router.key`,
  };
}

export interface AwsBootValues {
  /** the instance's private IPv4 address, from IMDS at boot */
  address: string;
  superuserPassword: string;
  rewindPassword: string;
  appPassword: string;
  apiToken: string;
  /** a prefix for every path (the test harness); '' on an instance */
  root?: string;
}

/**
 * node.yml of an AWS node, once the boot knows its address and secrets. PostgreSQL and the API listen on
 * the private address alone; TLS everywhere, replication by certificate, the guard before the agent.
 */
export function awsNodeConfig(options: AwsNodeOptions, boot: AwsBootValues): NodeConfig {
  const root = boot.root ?? '';
  if (!/^\d{1,3}(\.\d{1,3}){3}$/.test(boot.address)) {
    throw new KeelError('KEEL_CONFIG_INVALID', `the node's address ${JSON.stringify(boot.address)} is not an IPv4 address`, {
      hint: 'the address comes from the instance metadata (local-ipv4)',
    });
  }
  const files = awsTlsFiles(root);
  const tls = { ca: files.ca, cert: files.nodeCert, key: files.nodeKey };
  const config = {
    name: options.name,
    cluster: options.cluster,
    zone: options.zone,
    tags: { nofailover: options.nofailover },
    etcd: { endpoints: options.etcdEndpoints, requestTimeoutMs: 2000, tls },
    api: {
      listen: `${boot.address}:${options.apiPort}`,
      connectAddress: `${boot.address}:${options.apiPort}`,
      token: boot.apiToken,
      readAuth: false,
    },
    postgres: {
      dataDir: `${root}${awsPaths.dataDir}`,
      binDir: '/usr/lib/postgresql/15/bin',
      listen: boot.address,
      port: options.postgresPort,
      connectAddress: `${boot.address}:${options.postgresPort}`,
      database: 'app',
      superuser: { username: 'postgres', password: boot.superuserPassword },
      replication: { username: 'replicator', cert: files.replicationCert, key: files.replicationKey },
      rewind: { username: 'keel_rewind', password: boot.rewindPassword },
      app: { username: 'app', password: boot.appPassword },
      hba: { cluster: options.clusterCidrs, applications: options.applicationCidrs ?? options.clusterCidrs },
      extensions: ['postgis'],
    },
    guard: { socket: `${root}${awsPaths.guardSocket}` },
    tls,
    bootstrap: options.dynamic === undefined ? {} : { dynamic: options.dynamic },
  };
  const result = nodeConfigSchema.safeParse(config);
  if (!result.success) {
    // the issues name fields, never values: a password stays out of the message
    throw new KeelError('KEEL_CONFIG_INVALID', `the AWS node's node.yml would be invalid: ${result.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  }
  return result.data;
}

/** The router's settings file for keel-router.service (no secret: its pair is in /etc/keel/tls). */
export function awsRouterEnv(options: AwsNodeOptions): string | null {
  if (options.router === undefined) return null;
  return [
    `KEEL_ETCD=${options.etcdEndpoints.join(',')}`,
    `KEEL_CLUSTER=${options.cluster}`,
    `KEEL_ROUTER_RW=${options.router.rw}`,
    `KEEL_ROUTER_RO=${options.router.ro}`,
    'KEEL_ROUTER_ARGS=',
    '',
  ].join('\n');
}

/** A single-quoted shell word; the values quoted here were validated first, this is the second wall. */
export function shellQuote(value: string): string {
  if (value.includes('\0')) throw new KeelError('KEEL_CONFIG_INVALID', 'a value for the user data holds a NUL byte');
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

/** EC2 takes at most 16 KB of user data (before base64). */
export const maxUserDataBytes = 16 * 1024;

/** The user data of one node: a bash script (see the top of this file). Throws KEEL_CONFIG_INVALID on bad options. */
export function buildUserData(input: AwsNodeOptionsInput | AwsNodeOptions): string {
  const options = parseAwsNodeOptions(input);
  const parameters = secretParameters(options);
  const optionsJson = JSON.stringify(options);
  // JSON.stringify escapes every line break, so this one line can never end the here-document early
  if (optionsJson.includes('\n')) throw new KeelError('KEEL_CONFIG_INVALID', 'the node options do not fit on one line');
  const source = options.keel;
  const header = [
    '#!/bin/bash',
    `# Keel node ${options.name} of cluster ${options.cluster} in ${options.zone}: EC2 user data made by buildUserData().`,
    '# It holds no secret: only the names of SSM parameters, read at boot through the instance role.',
    '# A test host may set KEEL_BOOT_ROOT (a prefix for every path), KEEL_BOOT_SECRETS_DIR (files named like the',
    '# parameters instead of SSM), KEEL_BOOT_ADDRESS and KEEL_BOOT_INSTANCE_ID (instead of IMDS), KEEL_BOOT_DATA_DEVICE',
    '# (the data volume; none under KEEL_BOOT_ROOT without it) and KEEL_BOOT_SYSTEMD=0 (start no unit).',
    'set -euo pipefail',
    'umask 077',
    '',
    `keel_node=${shellQuote(options.name)}`,
    `keel_cluster=${shellQuote(options.cluster)}`,
    `keel_region=${shellQuote(options.region)}`,
    `keel_zone=${shellQuote(options.zone)}`,
    `keel_nodejs=${shellQuote(options.nodejs)}`,
    `keel_source_kind=${shellQuote(source.kind)}`,
    `keel_source=${shellQuote(source.kind === 'url' ? source.url : source.kind === 's3' ? source.uri : source.path)}`,
    `keel_source_sha256=${shellQuote(source.kind === 'path' ? '' : (source.sha256 ?? ''))}`,
    `keel_router=${options.router === undefined ? '0' : '1'}`,
    `keel_instance=${shellQuote(awsPaths.unitInstance)}`,
    `instance_id_parameter=${shellQuote(instanceIdParameter(options.parameterPrefix ?? `/keel/${options.cluster}`, options.name))}`,
    '',
    '# secret key, then the SSM parameter it comes from',
    'secret_parameters=(',
    ...Object.entries(parameters).map(([key, name]) => `  ${shellQuote(key)} ${shellQuote(name)}`),
    ')',
    '',
    '# the node options without any secret, one line of JSON for aws-boot.js',
    "read -r -d '' keel_options <<'KEEL_OPTIONS_EOF' || true",
    optionsJson,
    'KEEL_OPTIONS_EOF',
    '',
  ];
  const script = `${header.join('\n')}${nodeBootBody}`;
  if (Buffer.byteLength(script) > maxUserDataBytes) {
    throw new KeelError('KEEL_CONFIG_INVALID', `the user data is ${Buffer.byteLength(script)} bytes; EC2 takes at most ${maxUserDataBytes}`, {
      hint: 'use fewer etcd endpoints or address ranges, or shorter names',
    });
  }
  return script;
}
