/**
 * Which postgresql.conf parameters the cluster-wide dynamic config (etcd's
 * `config` key, `keel config set`, PATCH /config) may set, with each one's
 * type and range as PostgreSQL 15's pg_settings gives them, and why the
 * others are refused. Pure: a data table and the checks over it.
 *
 * Anyone who can write the `config` key can change every node, so it may set
 * only what tunes PostgreSQL. What runs a command, loads code or names a file
 * on the node belongs to that node's own node.yml (`postgres.parameters`);
 * what Keel sets itself (replication, failover, its files) no one overrides.
 * A value PostgreSQL would refuse is refused here too: it would stop a node at
 * its next restart.
 */

export type ParameterValue = string | number | boolean;

/** pg_settings' units: what a number without a unit counts */
type MemoryUnit = 'B' | 'kB' | '8kB' | 'MB';
type TimeUnit = 'us' | 'ms' | 's' | 'min';

export type ParameterSpec =
  | { type: 'integer'; unit: MemoryUnit | TimeUnit | null; min: number; max: number }
  | { type: 'real'; unit: TimeUnit | null; min: number; max: number }
  | { type: 'bool' }
  | { type: 'enum'; values: readonly string[] }
  | { type: 'string'; pattern: RegExp; expected: string };

const intMax = 2_147_483_647;
const dblMax = Number.MAX_VALUE;

const int = (min: number, max: number, unit: MemoryUnit | TimeUnit | null = null): ParameterSpec => ({ type: 'integer', unit, min, max });
const real = (min: number, max: number, unit: TimeUnit | null = null): ParameterSpec => ({ type: 'real', unit, min, max });
const bool: ParameterSpec = { type: 'bool' };
const oneOf = (...values: string[]): ParameterSpec => ({ type: 'enum', values });
/** PostgreSQL takes the boolean spellings for these enums too (wal_compression = on) */
const booleanWords = ['on', 'off', 'true', 'false', 'yes', 'no', '1', '0'];

/** Ranges from PostgreSQL 15's pg_settings (min_val, max_val, unit); narrower only where Keel needs more. */
export const clusterParameters: Readonly<Record<string, ParameterSpec>> = {
  // memory
  shared_buffers: int(16, 1_073_741_823, '8kB'),
  work_mem: int(64, intMax, 'kB'),
  maintenance_work_mem: int(1024, intMax, 'kB'),
  effective_cache_size: int(1, intMax, '8kB'),
  temp_buffers: int(100, 1_073_741_823, '8kB'),
  autovacuum_work_mem: int(-1, intMax, 'kB'),
  hash_mem_multiplier: real(1, 1000),
  huge_pages: oneOf('off', 'on', 'try', ...booleanWords),
  // WAL and checkpoints
  max_wal_size: int(2, intMax, 'MB'),
  min_wal_size: int(2, intMax, 'MB'),
  checkpoint_timeout: int(30, 86_400, 's'),
  checkpoint_completion_target: real(0, 1),
  checkpoint_warning: int(0, intMax, 's'),
  wal_compression: oneOf('pglz', 'lz4', 'zstd', ...booleanWords),
  wal_buffers: int(-1, 262_143, '8kB'),
  wal_keep_size: int(0, intMax, 'MB'),
  max_slot_wal_keep_size: int(-1, intMax, 'MB'),
  // replication that Keel tunes by default; fewer than 10 senders or slots would leave replicas out
  max_wal_senders: int(10, 262_143),
  max_replication_slots: int(10, 262_143),
  wal_sender_timeout: int(0, intMax, 'ms'),
  wal_receiver_timeout: int(0, intMax, 'ms'),
  wal_receiver_status_interval: int(0, 2_147_483, 's'),
  wal_retrieve_retry_interval: int(1, intMax, 'ms'),
  hot_standby_feedback: bool,
  max_standby_streaming_delay: int(-1, intMax, 'ms'),
  max_standby_archive_delay: int(-1, intMax, 'ms'),
  // planner and parallelism
  random_page_cost: real(0, dblMax),
  seq_page_cost: real(0, dblMax),
  effective_io_concurrency: int(0, 1000),
  maintenance_io_concurrency: int(0, 1000),
  default_statistics_target: int(1, 10_000),
  jit: bool,
  max_worker_processes: int(0, 262_143),
  max_parallel_workers: int(0, 1024),
  max_parallel_workers_per_gather: int(0, 1024),
  max_parallel_maintenance_workers: int(0, 1024),
  // connections and sessions; Keel's agent and its replicas need a few connections of their own
  max_connections: int(10, 262_143),
  max_locks_per_transaction: int(10, intMax),
  statement_timeout: int(0, intMax, 'ms'),
  idle_in_transaction_session_timeout: int(0, intMax, 'ms'),
  idle_session_timeout: int(0, intMax, 'ms'),
  lock_timeout: int(0, intMax, 'ms'),
  deadlock_timeout: int(1, intMax, 'ms'),
  tcp_keepalives_idle: int(0, intMax, 's'),
  tcp_keepalives_interval: int(0, intMax, 's'),
  tcp_keepalives_count: int(0, intMax),
  // logging (where the log goes is Keel's; what it says is the operator's)
  log_min_duration_statement: int(-1, intMax, 'ms'),
  log_autovacuum_min_duration: int(-1, intMax, 'ms'),
  log_temp_files: int(-1, intMax, 'kB'),
  log_checkpoints: bool,
  log_lock_waits: bool,
  log_connections: bool,
  log_disconnections: bool,
  log_statement: oneOf('none', 'ddl', 'mod', 'all'),
  log_min_messages: oneOf('debug5', 'debug4', 'debug3', 'debug2', 'debug1', 'info', 'notice', 'warning', 'error', 'log', 'fatal', 'panic'),
  log_line_prefix: { type: 'string', pattern: /^[\x20-\x7e]{0,256}$/, expected: 'printable ASCII, at most 256 characters' },
  track_io_timing: bool,
  // autovacuum
  autovacuum: bool,
  autovacuum_max_workers: int(1, 262_143),
  autovacuum_naptime: int(1, 2_147_483, 's'),
  autovacuum_vacuum_threshold: int(0, intMax),
  autovacuum_vacuum_insert_threshold: int(-1, intMax),
  autovacuum_analyze_threshold: int(0, intMax),
  autovacuum_vacuum_scale_factor: real(0, 100),
  autovacuum_vacuum_insert_scale_factor: real(0, 100),
  autovacuum_analyze_scale_factor: real(0, 100),
  autovacuum_freeze_max_age: int(100_000, 2_000_000_000),
  autovacuum_vacuum_cost_delay: real(-1, 100, 'ms'),
  autovacuum_vacuum_cost_limit: int(-1, 10_000),
  // time zones: a zone name such as UTC, Europe/Paris or Etc/GMT+3
  timezone: { type: 'string', pattern: /^[A-Za-z][A-Za-z0-9_+-]*(\/[A-Za-z0-9_+-]+){0,2}$/, expected: 'a time zone name such as UTC or Europe/Paris' },
  log_timezone: { type: 'string', pattern: /^[A-Za-z][A-Za-z0-9_+-]*(\/[A-Za-z0-9_+-]+){0,2}$/, expected: 'a time zone name such as UTC or Europe/Paris' },
  // PostGIS rasters (out-of-database rasters read files through GDAL: off unless asked for)
  'postgis.gdal_enabled_drivers': {
    type: 'string',
    pattern: /^(ENABLE_ALL|DISABLE_ALL|[A-Za-z0-9_]{1,32}( [A-Za-z0-9_]{1,32}){0,199})$/,
    expected: 'ENABLE_ALL, DISABLE_ALL or GDAL driver names separated by spaces, e.g. "GTiff PNG JPEG"',
  },
  'postgis.enable_outdb_rasters': bool,
};

/** Why a parameter is refused from etcd. `node` ones may still be set in a node's own node.yml. */
export type RefusalKind = 'keel' | 'command' | 'code' | 'path';

const keel = (why: string) => ({ kind: 'keel' as const, why });
const command = { kind: 'command' as const, why: 'it runs a shell command on every node' };
const code = { kind: 'code' as const, why: 'it loads code into PostgreSQL' };
const path = { kind: 'path' as const, why: 'it names a file or directory on the node' };
const replication = keel('Keel sets it for replication and failover');
const files = keel("Keel lays out the node's files itself");
const durability = keel("Keel's guarantee of no lost acknowledged write depends on it");
const recoveryTarget = keel('Keel never runs targeted recovery');

/** Parameters with a known reason to be refused; any other name off the list above is refused as unknown. */
export const refusedParameters: Readonly<Record<string, { kind: RefusalKind; why: string }>> = {
  listen_addresses: keel('Keel sets it from node.yml (postgres.listen)'),
  port: keel('Keel sets it from node.yml (postgres.port)'),
  unix_socket_directories: files,
  cluster_name: keel('Keel names each node cluster-node'),
  hot_standby: replication,
  primary_conninfo: replication,
  primary_slot_name: replication,
  recovery_target_timeline: replication,
  synchronous_standby_names: keel('Keel sets it from synchronous_mode and synchronous_node_count'),
  wal_level: replication,
  wal_log_hints: keel('pg_rewind needs it'),
  synchronous_commit: durability,
  fsync: durability,
  full_page_writes: durability,
  password_encryption: keel('pg_hba.conf asks every client for scram-sha-256'),
  data_directory: files,
  config_file: files,
  hba_file: files,
  ident_file: files,
  include: files,
  include_dir: files,
  include_if_exists: files,
  logging_collector: keel("Keel reads PostgreSQL's log from postgres.log in the node directory"),
  log_destination: keel("Keel reads PostgreSQL's log from postgres.log in the node directory"),
  recovery_target: recoveryTarget,
  recovery_target_lsn: recoveryTarget,
  recovery_target_name: recoveryTarget,
  recovery_target_time: recoveryTarget,
  recovery_target_xid: recoveryTarget,
  recovery_target_inclusive: recoveryTarget,
  recovery_target_action: recoveryTarget,
  archive_mode: { kind: 'command', why: 'archiving needs archive_command, which runs a shell command on every node' },
  archive_command: command,
  archive_cleanup_command: command,
  restore_command: command,
  recovery_end_command: command,
  ssl_passphrase_command: command,
  archive_library: code,
  shared_preload_libraries: code,
  session_preload_libraries: code,
  local_preload_libraries: code,
  dynamic_library_path: code,
  jit_provider: code,
  external_pid_file: path,
  log_directory: path,
  log_filename: path,
  unix_socket_group: path,
  unix_socket_permissions: path,
  krb_server_keyfile: path,
  promote_trigger_file: path,
  ssl: path,
  ssl_cert_file: path,
  ssl_key_file: path,
  ssl_ca_file: path,
  ssl_crl_file: path,
  ssl_crl_dir: path,
  ssl_dh_params_file: path,
};

const parameterName = /^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?$/;
/** shaped like parameter names, but keys that reach an object's prototype */
const prototypeKeys = new Set(['__proto__', 'constructor', 'prototype']);

function notAName(name: string): string | null {
  if (parameterName.test(name) && !prototypeKeys.has(name)) return null;
  return `${JSON.stringify(name)} is not a parameter name (lower-case letters, digits and _)`;
}

/** A sentence saying why `name` may not come from etcd, or null when it may. */
export function refusalOf(name: string): string | null {
  const malformed = notAName(name);
  if (malformed !== null) return malformed;
  if (Object.hasOwn(clusterParameters, name)) return null;
  const refused = Object.hasOwn(refusedParameters, name) ? refusedParameters[name]! : null;
  if (refused === null) return `${name} is not among the parameters Keel lets the cluster set (README: postgresql_parameters)`;
  if (refused.kind === 'keel') return `${name} is Keel's own: ${refused.why}`;
  return `${name} cannot be set cluster-wide: ${refused.why}; set it in node.yml (postgres.parameters) of the nodes that need it`;
}

// ---- values ------------------------------------------------------------------

/** Bytes per memory unit and microseconds per time unit, as PostgreSQL reads them (case matters). */
const memoryUnits: Record<string, number> = { B: 1, kB: 1024, MB: 1024 ** 2, GB: 1024 ** 3, TB: 1024 ** 4 };
const timeUnits: Record<string, number> = { us: 1, ms: 1000, s: 1_000_000, min: 60_000_000, h: 3_600_000_000, d: 86_400_000_000 };
const baseUnits: Record<MemoryUnit | TimeUnit, number> = { B: 1, kB: 1024, '8kB': 8192, MB: 1024 ** 2, us: 1, ms: 1000, s: 1_000_000, min: 60_000_000 };
const isMemory = (unit: MemoryUnit | TimeUnit): boolean => unit === 'B' || unit === 'kB' || unit === '8kB' || unit === 'MB';

const numberWithUnit = /^\s*(-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?)\s*([A-Za-z]*)\s*$/;

function unitsOf(unit: MemoryUnit | TimeUnit): string {
  return isMemory(unit) ? Object.keys(memoryUnits).join(', ') : Object.keys(timeUnits).join(', ');
}

/** The value in the parameter's base unit, or a sentence saying why it is not one. */
function numeric(spec: { unit: MemoryUnit | TimeUnit | null }, value: ParameterValue): number | string {
  if (typeof value === 'number') return Number.isFinite(value) ? value : 'not a finite number';
  if (typeof value !== 'string') return 'a number is expected';
  const match = numberWithUnit.exec(value);
  if (match === null) return spec.unit === null ? 'a number is expected' : `a number, optionally with a unit (${unitsOf(spec.unit)}), is expected`;
  const amount = Number(match[1]);
  const unit = match[2]!;
  if (unit === '') return amount;
  if (spec.unit === null) return 'this parameter takes no unit';
  const table = isMemory(spec.unit) ? memoryUnits : timeUnits;
  if (!Object.hasOwn(table, unit)) return `unknown unit ${JSON.stringify(unit)} (valid: ${unitsOf(spec.unit)}; case matters)`;
  return (amount * table[unit]!) / baseUnits[spec.unit];
}

/** A time setting as SHOW gives it ('17ms', '1s', '5min', or a bare number in `unit`), in `unit`; NaN when it is not one. */
export function timeIn(unit: TimeUnit, text: string): number {
  const value = numeric({ unit }, text);
  return typeof value === 'number' ? value : NaN;
}

function rangeText(spec: { min: number; max: number; unit: string | null }): string {
  const unit = spec.unit === null ? '' : ` (in ${spec.unit})`;
  return `from ${spec.min} to ${spec.max === dblMax ? 'any' : spec.max}${unit}`;
}

/** Why `value` is not a valid value of `spec`, or null when it is. */
export function valueProblem(spec: ParameterSpec, value: ParameterValue): string | null {
  switch (spec.type) {
    case 'integer':
    case 'real': {
      const parsed = numeric(spec, value);
      if (typeof parsed === 'string') return parsed;
      // PostgreSQL rounds an integer parameter to its unit before the range check
      const n = spec.type === 'integer' ? Math.round(parsed) : parsed;
      return n < spec.min || n > spec.max ? `out of range: ${rangeText(spec)}` : null;
    }
    case 'bool':
      if (typeof value === 'boolean' || value === 0 || value === 1) return null;
      return typeof value === 'string' && booleanWords.includes(value.trim().toLowerCase()) ? null : 'on or off (true/false) is expected';
    case 'enum': {
      const word = typeof value === 'boolean' ? (value ? 'on' : 'off') : String(value).trim().toLowerCase();
      return spec.values.includes(word) ? null : `one of ${spec.values.filter((v) => !booleanWords.includes(v) || v === 'on' || v === 'off').join(', ')} is expected`;
    }
    case 'string':
      return typeof value === 'string' && spec.pattern.test(value) ? null : `${spec.expected} is expected`;
  }
}

/** Why `name = value` may not come from the cluster-wide config, or null when it may. */
export function clusterParameterProblem(name: string, value: ParameterValue): string | null {
  const refusal = refusalOf(name);
  if (refusal !== null) return refusal;
  const problem = valueProblem(clusterParameters[name]!, value);
  return problem === null ? null : `${name} = ${JSON.stringify(value)}: ${problem}`;
}

export interface ScreenedParameters {
  accepted: Record<string, ParameterValue>;
  /** one sentence per parameter left out */
  refused: string[];
}

/** Splits parameters read from etcd into those a node may apply and those it must ignore. */
export function screenClusterParameters(parameters: Readonly<Record<string, ParameterValue>>): ScreenedParameters {
  const accepted: Record<string, ParameterValue> = {};
  const refused: string[] = [];
  for (const [name, value] of Object.entries(parameters)) {
    const problem = clusterParameterProblem(name, value);
    if (problem === null) accepted[name] = value;
    else refused.push(problem);
  }
  return { accepted, refused };
}

/** Why a node.yml (postgres.parameters) may not set `name`, or null: anything but what Keel sets itself. */
export function nodeParameterProblem(name: string): string | null {
  const malformed = notAName(name);
  if (malformed !== null) return malformed;
  const refused = Object.hasOwn(refusedParameters, name) ? refusedParameters[name]! : null;
  return refused?.kind === 'keel' ? `${name} is Keel's own: ${refused.why}` : null;
}
