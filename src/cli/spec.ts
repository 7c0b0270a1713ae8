/**
 * `keel spec show|set|edit` and `keel scale`: the declared shape, changed
 * with a compare-and-swap so that two people (or a person and the autoscaler)
 * never overwrite each other's change unseen.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Command } from 'commander';
import { parse as parseYaml, stringify as toYaml } from 'yaml';
import { applySettings, defaultSpec, editableSpec, fromEditable, localZones, type ProviderLimits } from '../controller/spec.js';
import type { SpecValue, Versioned } from '../model/values.js';
import { KeelError } from '../errors.js';
import { defaultLocalInstanceClass } from '../postgres/instance-class.js';
import { localLimits, unknownLimits } from './controller.js';
import { resolveTarget, withTargetOptions, type Target, type TargetOptions } from './target.js';

const casAttempts = 5;

function limitsOf(target: Target): ProviderLimits {
  return target.layout !== null ? localLimits : unknownLimits;
}

/** The stored spec, or (when no controller wrote one yet) the one it would write, with null revision. */
export async function currentSpec(target: Target): Promise<{ spec: SpecValue; stored: Versioned<SpecValue> | null }> {
  const stored = await target.dcs.readSpec();
  if (stored !== null) return { spec: stored.value, stored };
  const view = await target.dcs.readCluster();
  const local = target.layout !== null;
  const nodes = local ? target.layout!.nodeNames().length : view.members.length;
  const zones = local ? localZones : [...new Set(view.members.map((m) => m.zone))].sort();
  return { spec: defaultSpec({ nodes, zones, instanceClass: local ? defaultLocalInstanceClass : 'default' }), stored: null };
}

/** Read, change, compare-and-swap; read again when someone else wrote in between. */
async function update(target: Target, change: (spec: SpecValue) => SpecValue): Promise<SpecValue> {
  for (let attempt = 0; attempt < casAttempts; attempt++) {
    const { spec, stored } = await currentSpec(target);
    const next = change(spec);
    if (await target.dcs.putSpec(next, stored?.modRevision ?? null)) return next;
  }
  throw new KeelError('KEEL_CONFLICT', `the spec changed under ${casAttempts} attempts to write it`);
}

function describe(spec: SpecValue): string {
  const a = spec.autoscale;
  const scaling = a.enabled ? `autoscale ${a.metric} target ${a.target}, replicas ${a.minReplicas}..${a.maxReplicas}` : 'autoscale off';
  return `${spec.nodes} nodes (${spec.nodes - 1} replicas) + ${spec.scaling.added.length} autoscaled, zones ${spec.zones.join(',')}, class ${spec.instanceClass}, replace after ${spec.replaceAfterSeconds} s, ${scaling}`;
}

async function withTarget<T>(options: TargetOptions, work: (target: Target) => Promise<T>): Promise<T> {
  const target = resolveTarget(options);
  try {
    return await work(target);
  } finally {
    await target.dcs.close();
  }
}

async function show(options: TargetOptions & { json?: boolean }): Promise<void> {
  await withTarget(options, async (target) => {
    const { spec, stored } = await currentSpec(target);
    if (options.json) {
      process.stdout.write(`${JSON.stringify({ spec, stored: stored !== null }, null, 2)}\n`);
      return;
    }
    if (stored === null) process.stdout.write('# no spec stored yet: the controller writes these defaults when it starts\n');
    process.stdout.write(toYaml(spec));
  });
}

async function set(settings: string[], options: TargetOptions): Promise<void> {
  await withTarget(options, async (target) => {
    const next = await update(target, (spec) => applySettings(spec, settings, limitsOf(target)));
    process.stdout.write(`spec updated: ${describe(next)}\n`);
  });
}

function replicasFromFlags(options: { replicas?: string; nodes?: string }): string {
  if ((options.replicas === undefined) === (options.nodes === undefined)) {
    throw new KeelError('KEEL_USAGE', 'give either --replicas N or --nodes N', { hint: 'e.g. keel scale --replicas 2 (a leader and two replicas)' });
  }
  return options.replicas !== undefined ? `replicas=${options.replicas}` : `nodes=${options.nodes}`;
}

async function scale(options: TargetOptions & { replicas?: string; nodes?: string }): Promise<void> {
  const setting = replicasFromFlags(options);
  await withTarget(options, async (target) => {
    const next = await update(target, (spec) => applySettings(spec, [setting], limitsOf(target)));
    process.stdout.write(`declared ${next.nodes} nodes: a leader and ${next.nodes - 1} replica(s); the controller creates or removes nodes to match\n`);
  });
}

const editHeader = [
  '# The declared shape of the cluster. Save and quit to apply; an empty file cancels.',
  '# nodes counts the leader; autoscale.metric is cpu, connections or roQps.',
  '',
].join('\n');

async function edit(options: TargetOptions): Promise<void> {
  await withTarget(options, async (target) => {
    const { spec, stored } = await currentSpec(target);
    const dir = mkdtempSync(join(tmpdir(), 'keel-spec-'));
    const file = join(dir, 'spec.yaml');
    try {
      const before = toYaml(editableSpec(spec));
      writeFileSync(file, editHeader + before, { mode: 0o600 });
      const editor = process.env.VISUAL || process.env.EDITOR || 'vi';
      // through the shell: EDITOR often carries arguments ("code --wait")
      const result = spawnSync(`${editor} "$KEEL_SPEC_FILE"`, { shell: true, stdio: 'inherit', env: { ...process.env, KEEL_SPEC_FILE: file } });
      if (result.status !== 0) throw new KeelError('KEEL_EDITOR_FAILED', `${editor} exited with ${result.status ?? result.signal}; the spec is unchanged`);
      const text = readFileSync(file, 'utf8');
      if (text.replace(/^\s*#.*$/gm, '').trim() === '') {
        process.stdout.write('empty file: the spec is unchanged\n');
        return;
      }
      let edited: unknown;
      try {
        edited = parseYaml(text);
      } catch (err) {
        throw new KeelError('KEEL_SPEC_INVALID', `the edited spec is not YAML: ${(err as Error).message}`);
      }
      const next = fromEditable(edited, spec, limitsOf(target));
      if (toYaml(editableSpec(next)) === before) {
        process.stdout.write('no change\n');
        return;
      }
      if (!(await target.dcs.putSpec(next, stored?.modRevision ?? null))) {
        throw new KeelError('KEEL_CONFLICT', 'the spec changed while you edited it; nothing was written', { hint: 'run `keel spec edit` again' });
      }
      process.stdout.write(`spec updated: ${describe(next)}\n`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

export function registerSpec(program: Command): void {
  const target = (cmd: Command) =>
    withTargetOptions(cmd);
  const spec = program.command('spec').description('the declared shape the controller keeps: nodes, zones, instance class, autoscaling');
  target(spec.command('show').description('print the spec (YAML)').option('--json', 'as JSON')).action(show);
  target(
    spec
      .command('set')
      .description('change settings, e.g. `keel spec set replicas=2 autoscale.enabled=true autoscale.metric=roQps autoscale.target=200`')
      .argument('<key=value...>', 'settings to change'),
  ).action(set);
  target(spec.command('edit').description('edit the spec in $EDITOR; validated and written with a compare-and-swap')).action(edit);
  target(
    program
      .command('scale')
      .description('declare how many replicas (or nodes) the cluster has; the controller creates or removes nodes')
      .option('--replicas <n>', 'replicas besides the leader')
      .option('--nodes <n>', 'nodes, the leader included'),
  ).action(scale);
}
