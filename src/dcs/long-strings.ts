/**
 * etcd's revisions, versions and lease IDs are 64-bit integers. The etcd
 * client decodes each into a `long` (protobufjs) and hands it on as a decimal
 * string from Long#toString, which divides 64-bit values in JavaScript (its
 * WebAssembly path is off in an agent: lite mode): ~12 µs a value, a few
 * hundred in every read of the cluster, about a tenth of an idle agent's CPU.
 * The same digits come from a float below 2^53 or from a BigInt in ~0.1 µs.
 * Only base 10 changes; any other radix stays with `long`.
 */
import { createRequire } from 'node:module';

/** The fields of a `long` value the digits come from. */
export interface LongValue {
  high: number;
  low: number;
  unsigned: boolean;
}

const twoTo32 = 4294967296;

/** The decimal digits of a 64-bit value, as Long#toString(10) gives them. */
export function longToDecimal(value: LongValue): string {
  const low = value.low >>> 0;
  // 0 <= value < 2^53: exact as a float
  if (value.high >= 0 && value.high < 0x200000) return String(value.high * twoTo32 + low);
  const bits = (BigInt(value.high >>> 0) << 32n) | BigInt(low);
  return (value.unsigned ? bits : BigInt.asIntN(64, bits)).toString();
}

interface LongClass {
  prototype: { toString(this: LongValue, radix?: number): string };
}

let installed = false;

/** Puts longToDecimal under the Long class the etcd client's protobufjs decodes with; once, idempotent. */
export function installFastLongStrings(): LongClass | null {
  // protobufjs as etcd3's proto-loader resolves it, and the Long it picked (null without the long package)
  const fromEtcd3 = createRequire(createRequire(import.meta.url).resolve('etcd3'));
  const fromLoader = createRequire(fromEtcd3.resolve('@grpc/proto-loader'));
  const Long = (fromLoader('protobufjs/minimal') as { util: { Long: LongClass | null } }).util.Long;
  if (Long === null || installed) return Long;
  installed = true;
  const original = Long.prototype.toString;
  Long.prototype.toString = function toString(this: LongValue, radix?: number): string {
    return radix === undefined || radix === 10 ? longToDecimal(this) : original.call(this, radix);
  };
  return Long;
}
