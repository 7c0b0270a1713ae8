/**
 * How an EC2 instance becomes one of the cluster's etcd members (and a
 * controller, one active through its lease): its user data. Pure: options in,
 * text out; no I/O.
 *
 * Like a database node's user data (aws-userdata.ts) it is a bash script that
 * holds no secret: it names SSM parameters, read at boot through the instance
 * role. The member's address is fixed (an ENI a replacement instance takes
 * over) and the instance metadata (IMDSv2) must agree with it. Keel's own code
 * (aws-etcd-boot.js) writes the files, decides whether the member starts a new
 * cluster or joins one that runs (a replaced member: removed and added again),
 * and sets up etcd's users and roles once a quorum answers.
 *
 * Values reach the script validated by strict patterns and single-quoted; the
 * rest (keel-aws.yml's text, the controller's launch values) goes in as one
 * line of JSON inside a quoted here-document, which the shell never expands.
 */
import { z } from 'zod';
import { KeelError } from '../errors.js';
import { describeIssues } from '../config/load.js';
import { nameSchema } from '../model/names.js';
import { awsNodeOptionsSchema, maxUserDataBytes, shellQuote, type AwsNodeOptionsInput } from './aws-userdata.js';
import { parameterPrefixOf, parseAwsDeploymentText } from './aws-deployment.js';
import { awsControllerLaunchSchema } from './aws-launch.js';
import { aptShell, bootPreludeShell, fetchSecretShell, instanceAddressShell, keelInstallShell, nodejsShell } from './aws-boot-shell.js';
import { ports } from './aws-plan.js';

/** Where an etcd member keeps things (before the test harness's root prefix, if any). */
export const awsEtcdPaths = {
  configDir: '/etc/keel',
  /** the member's options (no secret), for aws-etcd-boot.js */
  bootOptions: '/etc/keel/aws-etcd.json',
  /** etcd's settings as ETCD_* variables: Debian's etcd reads this file, and so does keel-etcd.service */
  etcdEnv: '/etc/default/etcd',
  /** etcd's CA, its server and peer pair (the key readable by the etcd user alone) */
  etcdTlsDir: '/etc/keel/etcd',
  dataDir: '/var/lib/etcd/keel',
  /** what keel controller reads: keel-aws.yml, the launch values, its settings for the unit */
  deployment: '/etc/keel/keel-aws.yml',
  launch: '/etc/keel/aws-launch.json',
  controllerEnv: '/etc/keel/controller.env',
  /** the cluster CA's certificate and the controller's etcd client pair */
  tlsDir: '/etc/keel/tls',
  /** a test host (KEEL_BOOT_SYSTEMD=0) runs etcd as a process: its PID and its log */
  etcdPidFile: '/run/keel/etcd.pid',
  etcdLog: '/var/log/keel/etcd.log',
  keelHome: '/opt/keel',
} as const;

/** What a member fetches at boot, each from one SSM parameter. */
export const etcdSecretKeys = ['ca.crt', 'server.crt', 'server.key', 'etcd-root-password', 'controller.crt', 'controller.key'] as const;
export type EtcdSecretKey = (typeof etcdSecretKeys)[number];

const node = awsNodeOptionsSchema.shape;
const ipv4Schema = z.string().regex(/^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/, 'an IPv4 address such as 10.0.1.10');

export const awsEtcdMemberOptionsSchema = z
  .object({
    cluster: nameSchema,
    region: node.region,
    /** this member: its name in etcd, its zone, its fixed private address */
    member: z.object({ name: nameSchema, zone: node.zone, address: ipv4Schema }).strict(),
    /** every member of the cluster, this one too */
    members: z.array(z.object({ name: nameSchema, address: ipv4Schema }).strict()).min(1).max(7),
    /** SSM names below it (aws-plan.ts's clusterParameters) */
    parameterPrefix: node.parameterPrefix.unwrap(),
    keel: node.keel,
    nodejs: node.nodejs,
    /** keel-aws.yml's text, which the controller reads */
    deploymentYaml: z.string().min(1).max(8192),
    /** what the controller needs beyond keel-aws.yml (aws-launch.json) */
    controllerLaunch: awsControllerLaunchSchema,
  })
  .strict()
  .superRefine((o, ctx) => {
    const issue = (path: (string | number)[], message: string) => ctx.addIssue({ code: 'custom', path, message });
    o.members.forEach((m, i) => {
      if (o.members.findIndex((other) => other.name === m.name) !== i) issue(['members', i, 'name'], `${m.name} is given twice`);
      if (o.members.findIndex((other) => other.address === m.address) !== i) issue(['members', i, 'address'], `${m.address} is given twice`);
    });
    const self = o.members.find((m) => m.name === o.member.name);
    if (self === undefined) issue(['member', 'name'], `${o.member.name} is not one of the members`);
    else if (self.address !== o.member.address) issue(['member', 'address'], `members give ${o.member.name} the address ${self.address}`);
    if (!o.member.zone.startsWith(o.region)) issue(['member', 'zone'], `${o.member.zone} is not a zone of ${o.region}`);
  });

export type AwsEtcdMemberOptions = z.input<typeof awsEtcdMemberOptionsSchema>;
export type AwsEtcdMember = z.output<typeof awsEtcdMemberOptionsSchema>;
/** where Keel comes from, as for database nodes */
export type AwsKeelSource = AwsNodeOptionsInput['keel'];

/**
 * Options checked, or KEEL_CONFIG_INVALID naming each field that is wrong. keel-aws.yml must be valid and
 * agree with them: the same cluster, region, SSM prefix and members.
 */
export function parseAwsEtcdMemberOptions(input: unknown): AwsEtcdMember {
  const result = awsEtcdMemberOptionsSchema.safeParse(input);
  if (!result.success) {
    throw new KeelError('KEEL_CONFIG_INVALID', `AWS etcd member options are invalid: ${describeIssues(result.error)}`, {
      hint: 'names, zones, addresses and SSM paths are used in a shell script: only the characters each field names are accepted',
    });
  }
  const options = result.data;
  const d = parseAwsDeploymentText(options.deploymentYaml);
  const disagree = (what: string, file: string, given: string) =>
    new KeelError('KEEL_CONFIG_INVALID', `keel-aws.yml says ${what} ${file}, the member options ${given}`, { hint: 'give the member the keel-aws.yml it was planned from' });
  if (d.cluster !== options.cluster) throw disagree('cluster', d.cluster, options.cluster);
  if (d.region !== options.region) throw disagree('region', d.region, options.region);
  if (parameterPrefixOf(d) !== options.parameterPrefix) throw disagree('SSM prefix', parameterPrefixOf(d), options.parameterPrefix);
  const listed = (ms: { name: string; address: string }[]) => ms.map((m) => `${m.name}=${m.address}`).sort().join(',');
  if (listed(d.etcd.members) !== listed(options.members)) throw disagree('etcd members', listed(d.etcd.members), listed(options.members));
  const zone = d.etcd.members.find((m) => m.name === options.member.name)?.zone;
  if (zone !== options.member.zone) throw disagree(`${options.member.name}'s zone`, zone ?? 'none', options.member.zone);
  return options;
}

/** The SSM parameter each secret and certificate of this member comes from (aws-plan.ts names them). */
export function etcdSecretParameters(options: Pick<AwsEtcdMember, 'parameterPrefix' | 'member'>): Record<EtcdSecretKey, string> {
  const prefix = options.parameterPrefix;
  const own = `${prefix}/etcd/${options.member.name}/tls`;
  return {
    'ca.crt': `${prefix}/tls/ca.crt`,
    'server.crt': `${own}/server.crt`,
    'server.key': `${own}/server.key`,
    'etcd-root-password': `${prefix}/etcd-root-password`,
    'controller.crt': `${prefix}/controller/tls/controller.crt`,
    'controller.key': `${prefix}/controller/tls/controller.key`,
  };
}

/** etcd's client URLs of every member, as the controller and the nodes reach them. */
export function etcdClientEndpoints(options: Pick<AwsEtcdMember, 'members'>): string[] {
  return options.members.map((m) => `https://${m.address}:${ports.etcdClient}`);
}

/** The user data of one etcd member: a bash script (see the top of this file). Throws KEEL_CONFIG_INVALID on bad options. */
export function buildEtcdUserData(input: AwsEtcdMemberOptions): string {
  const options = parseAwsEtcdMemberOptions(input);
  const optionsJson = JSON.stringify(options);
  // JSON.stringify escapes every line break, so this one line can never end the here-document early
  if (optionsJson.includes('\n')) throw new KeelError('KEEL_CONFIG_INVALID', 'the member options do not fit on one line');
  const source = options.keel;
  const header = [
    '#!/bin/bash',
    `# Keel etcd member ${options.member.name} of cluster ${options.cluster} in ${options.member.zone}: EC2 user data made by buildEtcdUserData().`,
    '# It holds no secret: only the names of SSM parameters, read at boot through the instance role.',
    '# A test host may set KEEL_BOOT_ROOT (a prefix for every path), KEEL_BOOT_SECRETS_DIR (files named like the',
    '# parameters instead of SSM), KEEL_BOOT_ADDRESS (instead of IMDS) and KEEL_BOOT_SYSTEMD=0 (etcd as a process, no unit).',
    'set -euo pipefail',
    'umask 077',
    '',
    `keel_member=${shellQuote(options.member.name)}`,
    `keel_cluster=${shellQuote(options.cluster)}`,
    `keel_region=${shellQuote(options.region)}`,
    `keel_zone=${shellQuote(options.member.zone)}`,
    `keel_address=${shellQuote(options.member.address)}`,
    `keel_nodejs=${shellQuote(options.nodejs)}`,
    `keel_source_kind=${shellQuote(source.kind)}`,
    `keel_source=${shellQuote(source.kind === 'url' ? source.url : source.kind === 's3' ? source.uri : source.path)}`,
    `keel_source_sha256=${shellQuote(source.kind === 'path' ? '' : (source.sha256 ?? ''))}`,
    '',
    '# secret key, then the SSM parameter it comes from',
    'secret_parameters=(',
    ...Object.entries(etcdSecretParameters(options)).map(([key, name]) => `  ${shellQuote(key)} ${shellQuote(name)}`),
    ')',
    '',
    '# the member options without any secret, one line of JSON for aws-etcd-boot.js',
    "read -r -d '' keel_options <<'KEEL_OPTIONS_EOF' || true",
    optionsJson,
    'KEEL_OPTIONS_EOF',
    '',
  ];
  const script = `${header.join('\n')}${etcdBootBody}`;
  if (Buffer.byteLength(script) > maxUserDataBytes) {
    throw new KeelError('KEEL_CONFIG_INVALID', `the etcd member's user data is ${Buffer.byteLength(script)} bytes; EC2 takes at most ${maxUserDataBytes}`, {
      hint: 'keel-aws.yml goes into it whole: leave out its comments',
    });
  }
  return script;
}

const bootHelper = 'providers/aws-etcd-boot.js';

/** The steps every member runs; each skips what is already there, so running it again does only what is missing. */
const etcdBootBody = `${bootPreludeShell}
# ---- packages (only the missing ones) ----
${aptShell}
if [ "$use_systemd" = 1 ]; then
  # Debian's etcd.service runs a single-member etcd of its own (started on installing, enabled at boot), on the
  # ports this member needs: masked before the package comes, stopped if it came with the image
  systemctl stop etcd.service >/dev/null 2>&1 || true
  systemctl mask etcd.service >/dev/null
fi
apt_install ca-certificates curl etcd-server etcd-client
if [ -z "$secrets_dir" ] || [ "$keel_source_kind" = s3 ]; then
  command -v aws >/dev/null || apt_install awscli
fi
${nodejsShell}
# ---- Keel itself ----
${keelInstallShell(bootHelper)}
# ---- the member's fixed address (its network interface): the instance metadata must agree ----
${instanceAddressShell}[ "$address" = "$keel_address" ] || fail "this instance's address is '$address', member $keel_member's is $keel_address: launch it on the member's network interface"

# ---- secrets and certificates, by name, into a root-only staging directory on tmpfs ----
${fetchSecretShell}
# ---- etcd's files: its pair, ${awsEtcdPaths.etcdEnv}, a new cluster or one that runs (a replaced member rejoins) ----
mkdir -p "$root${awsEtcdPaths.configDir}"
chmod 0755 "$root${awsEtcdPaths.configDir}"
printf '%s\\n' "$keel_options" > "$root${awsEtcdPaths.bootOptions}"
chmod 0644 "$root${awsEtcdPaths.bootOptions}"
boot() {
  /usr/bin/env node "$keel_home/dist/${bootHelper}" "$1" --options "$root${awsEtcdPaths.bootOptions}" --staging "$staging" --root "$root"
}
boot etcd
[ -f "$root${awsEtcdPaths.etcdEnv}" ] || fail "aws-etcd-boot.js wrote no $root${awsEtcdPaths.etcdEnv}"

# ---- etcd: its unit, or in a test host a process whose PID goes to ${awsEtcdPaths.etcdPidFile} ----
if [ "$use_systemd" = 1 ]; then
  install -m 0644 "$keel_home/deploy/systemd/keel-etcd.service" "$keel_home/deploy/systemd/keel-controller.service" /etc/systemd/system/
  systemctl daemon-reload
  systemctl enable keel-etcd.service
  # no waiting here: a member is ready once a quorum runs, and the others may still be booting
  systemctl start --no-block keel-etcd.service
else
  pid_file="$root${awsEtcdPaths.etcdPidFile}"
  mkdir -p "$(dirname "$pid_file")" "$(dirname "$root${awsEtcdPaths.etcdLog}")"
  # a live etcd, not a PID reused since nor a zombie waiting to be reaped (neither has this executable)
  if [ -f "$pid_file" ] && [ "$(readlink "/proc/$(cat "$pid_file")/exe" 2>/dev/null)" = /usr/bin/etcd ]; then
    log "etcd runs already (pid $(cat "$pid_file"))"
  else
    # the variables as they are, never evaluated by a shell
    mapfile -t etcd_env < <(grep '^ETCD_' "$root${awsEtcdPaths.etcdEnv}")
    setsid env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "\${etcd_env[@]}" /usr/bin/etcd >> "$root${awsEtcdPaths.etcdLog}" 2>&1 < /dev/null &
    printf '%s\\n' "$!" > "$pid_file"
    log "etcd started (pid $!)"
  fi
fi

# ---- once a quorum answers: etcd's users and roles (every member tries, one suffices), the controller's files ----
boot controller

if [ "$use_systemd" != 1 ]; then
  log "member $keel_member of $keel_cluster is ready in '$root'; not starting keel-controller (KEEL_BOOT_SYSTEMD=$use_systemd)"
  exit 0
fi
[ -x /usr/bin/node ] || fail "the controller's unit runs /usr/bin/node, which is missing"
systemctl enable --now keel-controller.service
log "member $keel_member of $keel_cluster started (etcd, controller)"
`;
