/**
 * Property tests of config patches (`keel config set` words, PATCH /config
 * bodies): whatever comes in, the only thing thrown is a KeelError, nothing
 * reaches Object.prototype, the current settings are never changed in place,
 * and what is accepted passes the schema. Bounded runs: seconds.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { applyConfigPatch, patchFromAssignments } from '../../src/config/patch.js';
import { defaultDynamicConfig, dynamicConfigSchema } from '../../src/config/schema.js';
import { isKeelError } from '../../src/errors.js';

const numRuns = 500;
const prototypeNames = () => [Object.getOwnPropertyNames(Object.prototype).sort(), Object.getOwnPropertyNames(Array.prototype).sort()];
const pristine = prototypeNames();

/** Runs `step`; a thrown value must be a KeelError. Returns whether it threw. */
function onlyKeelErrors(step: () => unknown): boolean {
  try {
    step();
    return false;
  } catch (err) {
    if (!isKeelError(err)) throw err;
    expect(['KEEL_CONFIG_INVALID', 'KEEL_USAGE']).toContain(err.code);
    expect(err.exitStatus).toBe(2);
    return true;
  }
}

const segment = fc.oneof(
  fc.constantFrom('__proto__', 'constructor', 'prototype', 'ttl', 'loop_wait', 'synchronous_mode', 'postgresql_parameters', 'work_mem', 'archive_command', 'toString', 'hasOwnProperty', ''),
  fc.string({ maxLength: 12 }),
);
const word = fc
  .tuple(fc.array(segment, { minLength: 1, maxLength: 4 }), fc.oneof(fc.constantFrom('=', '=='), fc.constant('')), fc.oneof(fc.string({ maxLength: 12 }), fc.constantFrom('1', '-1', '20', 'true', 'null', '64MB', '1e999', '0.5')))
  .map(([path, eq, value]) => `${path.join('.')}${eq}${value}`);

/** JSON bodies, including keys that reach prototypes, as JSON.parse builds them (own `__proto__`). */
const body = fc.oneof(
  fc.jsonValue({ maxDepth: 5 }),
  fc
    .tuple(fc.array(segment, { minLength: 1, maxLength: 4 }), fc.jsonValue({ maxDepth: 2 }))
    .map(([path, leaf]) => JSON.parse(path.reduceRight((inner, key) => `{${JSON.stringify(key)}:${inner}}`, JSON.stringify(leaf)))),
  fc.record(
    {
      ttl: fc.oneof(fc.integer({ min: -10, max: 400 }), fc.string({ maxLength: 5 })),
      loop_wait: fc.double({ noNaN: false }),
      postgresql_parameters: fc.dictionary(segment, fc.oneof(fc.string({ maxLength: 10 }), fc.integer(), fc.boolean(), fc.constant(null), fc.jsonValue({ maxDepth: 2 }))),
    },
    { requiredKeys: [] },
  ),
);

describe('config patches under arbitrary input', () => {
  it('keel config set words: only KeelErrors, and applying what parses only KeelErrors too', () => {
    fc.assert(
      fc.property(fc.array(word, { minLength: 1, maxLength: 4 }), (words) => {
        const current = structuredClone(defaultDynamicConfig);
        let patch: Record<string, unknown> | null = null;
        if (!onlyKeelErrors(() => (patch = patchFromAssignments(words)))) {
          onlyKeelErrors(() => applyConfigPatch(current, patch));
        }
        expect(current).toEqual(defaultDynamicConfig);
        expect(prototypeNames()).toEqual(pristine);
      }),
      { numRuns },
    );
  });

  it('PATCH bodies: only KeelErrors; what is accepted passes the schema; nothing polluted', () => {
    fc.assert(
      fc.property(body, (patch) => {
        const current = structuredClone(defaultDynamicConfig);
        let next: unknown = null;
        const threw = onlyKeelErrors(() => (next = applyConfigPatch(current, patch)));
        if (!threw) expect(dynamicConfigSchema.safeParse(next).success).toBe(true);
        expect(current).toEqual(defaultDynamicConfig);
        expect(prototypeNames()).toEqual(pristine);
        expect(({} as Record<string, unknown>).polluted).toBeUndefined();
      }),
      { numRuns },
    );
  });
});
