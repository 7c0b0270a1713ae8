import { pino, type Logger } from 'pino';

export type { Logger };

/** Field names whose values never reach a log line. */
const redactPaths = [
  'password',
  'token',
  '*.password',
  '*.token',
  '*.*.password',
  'config.postgres.superuser.password',
  'config.postgres.replication.password',
  'config.api.token',
  'headers.authorization',
];

/** A JSON logger on stdout (or the given destination fd), with secrets redacted. */
export function createLogger(bindings: Record<string, unknown>, level = process.env.KEEL_LOG_LEVEL ?? 'info'): Logger {
  return pino({ level, base: bindings, redact: { paths: redactPaths, censor: '***' } });
}

/** A logger that drops everything: for unit tests and quiet commands. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
