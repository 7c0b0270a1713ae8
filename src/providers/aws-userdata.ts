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
const keelSourceSchema = z.discriminatedUnion('kind', [
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
    "# parameters instead of SSM), KEEL_BOOT_ADDRESS (instead of IMDS) and KEEL_BOOT_SYSTEMD=0 (start no unit).",
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
  const script = `${header.join('\n')}${bootBody}`;
  if (Buffer.byteLength(script) > maxUserDataBytes) {
    throw new KeelError('KEEL_CONFIG_INVALID', `the user data is ${Buffer.byteLength(script)} bytes; EC2 takes at most ${maxUserDataBytes}`, {
      hint: 'use fewer etcd endpoints or address ranges, or shorter names',
    });
  }
  return script;
}

/**
 * The steps every node runs, the same for each (what differs is in the variables above it). Each step skips
 * what is already there, so running it again, or on a host that has the packages, does only what is missing.
 */
const bootBody = `
log() { printf 'keel-boot: %s\\n' "$*" >&2; }
fail() { log "$*"; exit 1; }

root="\${KEEL_BOOT_ROOT:-}"
secrets_dir="\${KEEL_BOOT_SECRETS_DIR:-}"
address="\${KEEL_BOOT_ADDRESS:-}"
use_systemd="\${KEEL_BOOT_SYSTEMD:-1}"

[ "$(id -u)" -eq 0 ] || fail "run as root (cloud-init does)"
case "$root" in ''|/*) ;; *) fail "KEEL_BOOT_ROOT must be an absolute path" ;; esac
case "$secrets_dir" in ''|/*) ;; *) fail "KEEL_BOOT_SECRETS_DIR must be an absolute path" ;; esac
if [ -n "$root" ] && [ "$use_systemd" = 1 ]; then fail "KEEL_BOOT_ROOT needs KEEL_BOOT_SYSTEMD=0: the units name /etc/keel"; fi

# ---- packages (only the missing ones) ----
apt_updated=0
missing_packages() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='\${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || printf '%s\\n' "$p"
  done
}
apt_install() {
  local missing=()
  mapfile -t missing < <(missing_packages "$@")
  [ "\${#missing[@]}" -eq 0 ] && return 0
  log "installing \${missing[*]}"
  if [ "$apt_updated" = 0 ]; then apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "\${missing[@]}"
}

if ! dpkg-query -W -f='\${Status}' postgresql-common 2>/dev/null | grep -q 'install ok installed'; then
  # Debian would create and start its own cluster on 5432; Keel's agent makes and runs the node's PostgreSQL
  mkdir -p /etc/postgresql-common/createcluster.d
  printf 'create_main_cluster = false\\n' > /etc/postgresql-common/createcluster.d/keel.conf
  chmod 0644 /etc/postgresql-common/createcluster.d/keel.conf
fi
apt_install ca-certificates curl postgresql-15 postgresql-15-postgis-3 postgresql-client-15
if [ -z "$secrets_dir" ] || [ "$keel_source_kind" = s3 ]; then
  command -v aws >/dev/null || apt_install awscli
fi

node_major() { node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }
if [ "$(node_major)" -lt 20 ]; then
  [ "$keel_nodejs" = nodesource ] || fail "Node.js 20 or later is missing (nodejs: present)"
  log "installing Node.js 20 from NodeSource"
  apt_install gnupg
  curl -fsSL --proto '=https' https://deb.nodesource.com/gpgkey/nodesource-repo.gpg.key | gpg --dearmor --yes -o /usr/share/keyrings/nodesource.gpg
  chmod 0644 /usr/share/keyrings/nodesource.gpg
  printf 'deb [signed-by=/usr/share/keyrings/nodesource.gpg] https://deb.nodesource.com/node_20.x nodistro main\\n' > /etc/apt/sources.list.d/nodesource.list
  chmod 0644 /etc/apt/sources.list.d/nodesource.list
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs
  [ "$(node_major)" -ge 20 ] || fail "Node.js 20 did not install"
fi

# ---- Keel itself ----
keel_home="$root/opt/keel"
staging=$(mktemp -d /run/keel-boot.XXXXXX)
trap 'rm -rf -- "$staging"' EXIT
case "$keel_source_kind" in
  path)
    [ -f "$keel_source/bin/keel.js" ] || fail "no Keel at $keel_source (bin/keel.js is missing)"
    if [ "$keel_source" != "$keel_home" ]; then
      mkdir -p "$root/opt"
      [ ! -e "$keel_home" ] || [ -L "$keel_home" ] || fail "$keel_home exists and is not a link to $keel_source"
      ln -sfn "$keel_source" "$keel_home"
    fi
    ;;
  url|s3)
    stamp="$keel_home/.keel-source"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$keel_source $keel_source_sha256" ]; then
      log "installing Keel from $keel_source"
      if [ "$keel_source_kind" = url ]; then
        curl -fsSL --proto '=https' --retry 5 -o "$staging/keel.tar.gz" "$keel_source"
      else
        aws s3 cp --region "$keel_region" --only-show-errors "$keel_source" "$staging/keel.tar.gz"
      fi
      if [ -n "$keel_source_sha256" ]; then
        printf '%s  %s\\n' "$keel_source_sha256" "$staging/keel.tar.gz" | sha256sum -c --quiet - || fail "the Keel tarball does not match its sha256"
      fi
      rm -rf -- "$keel_home.new"
      mkdir -p "$keel_home.new"
      tar -xzf "$staging/keel.tar.gz" -C "$keel_home.new" --strip-components=1 --no-same-owner
      if [ ! -f "$keel_home.new/bin/keel.js" ] || [ ! -d "$keel_home.new/node_modules" ]; then
        fail "the Keel tarball holds no bin/keel.js or node_modules/"
      fi
      chmod -R go-w "$keel_home.new"
      printf '%s %s\\n' "$keel_source" "$keel_source_sha256" > "$keel_home.new/.keel-source"
      rm -rf -- "$keel_home.old"
      if [ -e "$keel_home" ]; then mv -- "$keel_home" "$keel_home.old"; fi
      mv -- "$keel_home.new" "$keel_home"
      rm -rf -- "$keel_home.old"
    fi
    ;;
  *) fail "unknown Keel source kind $keel_source_kind" ;;
esac
[ -f "$keel_home/dist/providers/aws-boot.js" ] || fail "$keel_home has no dist/providers/aws-boot.js (an unbuilt Keel?)"
if [ "$use_systemd" = 1 ]; then
  printf '#!/bin/sh\\nexec /usr/bin/node /opt/keel/bin/keel.js "$@"\\n' > /usr/local/bin/keel
  chmod 0755 /usr/local/bin/keel
fi

# ---- the node's address, from the instance metadata (IMDSv2) ----
imds() {
  local token
  token=$(curl -fsS -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' http://169.254.169.254/latest/api/token) || return 1
  curl -fsS -H "X-aws-ec2-metadata-token: $token" "http://169.254.169.254/latest/meta-data/$1"
}
if [ -z "$address" ]; then
  for attempt in 1 2 3 4 5 6 7 8 9 10; do
    address=$(imds local-ipv4) && break
    log "instance metadata not answering (attempt $attempt)"
    sleep 3
  done
  zone=$(imds placement/availability-zone) || fail "no availability zone from the instance metadata"
  [ "$zone" = "$keel_zone" ] || fail "this instance is in $zone, its options say $keel_zone"
fi
[[ "$address" =~ ^[0-9]{1,3}(\\.[0-9]{1,3}){3}$ ]] || fail "no private IPv4 address (got '$address')"

# ---- secrets and certificates, by name, into a root-only staging directory on tmpfs ----
fetch_secret() {
  local key=$1 parameter=$2 attempt
  if [ -n "$secrets_dir" ]; then
    cat -- "$secrets_dir$parameter" > "$staging/$key" || fail "no $secrets_dir$parameter"
    return 0
  fi
  for attempt in 1 2 3 4 5; do
    if aws ssm get-parameter --region "$keel_region" --with-decryption --name "$parameter" \\
        --query Parameter.Value --output text > "$staging/$key"; then
      return 0
    fi
    log "cannot read SSM parameter $parameter yet (attempt $attempt)"
    sleep $((attempt * 2))
  done
  fail "cannot read SSM parameter $parameter: does the instance role allow ssm:GetParameter and kms:Decrypt on it?"
}
for ((i = 0; i < \${#secret_parameters[@]}; i += 2)); do
  fetch_secret "\${secret_parameters[i]}" "\${secret_parameters[i + 1]}"
done

# ---- /etc/keel, /var/lib/keel: written by Keel's own code (modes and owners set on the descriptor) ----
mkdir -p "$root/etc/keel"
chmod 0755 "$root/etc/keel"
printf '%s\\n' "$keel_options" > "$root/etc/keel/aws-node.json"
chmod 0644 "$root/etc/keel/aws-node.json"
/usr/bin/env node "$keel_home/dist/providers/aws-boot.js" --options "$root/etc/keel/aws-node.json" \\
  --staging "$staging" --address "$address" --root "$root"
[ -f "$root/etc/keel/node.yml" ] || fail "aws-boot.js wrote no $root/etc/keel/node.yml"

# ---- the units: the guard before the agent, then the router ----
if [ "$use_systemd" != 1 ]; then
  log "node $keel_node of $keel_cluster is ready in '$root'; not starting units (KEEL_BOOT_SYSTEMD=$use_systemd)"
  exit 0
fi
[ -x /usr/bin/node ] || fail "the units run /usr/bin/node, which is missing"
install -m 0644 "$keel_home/deploy/systemd/keel-guard@.service" "$keel_home/deploy/systemd/keel-agent@.service" \\
  "$keel_home/deploy/systemd/keel-router.service" /etc/systemd/system/
systemctl daemon-reload
# Debian's umbrella unit for its own clusters: Keel's agent runs the node's PostgreSQL
systemctl disable --now postgresql.service >/dev/null 2>&1 || true
systemctl enable --now "keel-guard@$keel_instance.service"
systemctl enable --now "keel-agent@$keel_instance.service"
if [ "$keel_router" = 1 ]; then
  systemctl enable --now keel-router.service
fi
log "node $keel_node of $keel_cluster started (guard, agent$([ "$keel_router" = 1 ] && echo ', router'))"
`;
