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

/**
 * Keys that reach an object's prototype when assigned (`o['__proto__'] = x`
 * replaces o's prototype; a path through `constructor.prototype` reaches
 * Object.prototype itself). No setting has such a name, so they are refused
 * wherever they appear rather than escaped.
 */
const prototypeKeys = new Set(['__proto__', 'constructor', 'prototype']);
/** Settings nest two levels (postgresql_parameters.name); far deeper input is refused before any walk. */
const maxPatchDepth = 32;

function refuseKey(path: string[]): never {
  throw new KeelError('KEEL_CONFIG_INVALID', `${JSON.stringify(path.join('.'))}: the key ${JSON.stringify(path.at(-1))} is not allowed in a config patch`, {
    hint: 'no setting has that name; nothing was changed (`keel config show` lists the settings)',
  });
}

/**
 * Throws KEEL_CONFIG_INVALID when a patch holds a prototype key at any depth
 * (arrays included) or nests deeper than any setting. Iterative, so even a
 * body nested thousands of levels deep cannot exhaust the stack.
 */
export function checkPatchKeys(patch: unknown): void {
  const stack: Array<{ value: unknown; path: string[] }> = [{ value: patch, path: [] }];
  while (stack.length > 0) {
    const { value, path } = stack.pop()!;
    if (typeof value !== 'object' || value === null) continue;
    if (path.length >= maxPatchDepth) {
      throw new KeelError('KEEL_CONFIG_INVALID', `the patch nests deeper than ${maxPatchDepth} levels`, { hint: 'settings nest at most two levels, e.g. {"postgresql_parameters": {"work_mem": "64MB"}}' });
    }
    const entries: Array<[string, unknown]> = Array.isArray(value) ? value.map((item, i): [string, unknown] => [String(i), item]) : Object.entries(value);
    for (const [key, item] of entries) {
      if (prototypeKeys.has(key)) refuseKey([...path, key]);
      stack.push({ value: item, path: [...path, key] });
    }
  }
}

/** RFC 7386: objects merge key by key, null removes a key (here: back to its default), anything else replaces. */
export function mergePatch(target: unknown, patch: unknown): unknown {
  if (!isObject(patch)) return patch;
  const out: Record<string, unknown> = isObject(target) ? { ...target } : {};
  for (const [key, value] of Object.entries(patch)) {
    // an own `__proto__` (JSON.parse makes one) would otherwise replace out's prototype
    if (prototypeKeys.has(key)) refuseKey([key]);
    if (value === null) delete out[key];
    else out[key] = mergePatch(out[key], value);
  }
  return out;
}

/** The merged settings, or KEEL_CONFIG_INVALID naming each field that is wrong. */
export function applyConfigPatch(current: DynamicConfig, patch: unknown): DynamicConfig {
  if (!isObject(patch)) throw new KeelError('KEEL_CONFIG_INVALID', 'the body must be a JSON object of settings', { hint: 'e.g. {"ttl": 20}' });
  checkPatchKeys(patch);
  const checked = dynamicConfigSchema.safeParse(mergePatch(current, patch));
  if (!checked.success) {
    const aboutParameters = checked.error.issues.some((issue) => issue.path[0] === 'postgresql_parameters');
    throw new KeelError('KEEL_CONFIG_INVALID', `invalid dynamic config: ${describeIssues(checked.error)}`, {
      hint: aboutParameters
        ? 'nothing was changed; the README lists the parameters the cluster may set (postgresql_parameters) and why the others are refused'
        : 'nothing was changed; fix the named field (`keel config show` prints the settings)',
    });
  }
  return checked.data;
}


const literals = new Map<string, unknown>([
  ['true', true],
  ['false', false],
  ['null', null],
]);

/**
 * `key=value` words into a patch: `ttl=20`, `synchronous_mode=on`,
 * `postgresql_parameters.work_mem=64MB`. Numbers (digits, with a decimal
 * part or not), true/false and null are taken as such; anything else is a
 * string.
 */
export function patchFromAssignments(words: string[]): Record<string, unknown> {
  const patch: Record<string, unknown> = {};
  for (const word of words) {
    const eq = word.indexOf('=');
    if (eq <= 0) throw new KeelError('KEEL_USAGE', `${JSON.stringify(word)} is not key=value`, { hint: 'e.g. keel config set ttl=20 synchronous_mode=on' });
    const path = word.slice(0, eq).split('.');
    // checked before the walk below: `__proto__.x=1` would otherwise write into Object.prototype
    for (let i = 0; i < path.length; i++) if (prototypeKeys.has(path[i]!)) refuseKey(path.slice(0, i + 1));
    if (path.some((key) => key === '')) {
      throw new KeelError('KEEL_USAGE', `${JSON.stringify(word)} has an empty key`, { hint: 'e.g. keel config set postgresql_parameters.work_mem=64MB' });
    }
    const raw = word.slice(eq + 1);
    // digits are a number even with leading zeros (ttl=010), which JSON.parse refuses
    const value: unknown = /^-?\d+(\.\d+)?$/.test(raw) ? Number(raw) : literals.has(raw) ? literals.get(raw) : raw;
    let node = patch;
    for (const key of path.slice(0, -1)) {
      if (!isObject(node[key])) node[key] = {};
      node = node[key] as Record<string, unknown>;
    }
    node[path.at(-1)!] = value;
  }
  return patch;
}
