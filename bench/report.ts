/**
 * How benchmarks print: a title, a plain-text table and the machine's load,
 * so that figures measured on a busy machine say so.
 */
import { cpus, loadavg } from 'node:os';

export type Cell = string | number | null;

/** The middle value (the upper one of an even count); null for no values. */
export function median(values: readonly number[]): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? null;
}

export function max(values: readonly number[]): number | null {
  return values.length === 0 ? null : Math.max(...values);
}

export function min(values: readonly number[]): number | null {
  return values.length === 0 ? null : Math.min(...values);
}

export function mean(values: readonly number[]): number | null {
  return values.length === 0 ? null : values.reduce((a, b) => a + b, 0) / values.length;
}

/** Seconds with `digits` decimals and a unit; '-' for a figure that does not exist. */
export function seconds(value: number | null | undefined, digits = 2): string {
  return value === null || value === undefined ? '-' : `${value.toFixed(digits)} s`;
}

/** A number with `digits` decimals; '-' for a figure that does not exist. */
export function fixed(value: number | null | undefined, digits = 0): string {
  return value === null || value === undefined || !Number.isFinite(value) ? '-' : value.toFixed(digits);
}

/** CPUs and load averages now: the benches share this machine with whatever else runs. */
export function machine(): string {
  return `${cpus().length} CPU(s), load average ${loadavg().map((l) => l.toFixed(2)).join(' ')}`;
}

/** The table as text: left-aligned first column, right-aligned figures. */
export function formatTable(headers: readonly string[], rows: readonly (readonly Cell[])[]): string {
  const text = rows.map((row) => headers.map((_, i) => (row[i] === null || row[i] === undefined ? '-' : String(row[i]))));
  const widths = headers.map((h, i) => Math.max(h.length, ...text.map((row) => row[i]!.length)));
  const line = (cells: readonly string[]) =>
    cells.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join('  ').trimEnd();
  return [line(headers), widths.map((w) => '-'.repeat(w)).join('  '), ...text.map(line)].join('\n');
}

/** Prints a titled table, with notes below it, in one write so that parallel output cannot split it. */
export function printTable(title: string, headers: readonly string[], rows: readonly (readonly Cell[])[], notes: readonly string[] = []): void {
  console.log(['', title, formatTable(headers, rows), ...notes.map((n) => `  ${n}`), ''].join('\n'));
}
