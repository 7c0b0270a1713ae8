/**
 * The guard's log: one JSON object per line on stdout, in pino's shape
 * (level number, time, msg) so the same tools read every Keel log, without
 * loading pino into a process that must stay small.
 */
const levels = { info: 30, warn: 40, error: 50 } as const;

export type GuardLogger = Record<keyof typeof levels, (fields: Record<string, unknown>, msg: string) => void>;

export function createGuardLogger(bindings: Record<string, unknown>, write: (line: string) => void = (line) => process.stdout.write(line)): GuardLogger {
  const at = (level: keyof typeof levels) => (fields: Record<string, unknown>, msg: string) =>
    write(`${JSON.stringify({ level: levels[level], time: Date.now(), pid: process.pid, ...bindings, ...fields, msg })}\n`);
  return { info: at('info'), warn: at('warn'), error: at('error') };
}
