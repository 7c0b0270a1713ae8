/**
 * Benchmarks take their options from the environment (vitest owns the command
 * line): BENCH_RUNS=5 npx vitest run --config bench/vitest.config.ts failover.
 */
import { KeelError } from '../src/errors.js';

/** A whole number from the environment, `fallback` when unset; anything else out of [min, max] is a usage error. */
export function envInteger(name: string, fallback: number, min: number, max: number): number {
  const text = process.env[name];
  if (text === undefined || text.trim() === '') return fallback;
  const value = Number(text);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new KeelError('KEEL_USAGE', `${name} must be a whole number from ${min} to ${max} (got ${JSON.stringify(text)})`, {
      hint: `unset ${name} for its default (${fallback})`,
    });
  }
  return value;
}

/** A yes/no switch from the environment: 1, true, yes or on. */
export function envFlag(name: string): boolean {
  return ['1', 'true', 'yes', 'on'].includes((process.env[name] ?? '').trim().toLowerCase());
}
