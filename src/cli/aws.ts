/**
 * `keel aws plan --config keel-aws.yml [--json]`: what `keel aws up` would
 * create on AWS for that file, in order, and the monthly estimate. A dry run:
 * it reads the file and calls no AWS API.
 */
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { KeelError } from '../errors.js';
import { parseAwsDeploymentText } from '../providers/aws-deployment.js';
import { planAwsDeployment, type AwsPlan, type PlannedResource, type PropertyValue } from '../providers/aws-plan.js';
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

export function registerAws(program: Command): void {
  const aws = program.command('aws').description('a cluster on AWS: what it is made of (keel-aws.yml)');
  aws
    .command('plan')
    .description('every resource `keel aws up` would create, in order, and the monthly cost estimate; calls no AWS API')
    .requiredOption('--config <file>', 'the deployment description (keel-aws.yml)')
    .option('--json', 'the plan as JSON')
    .action((options: { config: string; json?: boolean }) => {
      const plan = planAwsDeployment(parseAwsDeploymentText(readConfig(options.config), options.config));
      process.stdout.write(options.json ? `${JSON.stringify(plan, null, 2)}\n` : renderPlan(plan));
    });
}
