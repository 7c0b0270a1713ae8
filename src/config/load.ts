import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import type { z } from 'zod';
import { KeelError } from '../errors.js';
import { nodeConfigSchema, type NodeConfig } from './schema.js';

/** Turns zod issues into one sentence that names each field and what it allows. */
export function describeIssues(error: z.ZodError): string {
  return error.issues
    .map((issue) => {
      const field = issue.path.length > 0 ? issue.path.join('.') : '(top level)';
      return `${field}: ${issue.message}`;
    })
    .join('; ');
}

/** Validates a value; throws KEEL_CONFIG_INVALID naming the source and the fields. */
export function validate<S extends z.ZodType>(schema: S, value: unknown, source: string): z.output<S> {
  const result = schema.safeParse(value);
  if (!result.success) {
    throw new KeelError('KEEL_CONFIG_INVALID', `${source} is invalid: ${describeIssues(result.error)}`);
  }
  return result.data;
}

export function parseNodeConfig(text: string, source: string): NodeConfig {
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (err) {
    throw new KeelError('KEEL_CONFIG_UNREADABLE', `${source} is not valid YAML: ${(err as Error).message}`);
  }
  return validate(nodeConfigSchema, raw ?? {}, source);
}

export function loadNodeConfig(path: string): NodeConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new KeelError('KEEL_CONFIG_UNREADABLE', `cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
  }
  return parseNodeConfig(text, path);
}
