/**
 * PgBouncer's files for the pooled rw endpoint, as text: pgbouncer.ini and the
 * userlist (auth_file). No I/O here: the process wrapper writes them (0600,
 * owned by the OS user PgBouncer runs as) and reloads PgBouncer.
 */
import { KeelError } from '../../errors.js';
import type { Backend } from '../route.js';

/** The admin console's user: known only to this router and the userlist, never to PostgreSQL. */
export const poolAdminUser = 'keel_pool_admin';

export interface PoolLogin {
  user: string;
  password: string;
}

export interface PoolConfigInput {
  listen: { host: string; port: number };
  /** where the admin console's socket and the files live */
  runDir: string;
  authFile: string;
  pidFile: string;
  /** the pooled databases; each goes to the same database name on the rw target */
  databases: string[];
  /** the current rw target; null: no database is defined yet (before the first leader is known) */
  target: Backend | null;
  tls: { cert: string; key: string; ca: string };
  maxClientConnections: number;
  poolSize: number;
  connectTimeoutMs: number;
  /** how long a query may wait for a server connection (a PAUSE, no leader) before the client gets an error */
  queryWaitTimeoutMs: number;
}

const seconds = (ms: number): string => String(Math.max(1, Math.ceil(ms / 1000)));

/** A value for a libpq-style connect string or the ini: only plain names and addresses go in unquoted. */
function plain(value: string, what: string): string {
  if (!/^[A-Za-z0-9_.:\-/]+$/.test(value)) throw new KeelError('KEEL_USAGE', `${what} ${JSON.stringify(value)} cannot go into PgBouncer's configuration`, { hint: 'use letters, digits, _ . - : / only' });
  return value;
}

export function pgbouncerIni(input: PoolConfigInput): string {
  const databases = input.target === null ? [] : input.databases.map((db) => `${plain(db, 'database')} = host=${plain(input.target!.host, 'host')} port=${input.target!.port} dbname=${db}`);
  return [
    '; written by keel router: changes are overwritten on the next leader change',
    '[databases]',
    ...databases,
    '',
    '[pgbouncer]',
    `listen_addr = ${plain(input.listen.host, 'listen address')}`,
    `listen_port = ${input.listen.port}`,
    `unix_socket_dir = ${plain(input.runDir, 'directory')}`,
    'unix_socket_mode = 0700',
    `pidfile = ${plain(input.pidFile, 'file')}`,
    // transaction pooling: a server connection belongs to a client for one transaction only
    'pool_mode = transaction',
    `max_client_conn = ${input.maxClientConnections}`,
    `default_pool_size = ${input.poolSize}`,
    'auth_type = scram-sha-256',
    `auth_file = ${plain(input.authFile, 'file')}`,
    `admin_users = ${poolAdminUser}`,
    // clients reach the pool over TLS only; the pool reaches PostgreSQL over TLS and checks its certificate
    'client_tls_sslmode = require',
    `client_tls_cert_file = ${plain(input.tls.cert, 'file')}`,
    `client_tls_key_file = ${plain(input.tls.key, 'file')}`,
    'server_tls_sslmode = verify-full',
    `server_tls_ca_file = ${plain(input.tls.ca, 'file')}`,
    `server_connect_timeout = ${seconds(input.connectTimeoutMs)}`,
    `query_wait_timeout = ${seconds(input.queryWaitTimeoutMs)}`,
    // a failed connect makes every new client fail until this passes: keep it short, the leader moves fast
    'server_login_retry = 1',
    'server_check_delay = 10',
    'ignore_startup_parameters = extra_float_digits',
    'log_connections = 0',
    'log_disconnections = 0',
    'log_pooler_errors = 1',
    'stats_period = 60',
    '',
  ].join('\n');
}

/** One quoted field of the userlist: double quotes inside are doubled. */
const quoted = (value: string): string => `"${value.replaceAll('"', '""')}"`;

/** The userlist: each application login with its password, and the admin console's user. */
export function userlist(logins: PoolLogin[], adminPassword: string): string {
  return [...logins, { user: poolAdminUser, password: adminPassword }].map((l) => `${quoted(l.user)} ${quoted(l.password)}`).join('\n') + '\n';
}

/**
 * The logins of a libpq password file (host:port:database:user:password, `\` escapes `:` and `\`),
 * one per user (the first line that names it). Lines for the admin user are refused.
 */
export function loginsFromPassfile(text: string, file: string): PoolLogin[] {
  const logins = new Map<string, string>();
  for (const line of text.split('\n')) {
    if (line.trim() === '' || line.startsWith('#')) continue;
    const fields: string[] = [];
    let field = '';
    for (let i = 0; i < line.length; i++) {
      const c = line[i]!;
      if (c === '\\' && i + 1 < line.length) field += line[++i];
      else if (c === ':' && fields.length < 4) {
        fields.push(field);
        field = '';
      } else field += c;
    }
    fields.push(field);
    if (fields.length !== 5) throw new KeelError('KEEL_CONFIG_INVALID', `${file}: a line is not host:port:database:user:password`, { hint: 'the format of a libpq password file (the password itself is never shown)' });
    const user = fields[3]!;
    if (user === '*' || user === poolAdminUser) throw new KeelError('KEEL_CONFIG_INVALID', `${file}: user ${JSON.stringify(user)} cannot log in through the pool`, { hint: 'name each application user on its own line' });
    if (!logins.has(user)) logins.set(user, fields[4]!);
  }
  if (logins.size === 0) throw new KeelError('KEEL_CONFIG_INVALID', `${file} names no user`, { hint: 'one line host:port:database:user:password per application user' });
  return [...logins].map(([user, password]) => ({ user, password }));
}
