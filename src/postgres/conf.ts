/**
 * The text of the files Keel owns around one PostgreSQL: postgresql.conf,
 * pg_hba.conf and the libpq password file. Pure: local.ts writes them.
 *
 * Passwords only ever go to the password file; every connection string points
 * at it with `passfile=`, so no conf file, command line or log holds a secret.
 */
import { createHash } from 'node:crypto';
import { dirname, join, resolve } from 'node:path';
import type { NodeConfig } from '../config/schema.js';
import { KeelError } from '../errors.js';
import { nodeParameterProblem } from '../model/parameters.js';
import { archiveParameters } from './archiving.js';
import type { StartOptions, UpstreamTarget } from './types.js';

export interface NodeLayout {
  nodeDir: string;
  dataDir: string;
  pgpassPath: string;
  logPath: string;
  socketDir: string;
  /** true when socketDir is the short fallback under /tmp, which must be created for the run-as user */
  socketDirIsFallback: boolean;
}

/** sun_path holds 108 bytes including the terminating NUL. */
const maxSocketPathBytes = 107;

export function socketPath(socketDir: string, port: number): string {
  return `${socketDir}/.s.PGSQL.${port}`;
}

export function nodeLayout(config: NodeConfig): NodeLayout {
  // Programs run with the node directory as cwd, so every path must be absolute.
  const dataDir = resolve(config.postgres.dataDir);
  const nodeDir = dirname(dataDir);
  const wanted = resolve(config.postgres.socketDir ?? nodeDir);
  const fits = Buffer.byteLength(socketPath(wanted, config.postgres.port)) <= maxSocketPathBytes;
  const fallback = `/tmp/keel-${createHash('sha256').update(wanted).digest('hex').slice(0, 16)}`;
  return {
    nodeDir,
    dataDir,
    pgpassPath: join(nodeDir, 'pgpass'),
    logPath: join(nodeDir, 'postgres.log'),
    socketDir: fits ? wanted : fallback,
    socketDirIsFallback: !fits,
  };
}

// ---- quoting -------------------------------------------------------------

/** A single-quoted postgresql.conf string; the conf lexer takes backslash escapes like E'' literals. */
export function quoteConfString(value: string): string {
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/.test(value)) {
    throw new KeelError('KEEL_CONFIG_INVALID', 'a postgresql.conf value contains a control character');
  }
  const escaped = value
    .replace(/\\/g, '\\\\')
    .replace(/'/g, "''")
    .replace(/\n/g, '\\n')
    .replace(/\r/g, '\\r')
    .replace(/\t/g, '\\t');
  return `'${escaped}'`;
}

/** Reverses quoteConfString for the lines Keel wrote itself. */
export function unquoteConfString(quoted: string): string {
  const body = quoted.slice(1, -1);
  return body.replace(/''|\\(.)/g, (m, c: string | undefined) => {
    if (m === "''") return "'";
    return ({ n: '\n', r: '\r', t: '\t' } as Record<string, string>)[c ?? ''] ?? c ?? '';
  });
}

export function formatConfValue(value: string | number | boolean): string {
  if (typeof value === 'boolean') return value ? 'on' : 'off';
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new KeelError('KEEL_CONFIG_INVALID', `postgresql.conf value ${value} is not finite`);
    return String(value);
  }
  return quoteConfString(value);
}

/** One libpq connection-string value, quoted only when it has to be. */
function conninfoValue(value: string | number): string {
  const text = String(value);
  if (/^[A-Za-z0-9_.\/:@%+-]+$/.test(text)) return text;
  return `'${text.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

export function buildConninfo(pairs: [string, string | number][]): string {
  return pairs.map(([key, value]) => `${key}=${conninfoValue(value)}`).join(' ');
}

function pgpassField(value: string): string {
  if (/[\r\n]/.test(value)) {
    throw new KeelError('KEEL_CONFIG_INVALID', 'a user name or password contains a line break, which the password file cannot hold');
  }
  return value.replace(/\\/g, '\\\\').replace(/:/g, '\\:');
}

// ---- parameters ----------------------------------------------------------

/** Throws KEEL_CONFIG_INVALID naming every parameter Keel cannot write: malformed names and what Keel sets itself. */
export function validateParameters(parameters: Record<string, string | number | boolean>, source = 'postgresql parameters'): void {
  const problems: string[] = [];
  for (const [name, value] of Object.entries(parameters)) {
    const problem = nodeParameterProblem(name);
    if (problem !== null) problems.push(problem);
    else if (typeof value === 'number' && !Number.isFinite(value)) problems.push(`${name} is not a finite number`);
  }
  if (problems.length > 0) {
    throw new KeelError('KEEL_CONFIG_INVALID', `${source}: ${problems.join('; ')}`);
  }
}

// ---- files ---------------------------------------------------------------

export const confMarker = '# Written by Keel';

/** Tunable defaults: written before the dynamic parameters so those can override them. */
const defaults: [string, string | number | boolean][] = [
  ['wal_level', 'replica'],
  ['max_wal_senders', 10],
  ['max_replication_slots', 10],
  ['wal_keep_size', '256MB'],
  // A slot of a replica that stays away must not fill the leader's disk: past this the slot is
  // invalidated and the replica clones again (postgresql_parameters.max_slot_wal_keep_size changes it).
  ['max_slot_wal_keep_size', '8GB'],
  // pg_rewind needs hint bits WAL-logged (checksums already imply it; this covers clusters without).
  ['wal_log_hints', true],
  ['hot_standby_feedback', true],
  ['wal_receiver_status_interval', '1s'],
  ['wal_sender_timeout', '10s'],
  ['wal_receiver_timeout', '10s'],
  // A replica retries its upstream every second, not every five, after a failover.
  ['wal_retrieve_retry_interval', '1s'],
  ['password_encryption', 'scram-sha-256'],
  ['log_line_prefix', '%m [%p] %q%u@%d '],
];

/**
 * libpq settings for connections to another node of the cluster: with the cluster CA, verify-full (the
 * server must prove it holds a certificate for the address dialled, so no one in the middle can ask for a
 * password); without TLS configured, none.
 */
export function tlsConninfo(config: NodeConfig, clientPair: { cert?: string; key?: string } = {}): [string, string][] {
  if (!config.tls) return [];
  const pairs: [string, string][] = [['sslmode', 'verify-full'], ['sslrootcert', config.tls.ca]];
  if (clientPair.cert && clientPair.key) pairs.push(['sslcert', clientPair.cert], ['sslkey', clientPair.key]);
  return pairs;
}

/** The same settings as libpq environment variables, for programs started with an env (pg_basebackup). */
export function tlsEnvironment(config: NodeConfig, clientPair: { cert?: string; key?: string } = {}): Record<string, string> {
  const names: Record<string, string> = { sslmode: 'PGSSLMODE', sslrootcert: 'PGSSLROOTCERT', sslcert: 'PGSSLCERT', sslkey: 'PGSSLKEY' };
  return Object.fromEntries(tlsConninfo(config, clientPair).map(([key, value]) => [names[key]!, value]));
}

/** Whether the replication role logs in by certificate (TLS on and a client pair configured). */
export function replicationByCertificate(config: NodeConfig): boolean {
  return config.tls !== undefined && config.postgres.replication.cert !== undefined;
}

export function primaryConninfo(config: NodeConfig, layout: NodeLayout, upstream: UpstreamTarget): string {
  const { replication } = config.postgres;
  return buildConninfo([
    ['host', upstream.host],
    ['port', upstream.port],
    ['user', replication.username],
    ['application_name', config.name],
    ['passfile', layout.pgpassPath],
    ...tlsConninfo(config, replication),
    ['connect_timeout', 3],
    // Notice a dead upstream in about 10 s even when no packet says so.
    ['keepalives', 1],
    ['keepalives_idle', 5],
    ['keepalives_interval', 2],
    ['keepalives_count', 3],
  ]);
}

/** ssl settings: the node's certificate, and the CA that client certificates (replication) must chain to. */
function sslLines(config: NodeConfig): [string, string | boolean][] {
  if (!config.tls) return [['ssl', false]];
  return [
    ['ssl', true],
    ['ssl_cert_file', config.tls.cert],
    ['ssl_key_file', config.tls.key],
    ['ssl_ca_file', config.tls.ca],
    ['ssl_min_protocol_version', 'TLSv1.2'],
  ];
}

export function buildPostgresqlConf(
  config: NodeConfig,
  layout: NodeLayout,
  options: StartOptions,
  synchronousStandbyNames: string,
): string {
  validateParameters(options.parameters);
  const nodeParameters = config.postgres.parameters ?? {};
  validateParameters(nodeParameters, 'node.yml postgres.parameters');
  const upstream = options.replica ? options.upstream : null;
  const line = (name: string, value: string | number | boolean): string => `${name} = ${formatConfValue(value)}`;

  const lines = [
    `${confMarker} for node ${config.name} of cluster ${config.cluster}. Keel rewrites this file`,
    '# whenever the node starts or changes upstream: edits here are lost.',
    "# initdb's original settings, kept as they were:",
    "include_if_exists = 'postgresql.base.conf'",
    '',
    '# Keel defaults',
    ...defaults.map(([name, value]) => line(name, value)),
    '',
    '# cluster parameters (dynamic configuration)',
    ...Object.keys(options.parameters)
      .sort()
      .map((name) => line(name, options.parameters[name]!)),
    '',
    "# this node's own parameters (node.yml postgres.parameters)",
    ...Object.keys(nodeParameters)
      .sort()
      .map((name) => line(name, nodeParameters[name]!)),
    '',
    '# managed by Keel for this node and role',
    line('listen_addresses', config.postgres.listen),
    line('port', config.postgres.port),
    line('unix_socket_directories', layout.socketDir),
    line('cluster_name', `${config.cluster}-${config.name}`),
    line('hot_standby', true),
    line('recovery_target_timeline', 'latest'),
    line('primary_conninfo', upstream ? primaryConninfo(config, layout, upstream) : ''),
    line('primary_slot_name', upstream ? options.slotName : ''),
    line('synchronous_standby_names', synchronousStandbyNames),
    ...sslLines(config).map(([name, value]) => line(name, value)),
    ...archiveParameters(config, layout).map(([name, value]) => line(name, value)),
    ...(options.shortRetry === true && upstream !== null ? [promotionRetryLine, streamOnlyLine] : []),
    '',
  ];
  return lines.join('\n');
}

const syncLine = /^synchronous_standby_names = ('(?:[^'\\]|''|\\.)*')$/m;

/** The synchronous_standby_names Keel last wrote into this file; null for a file Keel did not write. */
export function readSynchronousStandbyNames(confText: string): string | null {
  if (!confText.startsWith(confMarker)) return null;
  const match = syncLine.exec(confText);
  return match ? unquoteConfString(match[1]!) : null;
}

/**
 * A standby told to promote right after its stream ended may first sleep out
 * the rest of wal_retrieve_retry_interval (PostgreSQL notices the request
 * while streaming, then waits before it looks at the archive and pg_wal
 * again): with 1 s that was up to a second of a switchover's pause. The same
 * sleep delays a standby streaming from a switchover's target when that
 * target is promoted and its timeline ends. Both reload with this line at the
 * end of their conf (the last setting wins) as soon as the switchover is
 * pending, and a failover's candidate when it promotes; every other standby keeps
 * 1 s, so an upstream that is away costs one retry (and one restore_command)
 * a second, not fifty. The odd value tells the agent the line is in force.
 */
export const shortRetryMs = 17;
export const promotionRetryLine = `wal_retrieve_retry_interval = '${shortRetryMs}ms' # promoting or following a switchover's target`;

/**
 * A switchover's target, which streams from the leader through the slot the
 * leader holds for it, and the standbys streaming from the target (through
 * slots it holds) need nothing from the WAL archive; yet where a stream ends
 * (the leader's shutdown, the target's promotion, a timeline's end)
 * PostgreSQL asks restore_command first: it looks for a newer timeline's
 * history file, then the parent's, and each pgBackRest archive-get took
 * 60-150 ms of the pause. They run without it from the moment the switchover
 * is pending until it is over (the last setting wins); a reload sent only at
 * the promotion could reach the startup process after it had already asked
 * the archive. A failover's promotion keeps it: the archive may hold WAL the
 * candidate never received.
 */
export const streamOnlyLine = "restore_command = '' # a switchover's target and the standbys streaming from it";

/** The same file with the promotion lines added at the end (on; streamOnly: restore_command too) or removed (off). */
export function withPromotionRetry(confText: string, on: boolean, streamOnly = false): string {
  const without = confText
    .split('\n')
    .filter((l) => l !== promotionRetryLine && l !== streamOnlyLine)
    .join('\n');
  const lines = on ? [promotionRetryLine, ...(streamOnly ? [streamOnlyLine] : [])] : [];
  return lines.length === 0 ? without : `${without.replace(/\n*$/, '\n')}${lines.join('\n')}\n`;
}

/** The same file with only synchronous_standby_names changed. */
export function withSynchronousStandbyNames(confText: string, value: string): string {
  const replacement = `synchronous_standby_names = ${quoteConfString(value)}`;
  if (syncLine.test(confText)) return confText.replace(syncLine, () => replacement);
  return `${confText.replace(/\n*$/, '\n')}${replacement}\n`;
}

/**
 * pg_hba.conf. With TLS: `hostssl` only (a clear-text TCP connection matches no line and is refused);
 * the superuser only over the local socket; replication by client certificate from the cluster's own
 * addresses; pg_rewind's role by password over TLS from the same addresses; everyone else by
 * scram-sha-256 from the applications' ranges. Without TLS the node says so in its log and accepts
 * scram-sha-256 over plain TCP from the same ranges.
 */
export function buildPgHba(config: NodeConfig): string {
  const { superuser, replication, rewind, hba } = config.postgres;
  const host = config.tls ? 'hostssl' : 'host   ';
  const rows: string[][] = [['local', 'all', 'all', '', 'scram-sha-256']];
  for (const range of hba.cluster) {
    rows.push([host, 'replication', replication.username, range, replicationByCertificate(config) ? 'cert' : 'scram-sha-256']);
  }
  if (rewind) {
    // pg_rewind has its own role: the superuser needs no network access at all
    rows.push([host, 'all', superuser.username, 'all', 'reject']);
    for (const range of hba.cluster) rows.push([host, 'postgres', rewind.username, range, 'scram-sha-256']);
    rows.push([host, 'all', rewind.username, 'all', 'reject']);
  }
  rows.push([host, 'all', replication.username, 'all', 'reject']);
  for (const range of hba.applications) rows.push([host, 'all', 'all', range, 'scram-sha-256']);
  if (config.tls) rows.push(['hostnossl', 'all', 'all', 'all', 'reject']);
  const width = (i: number) => Math.max(...rows.map((r) => r[i]!.length), 0) + 2;
  const widths = [0, 1, 2, 3].map(width);
  const format = (r: string[]) => r.map((cell, i) => (i < 4 ? cell.padEnd(widths[i]!) : cell)).join('').trimEnd();
  return [`${confMarker}; Keel rewrites this file.`, format(['# TYPE', 'DATABASE', 'USER', 'ADDRESS', 'METHOD']), ...rows.map(format), ''].join('\n');
}

/**
 * libpq password file for connections to the upstream: the replication role when it logs in by
 * password, and pg_rewind's role (pg_rewind's source server).
 */
export function buildPgpass(config: NodeConfig, upstream: UpstreamTarget | null): string {
  const lines = [`${confMarker}; Keel rewrites this file.`];
  if (upstream) {
    const hostPort = `${pgpassField(upstream.host)}:${upstream.port}`;
    const { replication, rewind, superuser } = config.postgres;
    if (replication.password !== undefined && !replicationByCertificate(config)) {
      lines.push(`${hostPort}:*:${pgpassField(replication.username)}:${pgpassField(replication.password)}`);
    }
    const source = rewind ?? superuser;
    lines.push(`${hostPort}:*:${pgpassField(source.username)}:${pgpassField(source.password)}`);
  }
  return `${lines.join('\n')}\n`;
}
