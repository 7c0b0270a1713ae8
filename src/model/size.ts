/**
 * Byte sizes as people write them, with PostgreSQL's 1024-based units:
 * `1048576`, `512kB`, `16MB`, `1.5GB`, `1TB`. Pure: the callers turn a null
 * into their own error (an HTTP 400, a KEEL_USAGE).
 */
const unitBytes: Record<string, number> = { '': 1, b: 1, k: 1024, kb: 1024, mb: 1024 ** 2, gb: 1024 ** 3, tb: 1024 ** 4 };

/** Bytes, or null when `text` is not a size. */
export function parseByteSize(text: string): number | null {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$/.exec(text);
  if (match === null) return null;
  const multiplier = unitBytes[match[2]!.toLowerCase()];
  if (multiplier === undefined) return null;
  const bytes = Math.floor(Number(match[1]) * multiplier);
  return Number.isSafeInteger(bytes) ? bytes : null;
}
