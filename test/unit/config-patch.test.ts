/**
 * Config patches (`keel config set`, PATCH /config) refuse keys that reach an
 * object's prototype, at any depth, and change nothing.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { applyConfigPatch, checkPatchKeys, mergePatch, patchFromAssignments } from '../../src/config/patch.js';
import { defaultDynamicConfig } from '../../src/config/schema.js';
import { isKeelError } from '../../src/errors.js';

function codeOf(run: () => unknown): string {
  try {
    run();
  } catch (err) {
    return isKeelError(err) ? err.code : `not a KeelError: ${String(err)}`;
  }
  return 'accepted';
}

/** Object.prototype and Function.prototype as plain property lists: nothing may be added to them. */
const pristine = () => [Object.getOwnPropertyNames(Object.prototype).sort(), Object.getOwnPropertyNames(Function.prototype).sort()];
const before = pristine();

afterEach(() => {
  expect(pristine()).toEqual(before);
  expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  expect(({} as Record<string, unknown>).ttl).toBeUndefined();
});

describe('prototype keys in patches', () => {
  // JSON.parse makes `__proto__` an own key, as a request body would carry it
  const bodies = [
    '{"__proto__": {"polluted": true}}',
    '{"constructor": {"prototype": {"polluted": true}}}',
    '{"prototype": {"polluted": true}}',
    '{"postgresql_parameters": {"__proto__": {"polluted": true}}}',
    '{"postgresql_parameters": {"constructor": "x"}}',
    '{"ttl": 20, "x": [{"__proto__": {"polluted": 1}}]}',
    '{"a": {"b": {"c": {"d": {"prototype": 1}}}}}',
  ];

  it.each(bodies)('%s is KEEL_CONFIG_INVALID and changes nothing', (body) => {
    const current = structuredClone(defaultDynamicConfig);
    expect(codeOf(() => applyConfigPatch(current, JSON.parse(body)))).toBe('KEEL_CONFIG_INVALID');
    expect(current).toEqual(defaultDynamicConfig);
  });

  it('names the key and its path', () => {
    try {
      checkPatchKeys(JSON.parse('{"postgresql_parameters": {"__proto__": 1}}'));
      expect.unreachable();
    } catch (err) {
      expect(isKeelError(err) && err.message).toContain('postgresql_parameters.__proto__');
    }
  });

  it('mergePatch refuses them itself, so no caller can forget', () => {
    expect(codeOf(() => mergePatch({}, JSON.parse('{"__proto__": {"polluted": true}}')))).toBe('KEEL_CONFIG_INVALID');
  });

  it.each([
    ['__proto__.polluted=1'],
    ['constructor.prototype.polluted=1'],
    ['postgresql_parameters.__proto__.polluted=yes'],
    ['ttl=20', 'prototype=1'],
    ['postgresql_parameters.constructor=1'],
  ])('keel config set %s is KEEL_CONFIG_INVALID (exit 2)', (...words) => {
    let status = 0;
    try {
      patchFromAssignments(words);
    } catch (err) {
      if (!isKeelError(err)) throw err;
      expect(err.code).toBe('KEEL_CONFIG_INVALID');
      status = err.exitStatus;
    }
    expect(status).toBe(2);
  });

  it('refuses patches nested far deeper than any setting without exhausting the stack', () => {
    const deep = `${'{"a":'.repeat(20_000)}1${'}'.repeat(20_000)}`;
    expect(codeOf(() => applyConfigPatch(defaultDynamicConfig, JSON.parse(deep)))).toBe('KEEL_CONFIG_INVALID');
    const deepArray = `{"a":${'['.repeat(20_000)}${']'.repeat(20_000)}}`;
    expect(codeOf(() => applyConfigPatch(defaultDynamicConfig, JSON.parse(deepArray)))).toBe('KEEL_CONFIG_INVALID');
  });

  it('still takes ordinary patches and key=value words', () => {
    expect(applyConfigPatch(defaultDynamicConfig, { ttl: 20 }).ttl).toBe(20);
    expect(patchFromAssignments(['ttl=20', 'postgresql_parameters.work_mem=64MB'])).toEqual({ ttl: 20, postgresql_parameters: { work_mem: '64MB' } });
    expect(codeOf(() => patchFromAssignments(['postgresql_parameters..work_mem=1']))).toBe('KEEL_USAGE');
  });

  it('reads digits with leading zeros as a number, and true, false and null as such, nothing else', () => {
    expect(patchFromAssignments(['ttl=010', 'loop_wait=01.5', 'x=-007'])).toEqual({ ttl: 10, loop_wait: 1.5, x: -7 });
    expect(patchFromAssignments(['a=true', 'b=false', 'c=null', 'd=toString', 'e=1e3', 'f=0x10'])).toEqual({ a: true, b: false, c: null, d: 'toString', e: '1e3', f: '0x10' });
    // a key made of a space is no setting: KEEL_CONFIG_INVALID, not a JSON parser's error
    expect(codeOf(() => applyConfigPatch(defaultDynamicConfig, patchFromAssignments([' =01'])))).toBe('KEEL_CONFIG_INVALID');
  });
});
