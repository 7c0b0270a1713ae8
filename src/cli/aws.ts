/**
 * `keel aws plan --config keel-aws.yml [--json]`: what `keel aws up` would
 * create on AWS for that file, in order, and the monthly estimate. A dry run:
 * it reads the file and calls no AWS API.
 *
 * `keel aws up` and `keel aws down` make and remove it (src/providers/aws-up.ts,
 * aws-down.ts). Both check everything they can before the first AWS call, and
 * without --yes they print what they would do and ask on a terminal; without
 * one they refuse (KEEL_USAGE), having called nothing.
 */
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline/promises';
import type { Command } from 'commander';
import { KeelError } from '../errors.js';
import { parseAwsDeploymentText, type AwsDeployment } from '../providers/aws-deployment.js';
import { awsDown, describeDown } from '../providers/aws-down.js';
import type { AwsKeelSource } from '../providers/aws-etcd-userdata.js';
import { planAwsDeployment, type AwsPlan, type PlannedResource, type PropertyValue } from '../providers/aws-plan.js';
import { awsUp, checkUpInput, upResources, type AwsUpInput } from '../providers/aws-up.js';
import { keelSourceSchema } from '../providers/aws-userdata.js';
import { table } from './table.js';

function readConfig(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new KeelError('KEEL_CONFIG_UNREADABLE', `cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`, {
      hint: 'give --config the path of a keel-aws.yml (deploy/aws/keel-aws.yml is an example)',
    });
  }
}

const show = (value: PropertyValue): string => (Array.isArray(value) ? value.join(',') : String(value));

/** The table's last column: the properties that tell one resource from another, in a line. */
function details(r: PlannedResource): string {
  const skip = new Set(['why', 'holds', 'tags', 'userData', 'description', 'egress', 'amiId']);
  const parts = Object.entries(r.properties)
    .filter(([key]) => !skip.has(key))
    .map(([key, value]) => `${key}=${show(value)}`);
  if (r.document !== undefined && 'file' in r.document) parts.push(`document=${r.document.file}`);
  return parts.join(' ');
}

const usd = (n: number): string => `$${n.toFixed(2)}`;

export function renderPlan(plan: AwsPlan): string {
  const rows = plan.resources.map((r, i) => [String(i + 1), r.kind, r.name, r.zone ?? '-', r.createdBy, details(r)]);
  const c = plan.cost;
  const costRows = c.lines.map((l) => [l.item, String(l.quantity), l.unit, `$${l.unitPriceUsd}`, usd(l.monthlyUsd)]);
  const counts = new Map<string, number>();
  for (const r of plan.resources) counts.set(r.kind, (counts.get(r.kind) ?? 0) + 1);
  return [
    `keel aws plan: cluster ${plan.cluster} in ${plan.region}; a dry run, no AWS API was called`,
    '',
    table(['#', 'kind', 'name', 'zone', 'by', 'details'], rows),
    `${plan.resources.length} resources: ${[...counts].map(([kind, n]) => `${n} ${kind}`).join(', ')}`,
    '',
    `Monthly cost ESTIMATE (on-demand list prices of ${c.pricesOf}, ${c.asOf}; ${c.hoursPerMonth} hours a month):`,
    table(['item', 'quantity', 'unit', 'unit price', 'per month'], costRows),
    `estimated total: ${usd(c.totalMonthlyUsd)} a month${c.unpriced.length > 0 ? ` + unpriced: ${c.unpriced.join(', ')}` : ''}`,
    `not included: ${c.notIncluded.join('; ')}`,
    `prices from: ${c.source}`,
    '',
    ...plan.notes.map((n) => `note: ${n}`),
    '',
  ].join('\n');
}

/** --keel as the user data takes it: an https:// tarball with its sha256, an S3 object, or a path on the AMI. */
export function keelSourceOf(given: string, sha256: string | undefined): AwsKeelSource {
  const raw = given.startsWith('https://')
    ? { kind: 'url', url: given, sha256 }
    : given.startsWith('s3://')
      ? { kind: 's3', uri: given, ...(sha256 === undefined ? {} : { sha256 }) }
      : given.startsWith('/')
        ? { kind: 'path', path: given }
        : null;
  const parsed = raw === null ? null : keelSourceSchema.safeParse(raw);
  if (parsed === null || !parsed.success) {
    const why = parsed === null ? 'it is no https:// URL, s3:// URI or absolute path' : parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ');
    throw new KeelError('KEEL_USAGE', `--keel ${JSON.stringify(given)} is not a Keel source the instances can use: ${why}`, {
      hint: 'give --keel https://HOST/keel-VERSION.tgz --keel-sha256 HEX, --keel s3://BUCKET/keel-VERSION.tgz, or --keel /opt/keel (Keel on the AMI)',
    });
  }
  if (parsed.data.kind === 'path' && sha256 !== undefined) throw new KeelError('KEEL_USAGE', '--keel-sha256 goes with a tarball (https:// or s3://), not a path');
  return parsed.data;
}

/** The controller's policy, deploy/aws/iam-policy.json of this Keel. */
function controllerPolicy(): string {
  const path = new URL('../../deploy/aws/iam-policy.json', import.meta.url);
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new KeelError('KEEL_CONFIG_UNREADABLE', `cannot read the controller's policy ${path.pathname}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`, {
      hint: 'run keel from a complete release (it ships deploy/aws/)',
    });
  }
}

/** Goes on with --yes, or when the person at the terminal types yes; refuses without a terminal. */
async function confirmed(what: string[], yes: boolean | undefined, action: string): Promise<void> {
  if (yes === true) return;
  process.stdout.write(`${what.join('\n')}\n`);
  if (process.stdin.isTTY !== true || process.stdout.isTTY !== true) {
    throw new KeelError('KEEL_USAGE', `${action} changes an AWS account and there is no terminal to confirm on: nothing was done`, { hint: 'look at what it would do above, then run it again with --yes' });
  }
  const prompt = createInterface({ input: process.stdin, output: process.stdout });
  try {
    const answer = await prompt.question(`${action}: type yes to go on: `);
    if (answer.trim() !== 'yes') throw new KeelError('KEEL_USAGE', `${action} was not confirmed: nothing was done`, { hint: 'type yes, or give --yes' });
  } finally {
    prompt.close();
  }
}

function upSummary(d: AwsDeployment): string[] {
  const rows = upResources(d).map((r, i) => [String(i + 1), r.kind, r.name, r.zone ?? '-']);
  return [
    `keel aws up: cluster ${d.cluster} in ${d.region}. It finds each of these and creates the ones missing, in this order`,
    '(parameters that exist are kept, never overwritten; `keel aws plan` shows every detail and the cost):',
    table(['#', 'kind', 'name', 'zone'], rows).trimEnd(),
    `Then the controller on the etcd members launches the ${d.nodes} database nodes.`,
  ];
}

const lineOut = (line: string): void => {
  process.stdout.write(`${line}\n`);
};

export function registerAws(program: Command): void {
  const aws = program.command('aws').description('a cluster on AWS (keel-aws.yml): plan it, make it, remove it');
  aws
    .command('plan')
    .description('every resource `keel aws up` would create, in order, and the monthly cost estimate; calls no AWS API')
    .requiredOption('--config <file>', 'the deployment description (keel-aws.yml)')
    .option('--json', 'the plan as JSON')
    .action((options: { config: string; json?: boolean }) => {
      const plan = planAwsDeployment(parseAwsDeploymentText(readConfig(options.config), options.config));
      process.stdout.write(options.json ? `${JSON.stringify(plan, null, 2)}\n` : renderPlan(plan));
    });
  aws
    .command('up')
    .description("creates what the plan lists and is missing: groups, roles, the cluster's secrets in SSM, the NLB, the etcd members (which run the controller, which launches the nodes)")
    .requiredOption('--config <file>', 'the deployment description (keel-aws.yml)')
    .requiredOption('--keel <source>', 'where the instances get Keel: https://.../keel.tgz (with --keel-sha256), s3://bucket/keel.tgz, or a path on the AMI')
    .option('--keel-sha256 <hex>', "the release tarball's SHA-256")
    .option('--nodejs <how>', 'nodesource (install Node.js 20) or present (on the AMI)', 'nodesource')
    .option('--yes', 'go on without asking')
    .action(async (options: { config: string; keel: string; keelSha256?: string; nodejs: string; yes?: boolean }) => {
      const text = readConfig(options.config);
      const deployment = parseAwsDeploymentText(text, options.config);
      if (options.nodejs !== 'nodesource' && options.nodejs !== 'present') throw new KeelError('KEEL_USAGE', `--nodejs ${options.nodejs}: give nodesource or present`);
      const input: AwsUpInput = { deployment, deploymentText: text, keel: keelSourceOf(options.keel, options.keelSha256), nodejs: options.nodejs, controllerPolicy: controllerPolicy() };
      checkUpInput(input);
      await confirmed(upSummary(deployment), options.yes, 'keel aws up');
      await awsUp(input, { out: lineOut });
    });
  aws
    .command('down')
    .description('removes the cluster: etcd members first, then its instances (snapshotting their volumes), the NLB, interfaces, IAM, groups; keeps the SSM parameters')
    .requiredOption('--config <file>', 'the deployment description (keel-aws.yml)')
    .option('--delete-snapshots', 'terminate without snapshotting the volumes first')
    .option('--delete-parameters', "delete the cluster's SSM parameters too (passwords, keys, the CA)")
    .option('--yes', 'go on without asking')
    .action(async (options: { config: string; deleteSnapshots?: boolean; deleteParameters?: boolean; yes?: boolean }) => {
      const deployment = parseAwsDeploymentText(readConfig(options.config), options.config);
      const input = { deployment, deleteSnapshots: options.deleteSnapshots === true, deleteParameters: options.deleteParameters === true };
      await confirmed(describeDown(input), options.yes, 'keel aws down');
      await awsDown(input, { out: lineOut });
    });
}
