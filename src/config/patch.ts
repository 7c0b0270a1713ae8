/**
 * Changes to the dynamic config, shared by `PATCH /config` and `keel config
 * set`: a JSON merge patch (RFC 7386) applied to the current value and checked
 * against the schema. Pure.
 */
import { KeelError } from '../errors.js';
import { describeIssues } from './load.js';
import { dynamicConfigSchema, type DynamicConfig } from './schema.js';

export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** RFC 7386: objects merge key by key, null removes a key (here: back to its default), anything else replaces. */
export function mergePatch(target: unknown, patch: unknown): unknown {
  if (!isObject(patch)) return patch;
  const out: Record<string, unknown> = isObject(target) ? { ...target } : {};
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete out[key];
    else out[key] = mergePatch(out[key], value);
  }
  return out;
}

/** The merged settings, or KEEL_CONFIG_INVALID naming each field that is wrong. */
export function applyConfigPatch(current: DynamicConfig, patch: unknown): DynamicConfig {
  if (!isObject(patch)) throw new KeelError('KEEL_CONFIG_INVALID', 'the body must be a JSON object of settings', { hint: 'e.g. {"ttl": 20}' });
  const checked = dynamicConfigSchema.safeParse(mergePatch(current, patch));
  if (!checked.success) throw new KeelError('KEEL_CONFIG_INVALID', `invalid dynamic config: ${describeIssues(checked.error)}`);
  return checked.data;
}


/**
 * `key=value` words into a patch: `ttl=20`, `synchronous_mode=on`,
 * `postgresql_parameters.work_mem=64MB`. Values that read as JSON (numbers,
 * true/false, null) are taken as such; anything else is a string.
 */
export function patchFromAssignments(words: string[]): Record<string, unknown> {
  const patch: Record<string, unknown> = {};
  for (const word of words) {
    const eq = word.indexOf('=');
    if (eq <= 0) throw new KeelError('KEEL_USAGE', `${JSON.stringify(word)} is not key=value`, { hint: 'e.g. keel config set ttl=20 synchronous_mode=on' });
    const path = word.slice(0, eq).split('.');
    const raw = word.slice(eq + 1);
    let value: unknown = raw;
    if (/^(-?\d+(\.\d+)?|true|false|null)$/.test(raw)) value = JSON.parse(raw);
    let node = patch;
    for (const key of path.slice(0, -1)) {
      if (!isObject(node[key])) node[key] = {};
      node = node[key] as Record<string, unknown>;
    }
    node[path.at(-1)!] = value;
  }
  return patch;
}
