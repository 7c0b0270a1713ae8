/**
 * Serialisation of the values Keel keeps in etcd, and the names of their keys.
 * Pure: takes and returns strings, imports no I/O.
 */
import { z } from 'zod';
import { dynamicConfigSchema, type DynamicConfig } from '../config/schema.js';
import { KeelError } from '../errors.js';
import { nameSchema } from '../model/names.js';
import { parseSchedule } from '../model/schedule.js';
import { screenClusterParameters, type ParameterValue } from '../model/parameters.js';
import type { AutoscalePolicy, BackupLockValue, ControllerValue, CreationValue, DrainingValue, EventValue, HistoryEntry, HistoryValue, InitializeValue, LeaderValue, MemberValue, RouterValue, SpecValue, StatusValue, SwitchoverValue, SyncValue } from '../model/values.js';

export type Decoded<T> = { ok: true; value: T } | { ok: false; reason: string };

const version = z.literal(1);
// a name that could not have come from a node.yml makes the value invalid: it would become a slot name
const memberName = nameSchema;
const lsn = z.number().int().min(0);
const timeline = z.number().int().min(1);
const epochMs = z.number().int().min(0);

/*
 * Value schemas strip unknown fields instead of rejecting them: a newer agent
 * that adds a field without bumping `v` must not make older agents treat the
 * key as absent (an absent leader key would start an election).
 */

export const initializeSchema: z.ZodType<InitializeValue> = z.object({
  v: version,
  by: memberName,
  systemId: z.string().min(1).nullable(),
});

export const leaderSchema: z.ZodType<LeaderValue> = z.object({ v: version, name: memberName });

export const memberSchema: z.ZodType<MemberValue> = z.object({
  v: version,
  name: memberName,
  role: z.enum(['primary', 'replica', 'unknown']),
  state: z.string(),
  running: z.boolean(),
  streaming: z.boolean(),
  timeline: timeline.nullable(),
  walLsn: lsn.nullable(),
  receivedLsn: lsn.nullable(),
  replayedLsn: lsn.nullable(),
  upstream: memberName.nullable(),
  slots: z.array(memberName).optional(),
  zone: z.string(),
  tags: z.record(z.string(), z.union([z.string(), z.number(), z.boolean()])),
  apiUrl: z.string(),
  pgHost: z.string(),
  pgPort: z.number().int().min(1).max(65535),
  reason: z.string(),
  systemId: z.string().min(1).nullable(),
  agentPid: z.number().int().min(1).nullable(),
  postmasterPid: z.number().int().min(1).nullable(),
  dataDir: z.string(),
  updatedAtMs: epochMs,
  metrics: z
    .object({ cpuPercent: z.number().min(0), connections: z.number().int().min(0), roQueriesPerSecond: z.number().min(0) })
    .optional(),
  archive: z
    .object({
      state: z.enum(['ok', 'failing']),
      archivedCount: z.number().int().min(0),
      failedCount: z.number().int().min(0),
      lastArchivedWal: z.string().nullable(),
      lastArchivedAtMs: epochMs.nullable(),
      lastFailedWal: z.string().nullable(),
      lastFailedAtMs: epochMs.nullable(),
      lagBytes: z.number().min(0),
      lagSeconds: z.number().min(0).nullable(),
      atMs: epochMs,
    })
    .optional(),
});

export const statusSchema: z.ZodType<StatusValue> = z.object({
  v: version,
  leader: memberName,
  timeline,
  walLsn: lsn,
  updatedAtMs: epochMs,
  shutdownCheckpointLsn: lsn.optional(),
});

export const syncSchema: z.ZodType<SyncValue> = z.object({
  v: version,
  leader: memberName,
  members: z.array(memberName),
  quorum: z.number().int().min(0),
});

export const switchoverSchema: z.ZodType<SwitchoverValue> = z.object({
  v: version,
  from: memberName.nullable(),
  to: memberName.nullable(),
  failover: z.boolean(),
  requestedAtMs: epochMs,
  holdFromMs: epochMs.optional(),
});

export const drainingSchema: z.ZodType<DrainingValue> = z.object({
  v: version,
  name: memberName,
  sinceMs: epochMs,
  reason: z.string(),
});

/** A router's id: its key's last part (letters, digits and _ . : -). */
export const routerIdSchema = z.string().regex(/^[A-Za-z0-9_.:-]{1,128}$/, 'letters, digits and _ . : - only');
export const routerSchema: z.ZodType<RouterValue> = z.object({ v: version, id: routerIdSchema, holding: epochMs.nullable(), atMs: epochMs });

export const creationSchema: z.ZodType<CreationValue> = z.object({
  v: version,
  name: memberName,
  zone: z.string().min(1),
  instanceClass: z.string().min(1),
  replaces: memberName.nullable(),
  sinceMs: epochMs,
  by: z.string().min(1),
});

export const backupLockSchema: z.ZodType<BackupLockValue> = z.object({
  v: version,
  by: z.string().min(1),
  type: z.enum(['full', 'diff', 'incr']),
  source: memberName,
  startedAtMs: epochMs,
});

const historyEntrySchema: z.ZodType<HistoryEntry> = z.object({
  timeline,
  switchLsn: lsn,
  leader: memberName,
  atMs: epochMs,
  reason: z.string(),
});

export const historySchema: z.ZodType<HistoryValue> = z.object({ v: version, entries: z.array(historyEntrySchema) });

export const eventSchema: z.ZodType<EventValue> = z.object({
  v: version,
  atMs: epochMs,
  source: z.string(),
  kind: z.string(),
  message: z.string(),
});

/**
 * `config` is `{v:1}` plus the dynamic settings; decoding drops `v` and fills
 * defaults. The settings schema is strict (a typo in a setting must not pass
 * silently), so `v` is checked and removed before it sees the object.
 */
export const configSchema: z.ZodType<DynamicConfig, unknown> = z
  .object({ v: version })
  .loose()
  .transform(({ v: _v, ...settings }) => screenStoredParameters(settings).settings)
  .pipe(dynamicConfigSchema);

const isParameterValue = (value: unknown): value is ParameterValue => ['string', 'number', 'boolean'].includes(typeof value);

/**
 * A stored config may hold parameters this Keel refuses (written by hand or
 * by an older version): they are left out, never applied, and the rest of the
 * config still counts. Writers refuse them (dynamicConfigSchema).
 */
function screenStoredParameters(settings: Record<string, unknown>): { settings: Record<string, unknown>; ignored: string[] } {
  const stored = settings.postgresql_parameters;
  if (typeof stored !== 'object' || stored === null || Array.isArray(stored)) return { settings, ignored: [] };
  const values: Record<string, ParameterValue> = {};
  const ignored: string[] = [];
  for (const [name, value] of Object.entries(stored)) {
    if (isParameterValue(value)) Object.defineProperty(values, name, { value, enumerable: true, writable: true, configurable: true });
    else ignored.push(`${JSON.stringify(name)}: not a string, number or boolean`);
  }
  const screened = screenClusterParameters(values);
  return { settings: { ...settings, postgresql_parameters: screened.accepted }, ignored: [...ignored, ...screened.refused] };
}

/** The parameters of a stored config that a node ignores, each with why; [] for a value that does not decode. Never throws. */
export function ignoredConfigParameters(text: string): string[] {
  try {
    const raw: unknown = JSON.parse(text);
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return [];
    return screenStoredParameters(raw as Record<string, unknown>).ignored;
  } catch {
    return [];
  }
}

/** The most nodes a spec may declare; a provider may allow fewer (local: 20). */
export const maxSpecNodes = 100;

/**
 * `spec`: readers strip unknown fields like every other value; `strict` is
 * for what people type (`keel spec set|edit`), where a misspelt key must be an
 * error rather than silently ignored.
 */
export function buildSpecSchema(strict: boolean): z.ZodType<SpecValue> {
  const object = <T extends z.ZodRawShape>(shape: T) => (strict ? z.strictObject(shape) : z.object(shape));
  const autoscale = object({
    enabled: z.boolean().default(false),
    metric: z.enum(['cpu', 'connections', 'roQps']).default('cpu'),
    target: z.number().positive().default(70),
    minReplicas: z.number().int().min(0).max(maxSpecNodes - 1).default(1),
    maxReplicas: z.number().int().min(0).max(maxSpecNodes - 1).default(4),
    scaleOutCooldownSeconds: z.number().min(0).max(86_400).default(300),
    scaleInCooldownSeconds: z.number().min(0).max(86_400).default(300),
    scaleInEnabled: z.boolean().default(true),
  }).refine((a: AutoscalePolicy) => a.minReplicas <= a.maxReplicas, { message: 'minReplicas must not exceed maxReplicas', path: ['minReplicas'] });
  const schedule = z
    .string()
    .nullable()
    .default(null)
    .superRefine((text, ctx) => {
      const parsed = text === null ? null : parseSchedule(text);
      if (typeof parsed === 'string') ctx.addIssue({ code: 'custom', message: parsed });
    });
  const backup = object({
    full: schedule,
    diff: schedule,
    incr: schedule,
    retentionFull: z.number().int().min(1).max(100).default(2),
    replicaSource: z.enum(['backup', 'leader']).default('backup'),
  });
  const scaling = object({
    added: z.array(memberName).default([]),
    lastScaleOutAtMs: epochMs.nullable().default(null),
    lastScaleInAtMs: epochMs.nullable().default(null),
  });
  return object({
    v: version,
    nodes: z.number().int().min(1).max(maxSpecNodes),
    zones: z
      .array(z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, 'letters, digits, _ . -, at most 64 characters'))
      .min(1)
      .refine((zones: string[]) => new Set(zones).size === zones.length, 'zones must not repeat'),
    instanceClass: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, 'letters, digits, _ . -, at most 64 characters'),
    replaceAfterSeconds: z.number().min(1).max(86_400).default(30),
    autoscale: autoscale.prefault({}),
    scaling: scaling.prefault({}),
    backup: backup.optional(),
  }) as unknown as z.ZodType<SpecValue>;
}

export const specSchema = buildSpecSchema(false);

export const controllerSchema: z.ZodType<ControllerValue> = z.object({
  v: version,
  name: z.string().min(1),
  pid: z.number().int().min(0),
  startedAtMs: epochMs,
  report: z
    .object({
      atMs: epochMs,
      plan: z.string(),
      autoscale: z.object({
        decision: z.string(),
        reason: z.string(),
        metric: z.number().nullable(),
        currentReplicas: z.number().int().min(0),
        wantedReplicas: z.number().int().min(0).nullable(),
      }),
    })
    .optional(),
});

export function describeIssues(error: z.ZodError): string {
  return error.issues
    .map((issue) => `${issue.path.length > 0 ? issue.path.join('.') : '(top level)'}: ${issue.message}`)
    .join('; ');
}

/** Parses JSON text and validates it; never throws. */
export function decode<T>(schema: z.ZodType<T, unknown>, text: string): Decoded<T> {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    return { ok: false, reason: `not JSON (${err instanceof Error ? err.message : String(err)})` };
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    return { ok: false, reason: 'not a JSON object' };
  }
  const v = (raw as Record<string, unknown>).v;
  if (v !== 1) {
    return { ok: false, reason: `unsupported version v=${JSON.stringify(v) ?? 'undefined'} (this Keel reads v=1)` };
  }
  const result = schema.safeParse(raw);
  return result.success ? { ok: true, value: result.data } : { ok: false, reason: describeIssues(result.error) };
}

export const decodeInitialize = (text: string): Decoded<InitializeValue> => decode(initializeSchema, text);
export const decodeLeader = (text: string): Decoded<LeaderValue> => decode(leaderSchema, text);
export const decodeMember = (text: string): Decoded<MemberValue> => decode(memberSchema, text);
export const decodeStatus = (text: string): Decoded<StatusValue> => decode(statusSchema, text);
export const decodeSync = (text: string): Decoded<SyncValue> => decode(syncSchema, text);
export const decodeSwitchover = (text: string): Decoded<SwitchoverValue> => decode(switchoverSchema, text);
export const decodeHistory = (text: string): Decoded<HistoryValue> => decode(historySchema, text);
export const decodeEvent = (text: string): Decoded<EventValue> => decode(eventSchema, text);
export const decodeConfig = (text: string): Decoded<DynamicConfig> => decode(configSchema, text);
export const decodeSpec = (text: string): Decoded<SpecValue> => decode(specSchema, text);
export const decodeController = (text: string): Decoded<ControllerValue> => decode(controllerSchema, text);
export const decodeDraining = (text: string): Decoded<DrainingValue> => decode(drainingSchema, text);
export const decodeCreation = (text: string): Decoded<CreationValue> => decode(creationSchema, text);
export const decodeRouter = (text: string): Decoded<RouterValue> => decode(routerSchema, text);
export const decodeBackupLock = (text: string): Decoded<BackupLockValue> => decode(backupLockSchema, text);

type StoredValue =
  | InitializeValue
  | LeaderValue
  | MemberValue
  | StatusValue
  | SyncValue
  | SwitchoverValue
  | HistoryValue
  | EventValue
  | ControllerValue
  | DrainingValue
  | CreationValue
  | RouterValue
  | BackupLockValue;

export function encode(value: StoredValue): string {
  return JSON.stringify(value);
}

/** Refuses settings that readers would reject, so a bad write cannot blank the config for everyone. */
export function encodeConfig(config: DynamicConfig): string {
  const checked = dynamicConfigSchema.safeParse(config);
  if (!checked.success) {
    throw new KeelError('KEEL_CONFIG_INVALID', `dynamic config is invalid: ${describeIssues(checked.error)}`);
  }
  return JSON.stringify({ v: 1, ...checked.data });
}

/** Refuses a spec readers would reject, so a bad write cannot blank it for the controller. */
export function encodeSpec(spec: SpecValue): string {
  const checked = specSchema.safeParse(spec);
  if (!checked.success) throw new KeelError('KEEL_SPEC_INVALID', `spec is invalid: ${describeIssues(checked.error)}`);
  return JSON.stringify(checked.data);
}

/**
 * The exact bytes of a leader key naming `name`. Transactions compare the
 * stored value against these bytes, so every writer must produce them the same
 * way (field order included).
 */
export function encodeLeader(name: string): string {
  const value: LeaderValue = { v: 1, name };
  return JSON.stringify(value);
}

export interface ClusterKeys {
  /** `/keel/<cluster>/` */
  prefix: string;
  /** the first key after every key of the prefix */
  prefixEnd: string;
  initialize: string;
  config: string;
  leader: string;
  member(name: string): string;
  membersPrefix: string;
  status: string;
  sync: string;
  switchover: string;
  history: string;
  spec: string;
  controller: string;
  /** the backup being taken now (bound to its runner's lease) */
  backup: string;
  draining(name: string): string;
  drainingPrefix: string;
  creation(name: string): string;
  creationsPrefix: string;
  router(id: string): string;
  routersPrefix: string;
  eventsPrefix: string;
  /** the first key after every key of `events/` */
  eventsEnd: string;
}

/** The key one past every key that starts with `prefix` (etcd's range_end for a prefix). */
export function rangeEndOf(prefix: string): string {
  const last = prefix.charCodeAt(prefix.length - 1);
  return prefix.slice(0, -1) + String.fromCharCode(last + 1);
}

export function keys(cluster: string): ClusterKeys {
  const prefix = `/keel/${cluster}/`;
  const membersPrefix = `${prefix}members/`;
  const eventsPrefix = `${prefix}events/`;
  const drainingPrefix = `${prefix}draining/`;
  const creationsPrefix = `${prefix}creations/`;
  const routersPrefix = `${prefix}routers/`;
  return {
    prefix,
    prefixEnd: rangeEndOf(prefix),
    initialize: `${prefix}initialize`,
    config: `${prefix}config`,
    leader: `${prefix}leader`,
    member: (name) => `${membersPrefix}${name}`,
    membersPrefix,
    status: `${prefix}status`,
    sync: `${prefix}sync`,
    switchover: `${prefix}switchover`,
    history: `${prefix}history`,
    spec: `${prefix}spec`,
    controller: `${prefix}controller`,
    backup: `${prefix}backup`,
    draining: (name) => `${drainingPrefix}${name}`,
    drainingPrefix,
    creation: (name) => `${creationsPrefix}${name}`,
    creationsPrefix,
    router: (id) => `${routersPrefix}${id}`,
    routersPrefix,
    eventsPrefix,
    eventsEnd: rangeEndOf(eventsPrefix),
  };
}

/**
 * `events/<13-digit ms>-<source>-<suffix>`: keys sort by time, so the oldest
 * events are the first of the range. The source is reduced to characters that
 * keep the key readable and free of `/`.
 */
export function eventKeyName(eventsPrefix: string, atMs: number, source: string, suffix: string): string {
  const ms = String(Math.max(0, Math.floor(atMs))).padStart(13, '0');
  const safeSource = source.replace(/[^A-Za-z0-9_.-]/g, '_').slice(0, 64) || 'unknown';
  return `${eventsPrefix}${ms}-${safeSource}-${suffix}`;
}

/** Events kept under `events/`; older ones are trimmed. */
export const maxEvents = 1000;

/** History appends are retried after unknown outcomes; an identical last entry means it already landed. */
export function sameHistoryEntry(a: HistoryEntry, b: HistoryEntry): boolean {
  return a.timeline === b.timeline && a.switchLsn === b.switchLsn && a.leader === b.leader && a.atMs === b.atMs && a.reason === b.reason;
}
