import { z } from 'zod';

import { nameSchema } from '../model/names.js';
import { archivingParameters, backupConfigSchema } from './backup.js';
import { clusterParameterProblem, nodeParameterProblem } from '../model/parameters.js';

const parameterValueSchema = z.union([z.string(), z.number(), z.boolean()]);

const hostPortSchema = z
  .string()
  .regex(/^[A-Za-z0-9.\-:[\]]+:\d{1,5}$/, 'host:port, e.g. 127.0.0.1:8008');

const portSchema = z.number().int().min(1).max(65535);

const absolutePathSchema = z.string().startsWith('/', 'an absolute path');

/** A CA certificate and one holder's certificate and key, PEM files. */
export const tlsFilesSchema = z.object({ ca: absolutePathSchema, cert: absolutePathSchema, key: absolutePathSchema }).strict();
export type TlsFiles = z.infer<typeof tlsFilesSchema>;

/** An address range in pg_hba form: 10.0.0.0/16, 127.0.0.1/32, ::1/128. */
const cidrSchema = z.string().refine((text) => {
  const match = /^([0-9a-fA-F:.]+)\/(\d{1,3})$/.exec(text);
  if (!match) return false;
  const bits = Number(match[2]);
  return match[1]!.includes(':') ? bits <= 128 : /^\d{1,3}(\.\d{1,3}){3}$/.test(match[1]!) && bits <= 32;
}, 'an address range such as 10.0.0.0/16 or ::1/128');

/**
 * The WAL segment size of a new cluster. A switchover writes most of a
 * segment twice in its pause: the old leader's shutdown switches to a new
 * segment when archiving is on (the rest of the current one is written out
 * as zeros, streamed and flushed by the standbys), and the promoted standby
 * starts its timeline by copying its last segment into a new file padded to
 * full size and flushed. With PostgreSQL's 16 MB, on a 2-core machine, the
 * shutdown checkpoint took ~120 ms and the new timeline ~90 ms; with 4 MB,
 * 32-45 ms and 27-71 ms (1 MB saved little more). Smaller segments mean more
 * files to archive and fetch, one pgBackRest command each: 4 MB keeps that
 * at four times PostgreSQL's default.
 */
export const defaultWalSegmentMb = 4;
const walSegmentMbSchema = z
  .number()
  .int()
  .refine((mb) => mb >= 1 && mb <= 1024 && (mb & (mb - 1)) === 0, 'a power of 2 from 1 to 1024 (initdb --wal-segsize)');

/** A role Keel creates with a password (the application's, pg_rewind's). */
const passwordRoleSchema = (username: string) => z.object({ username: nameSchema.default(username), password: z.string().min(16) }).strict();

/**
 * Cluster-wide settings kept in the etcd `config` key and changed with a
 * compare-and-swap. Names follow what PostgreSQL operators already know.
 */
export const dynamicConfigSchema = z
  .object({
    /** seconds a leader lease lives without renewal */
    ttl: z.number().int().min(5).max(300).default(10),
    /** seconds between two agent loops when nothing happens */
    loop_wait: z.number().min(0.2).max(60).default(1),
    /** bytes a replica may lag behind the last known leader position and still be promoted */
    maximum_lag_on_failover: z.number().int().min(0).default(1024 * 1024),
    use_rewind: z.boolean().default(true),
    /** on by default: a failover never loses an acknowledged write while a standby is left */
    synchronous_mode: z.enum(['off', 'on', 'strict']).default('on'),
    synchronous_node_count: z.number().int().min(1).max(16).default(1),
    /** seconds the leader keeps the slot of a member whose key went away (0: drop at once) */
    member_slots_ttl: z.number().int().min(0).max(7 * 24 * 3600).default(1800),
    /** extra postgresql.conf parameters for every node: only those of the allow-list (model/parameters.ts), with valid values */
    postgresql_parameters: z
      .record(z.string(), parameterValueSchema)
      .superRefine((parameters, ctx) => {
        for (const [name, value] of Object.entries(parameters)) {
          const problem = clusterParameterProblem(name, value);
          if (problem !== null) ctx.addIssue({ code: 'custom', path: [name], message: problem });
        }
      })
      .default({}),
  })
  .strict()
  .superRefine((c, ctx) => {
    if (c.loop_wait * 2 > c.ttl) {
      ctx.addIssue({ code: 'custom', path: ['loop_wait'], message: `must be at most half of ttl (${c.ttl})` });
    }
  });

export type DynamicConfig = z.infer<typeof dynamicConfigSchema>;
export const defaultDynamicConfig: DynamicConfig = dynamicConfigSchema.parse({});

/** sun_path holds 108 bytes including the terminating NUL. */
const maxSocketPathBytes = 107;

/**
 * The node's fencing guard (`keel guard`): a separate process that stops
 * PostgreSQL when the agent stops feeding it lease deadlines. With this block
 * the agent never takes the leader key nor starts or promotes a primary
 * unless it is connected to the guard.
 */
export const guardConfigSchema = z
  .object({
    /** the guard's Unix socket (mode 0600), in the node's directory */
    socket: z
      .string()
      .startsWith('/', 'an absolute path')
      .refine((path) => Buffer.byteLength(path) <= maxSocketPathBytes, `at most ${maxSocketPathBytes} bytes (a Unix socket path)`),
    /** a watchdog device (e.g. /dev/watchdog) the guard keeps alive while fed; the host resets once it trips */
    hardwareWatchdog: z.string().startsWith('/', 'an absolute path').optional(),
  })
  .strict();

export type GuardConfig = z.infer<typeof guardConfigSchema>;

/** One agent's static configuration: the node.yml file. */
export const nodeConfigSchema = z
  .object({
    name: nameSchema,
    cluster: nameSchema,
    zone: z.string().min(1).max(64).default('local'),
    tags: z
      .object({
        nofailover: z.boolean().default(false),
      })
      .catchall(z.union([z.string(), z.number(), z.boolean()]))
      .default({ nofailover: false }),
    etcd: z
      .object({
        endpoints: z.array(z.string().url()).min(1),
        /** milliseconds one etcd request may take before the agent treats etcd as unreachable */
        requestTimeoutMs: z.number().int().min(100).max(30000).default(2000),
        /** https endpoints: the CA that signed etcd's certificate and this client's certificate (its CN is the etcd user) */
        tls: tlsFilesSchema.optional(),
        /** etcd's own authentication by password, where the certificate's CN is not the user */
        user: z.string().min(1).max(128).optional(),
        password: z.string().min(8).optional(),
      })
      .strict()
      .refine((e) => (e.user === undefined) === (e.password === undefined), 'user and password go together'),
    api: z
      .object({
        listen: hostPortSchema,
        connectAddress: hostPortSchema.optional(),
        /** this node's bearer token for the API's write endpoints (at least 32 characters; keel up makes 43) */
        token: z.string().min(32).optional(),
        /** also require the token on reads (status, health, metrics) */
        readAuth: z.boolean().default(false),
        /** Limits, each optional (defaults in src/api/limits.ts): the whole request, body included, must arrive within this */
        requestTimeoutMs: z.number().int().min(1000).max(300_000).optional(),
        /** the TLS handshake, and then the request's headers, each within this (at most requestTimeoutMs) */
        headersTimeoutMs: z.number().int().min(500).max(300_000).optional(),
        /** a kept-alive connection with no request for this long is closed */
        idleTimeoutMs: z.number().int().min(100).max(300_000).optional(),
        /** a connection on which nothing moves either way for this long is closed, while an answer is prepared too */
        connectionTimeoutMs: z.number().int().min(1000).max(3_600_000).optional(),
        /** connections beyond this many are closed at once */
        maxConnections: z.number().int().min(1).max(100_000).optional(),
      })
      .strict()
      .refine(
        (a) => a.headersTimeoutMs === undefined || a.requestTimeoutMs === undefined || a.headersTimeoutMs <= a.requestTimeoutMs,
        'headersTimeoutMs cannot exceed requestTimeoutMs',
      ),
    postgres: z
      .object({
        dataDir: z.string().min(1),
        binDir: z.string().min(1).default('/usr/lib/postgresql/15/bin'),
        listen: z.string().min(1).default('127.0.0.1'),
        port: portSchema,
        connectAddress: hostPortSchema.optional(),
        socketDir: z.string().min(1).optional(),
        database: nameSchema.default('app'),
        superuser: z
          .object({ username: nameSchema.default('postgres'), password: z.string().min(8) })
          .strict(),
        /**
         * The replication role. With TLS it logs in by certificate (CN = username): `cert` and `key` are
         * this node's client certificate for streaming and pg_basebackup; the password is then unused.
         */
        replication: z
          .object({
            username: nameSchema.default('replicator'),
            password: z.string().min(8).optional(),
            cert: absolutePathSchema.optional(),
            key: absolutePathSchema.optional(),
          })
          .strict()
          .refine((r) => (r.cert === undefined) === (r.key === undefined), 'cert and key go together')
          .refine((r) => r.password !== undefined || r.cert !== undefined, 'a password or a client certificate (cert, key)'),
        /** the role pg_rewind logs in as on the source: no superuser, only the functions pg_rewind calls */
        rewind: passwordRoleSchema('keel_rewind').optional(),
        /** the application's role, owner of the database (what the router's DSNs and Django use) */
        app: passwordRoleSchema('app').optional(),
        /** address ranges pg_hba admits over TLS: the cluster's own (replication, pg_rewind) and the applications' */
        hba: z
          .object({
            cluster: z.array(cidrSchema).min(1).default(['127.0.0.1/32', '::1/128']),
            applications: z.array(cidrSchema).min(1).default(['127.0.0.1/32', '::1/128']),
          })
          .strict()
          .default({ cluster: ['127.0.0.1/32', '::1/128'], applications: ['127.0.0.1/32', '::1/128'] }),
        /** OS user that runs PostgreSQL's programs; defaults to `postgres` when Keel runs as root */
        runAs: z.string().min(1).optional(),
        extensions: z.array(z.string().regex(/^[a-z_][a-z0-9_]*$/)).default(['postgis']),
        /**
         * postgresql.conf parameters of this node alone, after the cluster's: the place for what the
         * cluster-wide config refuses because it runs commands, loads code or names files (archive_command,
         * shared_preload_libraries...). Only what Keel sets itself is refused here.
         */
        parameters: z
          .record(z.string(), parameterValueSchema)
          .superRefine((parameters, ctx) => {
            for (const name of Object.keys(parameters)) {
              const problem = nodeParameterProblem(name);
              if (problem !== null) ctx.addIssue({ code: 'custom', path: [name], message: problem });
            }
          })
          .optional(),
      })
      .strict(),
    guard: guardConfigSchema.optional(),
    /**
     * The node's certificate (server and client use, SANs = its addresses) and the cluster CA: PostgreSQL's
     * ssl, the API's HTTPS, and verify-full on every connection the node makes. Without it the node runs in
     * clear text and says so.
     */
    tls: tlsFilesSchema.optional(),
    /** what this node uses only if it bootstraps the cluster */
    bootstrap: z
      .object({
        /** settings written to the `config` key */
        dynamic: dynamicConfigSchema.optional(),
        /** initdb's WAL segment size in MB (defaultWalSegmentMb); every node clones it */
        walSegmentMb: walSegmentMbSchema.optional(),
      })
      .strict()
      .default({}),
    /** pgBackRest: the repository, its key and WAL archiving (config/backup.ts) */
    backup: backupConfigSchema.optional(),
  })
  .strict()
  .superRefine((c, ctx) => {
    if (c.backup === undefined) return;
    for (const name of archivingParameters) {
      if (c.postgres.parameters?.[name] !== undefined) {
        ctx.addIssue({ code: 'custom', path: ['postgres', 'parameters', name], message: 'set by the backup block: remove it here' });
      }
    }
  });

export type NodeConfig = z.infer<typeof nodeConfigSchema>;
