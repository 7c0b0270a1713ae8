/**
 * The declared shape (`spec` key) as people change it: defaults, `key=value`
 * settings, the editable YAML form, and the provider's limits. Pure.
 */
import { buildSpecSchema, describeIssues } from '../dcs/codec.js';
import type { AutoscalePolicy, BackupPolicy, SpecValue } from '../model/values.js';
import { KeelError } from '../errors.js';

export const localZones = ['local-a', 'local-b', 'local-c'];

export const defaultAutoscale: AutoscalePolicy = {
  enabled: false,
  metric: 'cpu',
  target: 70,
  minReplicas: 1,
  maxReplicas: 4,
  scaleOutCooldownSeconds: 300,
  scaleInCooldownSeconds: 300,
  scaleInEnabled: true,
};

/** No scheduled backup until one is set (`keel spec set backup.full=7d backup.incr=24h`); replicas from backups when there are some. */
export const defaultBackupPolicy: BackupPolicy = { full: null, diff: null, incr: null, retentionFull: 2, replicaSource: 'backup' };

/** What a provider can hold; the CLI and the controller refuse specs beyond it. */
export interface ProviderLimits {
  maxNodes: number;
  /** known classes, or null when any name goes (the provider does not say) */
  instanceClasses: string[] | null;
}

export function defaultSpec(shape: { nodes: number; zones: string[]; instanceClass: string }): SpecValue {
  return {
    v: 1,
    nodes: Math.max(1, shape.nodes),
    zones: shape.zones.length > 0 ? [...shape.zones] : ['default'],
    instanceClass: shape.instanceClass,
    replaceAfterSeconds: 30,
    autoscale: { ...defaultAutoscale },
    scaling: { added: [], lastScaleOutAtMs: null, lastScaleInAtMs: null },
  };
}

const strictSchema = buildSpecSchema(true);

/** Validates what a person wrote; unknown keys are errors. */
export function validateSpec(raw: unknown, limits: ProviderLimits | null): SpecValue {
  const parsed = strictSchema.safeParse(raw);
  if (!parsed.success) throw new KeelError('KEEL_SPEC_INVALID', `spec is invalid: ${describeIssues(parsed.error)}`);
  const spec = parsed.data;
  if (limits !== null) checkLimits(spec, limits);
  return spec;
}

function checkLimits(spec: SpecValue, limits: ProviderLimits): void {
  const problems: string[] = [];
  if (spec.nodes > limits.maxNodes) problems.push(`nodes ${spec.nodes} is more than the provider holds (${limits.maxNodes})`);
  if (spec.autoscale.maxReplicas + 1 > limits.maxNodes) {
    problems.push(`autoscale.maxReplicas ${spec.autoscale.maxReplicas} is more than the provider holds (${limits.maxNodes - 1} replicas)`);
  }
  if (limits.instanceClasses !== null && !limits.instanceClasses.includes(spec.instanceClass)) {
    problems.push(`instanceClass ${JSON.stringify(spec.instanceClass)} is unknown (known: ${limits.instanceClasses.join(', ')})`);
  }
  if (problems.length > 0) throw new KeelError('KEEL_SPEC_INVALID', `spec is invalid: ${problems.join('; ')}`);
}

type Parser = (text: string, key: string) => unknown;

const integer: Parser = (text, key) => {
  const n = Number(text);
  if (text.trim() === '' || !Number.isInteger(n)) throw new KeelError('KEEL_SPEC_INVALID', `${key} must be a whole number (got ${JSON.stringify(text)})`);
  return n;
};
const number: Parser = (text, key) => {
  const n = Number(text);
  if (text.trim() === '' || !Number.isFinite(n)) throw new KeelError('KEEL_SPEC_INVALID', `${key} must be a number (got ${JSON.stringify(text)})`);
  return n;
};
const boolean: Parser = (text, key) => {
  if (['true', 'on', 'yes'].includes(text)) return true;
  if (['false', 'off', 'no'].includes(text)) return false;
  throw new KeelError('KEEL_SPEC_INVALID', `${key} must be true or false (got ${JSON.stringify(text)})`);
};
const string: Parser = (text) => text;
const list: Parser = (text) => text.split(',').map((s) => s.trim()).filter((s) => s !== '');
/** a schedule, or `off` for none (checked by the spec's schema) */
const schedule: Parser = (text) => (['off', 'none', ''].includes(text.trim()) ? null : text.trim());

/** Every key `keel spec set` accepts, with how its text becomes a value. */
export const settableKeys: Record<string, Parser> = {
  nodes: integer,
  replicas: integer,
  zones: list,
  instanceClass: string,
  replaceAfterSeconds: number,
  'autoscale.enabled': boolean,
  'autoscale.metric': string,
  'autoscale.target': number,
  'autoscale.minReplicas': integer,
  'autoscale.maxReplicas': integer,
  'autoscale.scaleOutCooldownSeconds': number,
  'autoscale.scaleInCooldownSeconds': number,
  'autoscale.scaleInEnabled': boolean,
  'backup.full': schedule,
  'backup.diff': schedule,
  'backup.incr': schedule,
  'backup.retentionFull': integer,
  'backup.replicaSource': string,
};

/** Applies `key=value` settings in order; `replicas=N` means N+1 nodes. */
export function applySettings(current: SpecValue, settings: string[], limits: ProviderLimits | null): SpecValue {
  if (settings.length === 0) throw new KeelError('KEEL_USAGE', 'give at least one key=value', { hint: `keys: ${Object.keys(settableKeys).join(', ')}` });
  const next: SpecValue = structuredClone(current);
  for (const setting of settings) {
    const eq = setting.indexOf('=');
    const key = eq > 0 ? setting.slice(0, eq) : setting;
    const parse = settableKeys[key];
    if (eq <= 0 || parse === undefined) {
      throw new KeelError('KEEL_SPEC_INVALID', `${JSON.stringify(setting)} is not a key=value the spec has`, {
        hint: `keys: ${Object.keys(settableKeys).join(', ')}`,
      });
    }
    const value = parse(setting.slice(eq + 1), key);
    if (key === 'replicas') next.nodes = (value as number) + 1;
    else if (key.startsWith('autoscale.')) (next.autoscale as unknown as Record<string, unknown>)[key.slice('autoscale.'.length)] = value;
    else if (key.startsWith('backup.')) next.backup = { ...(next.backup ?? defaultBackupPolicy), [key.slice('backup.'.length)]: value };
    else (next as unknown as Record<string, unknown>)[key] = value;
  }
  return validateSpec(next, limits);
}

/** The part of the spec a person edits: without the version and the controller's own record. */
export function editableSpec(spec: SpecValue): Omit<SpecValue, 'v' | 'scaling'> {
  const { v: _v, scaling: _s, ...rest } = spec;
  return rest;
}

/** An edited document back into a spec, keeping the controller's record from `current`. */
export function fromEditable(edited: unknown, current: SpecValue, limits: ProviderLimits | null): SpecValue {
  if (typeof edited !== 'object' || edited === null || Array.isArray(edited)) {
    throw new KeelError('KEEL_SPEC_INVALID', 'the edited spec is not a mapping of keys to values');
  }
  return validateSpec({ ...edited, v: 1, scaling: current.scaling }, limits);
}

/** Replicas the spec asks for, the autoscaler's included. */
export function desiredReplicas(spec: SpecValue): number {
  return spec.nodes - 1 + spec.scaling.added.length;
}
