import { z } from 'zod';

import { nameSchema } from '../model/names.js';
import { clusterParameterProblem, nodeParameterProblem } from '../model/parameters.js';

const parameterValueSchema = z.union([z.string(), z.number(), z.boolean()]);

const hostPortSchema = z
  .string()
  .regex(/^[A-Za-z0-9.\-:[\]]+:\d{1,5}$/, 'host:port, e.g. 127.0.0.1:8008');

const portSchema = z.number().int().min(1).max(65535);

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
      })
      .strict(),
    api: z
      .object({
        listen: hostPortSchema,
        connectAddress: hostPortSchema.optional(),
        /** bearer token for the API's write endpoints */
        token: z.string().min(8).optional(),
      })
      .strict(),
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
        replication: z
          .object({ username: nameSchema.default('replicator'), password: z.string().min(8) })
          .strict(),
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
    /** settings written to the `config` key when this node bootstraps the cluster */
    bootstrap: z.object({ dynamic: dynamicConfigSchema.optional() }).strict().default({}),
  })
  .strict();

export type NodeConfig = z.infer<typeof nodeConfigSchema>;
