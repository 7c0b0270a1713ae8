import { createRequire } from 'node:module';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { installFastLongStrings, longToDecimal } from '../../src/dcs/long-strings.js';

interface Long {
  high: number;
  low: number;
  unsigned: boolean;
  toString(radix?: number): string;
}
interface LongStatic {
  fromBits(low: number, high: number, unsigned?: boolean): Long;
  fromString(text: string, unsigned?: boolean): Long;
  prototype: { toString(this: Long, radix?: number): string };
}

// the long package as protobufjs loads it (CommonJS), before any change
const require = createRequire(import.meta.url);
const Long = require('long') as LongStatic;
const original = Long.prototype.toString;

describe('64-bit values as decimal strings', () => {
  it('gives the digits long gives, signed and unsigned, over the whole range', () => {
    fc.assert(
      fc.property(fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }), fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }), fc.boolean(), (low, high, unsigned) => {
        const value = Long.fromBits(low, high, unsigned);
        expect(longToDecimal(value)).toBe(original.call(value, 10));
      }),
      { numRuns: 20_000 },
    );
    for (const text of ['0', '1', '9007199254740991', '9007199254740992', '9223372036854775807', '-9223372036854775808', '-1', '7587869373386540000']) {
      expect(longToDecimal(Long.fromString(text))).toBe(text);
    }
    expect(longToDecimal(Long.fromString('18446744073709551615', true))).toBe('18446744073709551615');
  });

  it('is what the etcd client decodes with once installed; other radixes stay with long', () => {
    const installed = installFastLongStrings();
    expect(installed).toBe(Long);
    expect(installFastLongStrings()).toBe(Long);
    expect(Long.prototype.toString).not.toBe(original);
    const lease = Long.fromString('7587869373386540001');
    expect(lease.toString()).toBe('7587869373386540001');
    expect(lease.toString(16)).toBe(original.call(lease, 16));
    expect(Long.fromString('-42').toString(10)).toBe('-42');
  });
});
