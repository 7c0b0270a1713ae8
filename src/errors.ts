/**
 * The one catalogue of Keel's errors. Every error a person can see has a
 * `KEEL_*` code, a message that says what happened and a hint that says what
 * to do. `exitStatus` 2 marks usage and configuration errors.
 */

interface ErrorSpec {
  exitStatus: number;
  httpStatus: number;
  hint: string;
}

const catalogue = {
  KEEL_USAGE: { exitStatus: 2, httpStatus: 400, hint: 'run the command with --help to see what it accepts' },
  KEEL_CONFIG_INVALID: { exitStatus: 2, httpStatus: 400, hint: 'fix the named field and start again' },
  KEEL_CONFIG_UNREADABLE: { exitStatus: 2, httpStatus: 400, hint: 'check that the file exists and is readable YAML' },
  KEEL_PORT_IN_USE: { exitStatus: 2, httpStatus: 409, hint: 'stop what listens there or choose another --port-base' },
  KEEL_BINARY_MISSING: {
    exitStatus: 2,
    httpStatus: 500,
    hint: 'install it: apt-get install -y postgresql-15 postgresql-15-postgis-3 etcd-server etcd-client haproxy pgbouncer (or run `make setup`)',
  },
  KEEL_DIR_UNUSABLE: { exitStatus: 2, httpStatus: 500, hint: 'choose a directory the postgres user can reach, e.g. --dir /var/tmp/keel' },
  KEEL_FOREIGN_DATA_DIR: {
    exitStatus: 2,
    httpStatus: 409,
    hint: 'this data directory belongs to another cluster; point the node at an empty directory or at the right cluster',
  },
  KEEL_ETCD_UNREACHABLE: { exitStatus: 1, httpStatus: 503, hint: 'check that etcd runs and that --etcd points at it' },
  KEEL_ETCD_FORBIDDEN: {
    exitStatus: 2,
    httpStatus: 502,
    hint: "the etcd user (the CN of the client certificate, or etcd.user) lacks a role for this cluster's keys: give this component's own certificate, or run the etcd auth set-up again",
  },
  KEEL_NO_LEADER: { exitStatus: 1, httpStatus: 503, hint: 'wait for a failover to finish, or look at `keel status` for the reasons' },
  KEEL_UNKNOWN_MEMBER: { exitStatus: 2, httpStatus: 412, hint: 'pick a member listed by `keel status`' },
  KEEL_TARGET_INELIGIBLE: { exitStatus: 1, httpStatus: 412, hint: 'pick a streaming replica within maximum_lag_on_failover, or wait for it to catch up' },
  KEEL_CONFLICT: { exitStatus: 1, httpStatus: 409, hint: 'someone changed the value meanwhile; read it again and retry' },
  KEEL_ALREADY_RUNNING: { exitStatus: 2, httpStatus: 409, hint: 'run `keel down --dir DIR` first, or use another --dir' },
  KEEL_NOT_RUNNING: { exitStatus: 1, httpStatus: 404, hint: 'start it with `keel up --dir DIR`' },
  KEEL_TIMEOUT: { exitStatus: 1, httpStatus: 504, hint: 'look at the logs under DIR/nodes/*/agent.log' },
  KEEL_POSTGRES_FAILED: { exitStatus: 1, httpStatus: 500, hint: 'look at the PostgreSQL log in the node directory' },
  KEEL_UNAUTHORIZED: { exitStatus: 2, httpStatus: 401, hint: 'send Authorization: Bearer <token> from the node config' },
  KEEL_FORBIDDEN: { exitStatus: 2, httpStatus: 403, hint: 'the token does not match the node config' },
  KEEL_ROUTER_LISTEN_FAILED: { exitStatus: 2, httpStatus: 500, hint: 'give --rw/--ro a host:port this machine can listen on, e.g. 127.0.0.1:6402' },
  KEEL_SPEC_INVALID: { exitStatus: 2, httpStatus: 400, hint: 'fix the named field; `keel spec show` prints the current spec' },
  KEEL_EDITOR_FAILED: { exitStatus: 1, httpStatus: 500, hint: 'set $EDITOR to an editor that exits 0 after saving, or use `keel spec set key=value`' },
  KEEL_ROUTER_ENGINE_FAILED: { exitStatus: 1, httpStatus: 500, hint: 'look at the router log (HAProxy\'s own messages are in it with --engine haproxy)' },
  KEEL_POOL_FAILED: { exitStatus: 1, httpStatus: 500, hint: "look at the router log: PgBouncer's own messages are in it" },
  KEEL_ENDPOINT_UNREACHABLE: { exitStatus: 1, httpStatus: 503, hint: 'check the DSN, that the cluster runs (`keel status`) and that the password is in PGPASSFILE or the URL' },
  KEEL_DEMO_SCHEMA_CONFLICT: { exitStatus: 2, httpStatus: 409, hint: 'the demo needs its own "deals" table: point it at another database, or drop or rename the existing table' },
  KEEL_DEMO_CLUSTER_FAILED: { exitStatus: 1, httpStatus: 500, hint: 'look at DIR/supervisor.log and DIR/nodes/*/agent.log' },
  KEEL_DEMO_LOAD_FAILED: { exitStatus: 1, httpStatus: 503, hint: 'run the demo again: it loads only the deals still missing (look at `keel status` if it keeps failing)' },
  KEEL_TLS_FAILED: { exitStatus: 1, httpStatus: 500, hint: 'check the certificate files named in the message (`keel certs show`)' },
  KEEL_AWS_FAILED: { exitStatus: 1, httpStatus: 502, hint: 'EC2 refused or failed the call named in the message; the SDK already retried it (throttling, transient errors); see the AWS code in the message' },
  KEEL_AWS_FORBIDDEN: { exitStatus: 2, httpStatus: 502, hint: 'allow the named action in the policy of the role Keel runs with (deploy/aws/iam-policy.json lists every one it calls)' },
  KEEL_AWS_CAPACITY: { exitStatus: 1, httpStatus: 503, hint: 'no zone had capacity for that instance type: try again later, choose another instance type for the class, or give the provider subnets in more zones' },
  KEEL_BACKUP_UNCONFIGURED: { exitStatus: 2, httpStatus: 409, hint: 'give the nodes a backup block in node.yml (`keel up` clusters have one: start the cluster again with this Keel)' },
  KEEL_BACKUP_BUSY: { exitStatus: 1, httpStatus: 409, hint: 'another backup runs now (`keel backup list` shows the finished ones): wait for it, then try again' },
  KEEL_BACKUP_FAILED: { exitStatus: 1, httpStatus: 500, hint: "pgBackRest's own log is in the node's postgres/pgbackrest/log directory" },
  KEEL_BACKUP_NONE: { exitStatus: 2, httpStatus: 404, hint: 'take one first: `keel backup now --dir DIR`' },
  KEEL_BACKUP_KEY_MISSING: { exitStatus: 2, httpStatus: 400, hint: "the repository is encrypted: give its cluster's directory (--from DIR, whose secrets.json holds backupCipher) or --key-file FILE" },
  KEEL_BACKUP_FOREIGN_REPO: { exitStatus: 2, httpStatus: 400, hint: "point at the repository of the cluster you restore (the cluster's DIR/backup), with that cluster's key" },
  KEEL_RESTORE_TARGET_INVALID: { exitStatus: 2, httpStatus: 400, hint: '`keel backup list` shows what can be restored: a time or LSN from the end of the oldest backup on, or --latest' },
  KEEL_RESTORE_DIR_TAKEN: { exitStatus: 2, httpStatus: 409, hint: 'give --dir a new (or empty) directory: a restore never writes over a cluster' },
  KEEL_RESTORE_FAILED: { exitStatus: 1, httpStatus: 500, hint: "look at the restored node's postgres.log and pgbackrest/log; the directory given to --dir was removed again" },
  KEEL_DEMO_LOST_WRITES: { exitStatus: 1, httpStatus: 500, hint: 'the ids are listed above; look at the agents\' logs and `keel events` around the failovers' },
} as const satisfies Record<string, ErrorSpec>;

export type KeelErrorCode = keyof typeof catalogue;

export class KeelError extends Error {
  readonly code: KeelErrorCode;
  readonly hint: string;
  readonly exitStatus: number;
  readonly httpStatus: number;

  constructor(code: KeelErrorCode, message: string, options: { hint?: string; cause?: unknown } = {}) {
    super(message, { cause: options.cause });
    const spec: ErrorSpec = catalogue[code];
    this.name = 'KeelError';
    this.code = code;
    this.hint = options.hint ?? spec.hint;
    this.exitStatus = spec.exitStatus;
    this.httpStatus = spec.httpStatus;
  }

  /** One line for a terminal: code, message, hint. */
  render(): string {
    return `${this.code}: ${this.message}\n  hint: ${this.hint}`;
  }

  toJSON(): { code: string; message: string; hint: string } {
    return { code: this.code, message: this.message, hint: this.hint };
  }
}

export function isKeelError(err: unknown): err is KeelError {
  return err instanceof KeelError;
}

/** A message safe to log for any thrown value. */
export function describeError(err: unknown): string {
  if (err instanceof KeelError) return `${err.code}: ${err.message}`;
  if (err instanceof Error) return redactSecrets(err.message);
  return redactSecrets(String(err));
}

const secretPatterns: RegExp[] = [
  /(password\s*=\s*)('[^']*'|\S+)/gi,
  /(PASSWORD\s+)('[^']*')/g,
  /(:\/\/[^:/@\s]+:)([^@\s]+)(@)/g,
  /(Bearer\s+)(\S+)/gi,
];

/** Hides passwords and tokens in free text (connection strings, SQL, headers). */
export function redactSecrets(text: string): string {
  let out = text;
  for (const pattern of secretPatterns) {
    out = out.replace(pattern, (_m, head: string, _secret: string, tail?: string) =>
      typeof tail === 'string' ? `${head}***${tail}` : `${head}***`,
    );
  }
  return out;
}
