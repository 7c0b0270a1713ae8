/**
 * Keel's own version, from its package.json (two folders above this file in
 * src/ and in dist/ alike).
 */
import { readFileSync } from 'node:fs';

let cached: string | null = null;

export function keelVersion(): string {
  if (cached === null) {
    try {
      const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: unknown };
      cached = typeof pkg.version === 'string' ? pkg.version : '0.0.0';
    } catch {
      cached = '0.0.0';
    }
  }
  return cached;
}

/** major, minor and patch as two digits each, the way Patroni publishes patroni_version (4.0.0 is 40000). */
export function versionNumber(version: string): number {
  const [major, minor, patch] = version.split(/[.+-]/).map((part) => Number.parseInt(part, 10));
  const part = (n: number | undefined) => (n === undefined || !Number.isFinite(n) ? 0 : Math.min(99, Math.max(0, n)));
  return part(major) * 10_000 + part(minor) * 100 + part(patch);
}
