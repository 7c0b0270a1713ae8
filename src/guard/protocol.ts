/**
 * The fencing guard's wire format: newline-delimited JSON over a Unix socket.
 * Pure: strings in, values out (and back). Times are CLOCK_MONOTONIC
 * milliseconds, which every process on the host shares and which no wall-clock
 * step can move.
 *
 *   agent -> guard   {"v":1,"type":"feed","agentPid":123,"leaseId":"7a..","deadlineMonoMs":8123456.5}
 *                    {"v":1,"type":"hello","agentPid":123}         (no lease yet: only asks for the state)
 *   guard -> agent   {"v":1,"type":"state",...}                      (one answer to every message)
 *                    {"v":1,"type":"error","message":"..."}          (then the guard closes the connection)
 */
import { z } from 'zod';

/** A line longer than this is no message of ours: the connection is closed. */
export const maxLineBytes = 4096;

const pidSchema = z.number().int().positive();
const monoMsSchema = z.number().finite().nonnegative();

export const feedSchema = z
  .object({
    v: z.literal(1),
    type: z.literal('feed'),
    agentPid: pidSchema,
    leaseId: z.string().min(1).max(64).nullable(),
    /** after this CLOCK_MONOTONIC moment, PostgreSQL must no longer accept writes */
    deadlineMonoMs: monoMsSchema,
  })
  .strict();

export const helloSchema = z.object({ v: z.literal(1), type: z.literal('hello'), agentPid: pidSchema }).strict();

export const stateSchema = z
  .object({
    v: z.literal(1),
    type: z.literal('state'),
    guardPid: pidSchema,
    /** the data directory the guard watches, resolved (the agent checks it is its own) */
    dataDir: z.string().min(1),
    monoNowMs: monoMsSchema,
    /** null before the first feed: an unfed guard never fences */
    deadlineMonoMs: monoMsSchema.nullable(),
    /** the agent whose feed set the deadline */
    fedByPid: pidSchema.nullable(),
    tripped: z.boolean(),
    /** postmasters stopped since the guard started */
    fences: z.number().int().nonnegative(),
  })
  .strict();

export const errorSchema = z.object({ v: z.literal(1), type: z.literal('error'), message: z.string().max(512) }).strict();

export const agentMessageSchema = z.discriminatedUnion('type', [feedSchema, helloSchema]);
export const guardMessageSchema = z.discriminatedUnion('type', [stateSchema, errorSchema]);

export type FeedMessage = z.infer<typeof feedSchema>;
export type HelloMessage = z.infer<typeof helloSchema>;
export type StateMessage = z.infer<typeof stateSchema>;
export type ErrorMessage = z.infer<typeof errorSchema>;
export type AgentMessage = z.infer<typeof agentMessageSchema>;
export type GuardMessage = z.infer<typeof guardMessageSchema>;

export type Parsed<T> = { ok: true; message: T } | { ok: false; error: string };

function parseWith<T>(schema: z.ZodType<T>, line: string): Parsed<T> {
  let raw: unknown;
  try {
    raw = JSON.parse(line);
  } catch {
    return { ok: false, error: 'not JSON' };
  }
  const result = schema.safeParse(raw);
  if (result.success) return { ok: true, message: result.data };
  const issue = result.error.issues[0];
  const field = issue && issue.path.length > 0 ? issue.path.join('.') : '(message)';
  return { ok: false, error: `${field}: ${issue?.message ?? 'invalid'}` };
}

/** One line the guard received from an agent. */
export function parseAgentMessage(line: string): Parsed<AgentMessage> {
  return parseWith(agentMessageSchema, line);
}

/** One line an agent received from the guard. */
export function parseGuardMessage(line: string): Parsed<GuardMessage> {
  return parseWith(guardMessageSchema, line);
}

/** The line for a message, newline included; throws on a value the other side would refuse (NaN, a negative time). */
export function serializeMessage(message: AgentMessage | GuardMessage): string {
  const schema = message.type === 'feed' || message.type === 'hello' ? agentMessageSchema : guardMessageSchema;
  return `${JSON.stringify(schema.parse(message))}\n`;
}

/**
 * Cuts a byte stream into lines. `push` returns the complete lines so far;
 * `overflow` turns true once a line grows past maxLineBytes without ending
 * (the caller then drops the connection: a peer that speaks another protocol).
 */
export class LineSplitter {
  private pending = '';
  overflow = false;

  push(chunk: string): string[] {
    if (this.overflow) return [];
    const parts = (this.pending + chunk).split('\n');
    this.pending = parts.pop() ?? '';
    if (Buffer.byteLength(this.pending) > maxLineBytes || parts.some((line) => Buffer.byteLength(line) > maxLineBytes)) {
      this.overflow = true;
      this.pending = '';
      return [];
    }
    return parts.map((line) => line.trim()).filter((line) => line.length > 0);
  }
}
