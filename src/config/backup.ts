/**
 * node.yml's `backup` block: the node's pgBackRest repository, its encryption
 * and WAL archiving. Without it the node archives nothing and takes no backup.
 */
import { z } from 'zod';

const absolutePath = z.string().startsWith('/', 'an absolute path').regex(/^[^\r\n]+$/, 'one line');
/** a value pgbackrest.conf holds on one line */
const oneLine = z.string().min(1).regex(/^[^\r\n]+$/, 'one line');

/** A directory on this machine (or a file system mounted here, such as EFS). */
const posixRepoSchema = z.object({ type: z.literal('posix'), path: absolutePath }).strict();

/** An S3 bucket (or an S3-compatible server); pgBackRest speaks to S3 over TLS only. */
const s3RepoSchema = z
  .object({
    type: z.literal('s3'),
    bucket: z.string().regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, "an S3 bucket name"),
    /** host, or host:port */
    endpoint: z.string().regex(/^[A-Za-z0-9.-]+(:\d{1,5})?$/, 'host or host:port, e.g. s3.eu-west-1.amazonaws.com'),
    region: z.string().regex(/^[a-z0-9-]{1,32}$/, 'a region such as eu-west-1'),
    /** the repository's path inside the bucket */
    path: absolutePath.default('/keel'),
    uriStyle: z.enum(['host', 'path']).default('host'),
    /** the CA that signed the endpoint's certificate, when not a public one */
    caFile: absolutePath.optional(),
    key: oneLine,
    keySecret: oneLine,
  })
  .strict();

export const backupRepoSchema = z.discriminatedUnion('type', [posixRepoSchema, s3RepoSchema]);
export type BackupRepo = z.infer<typeof backupRepoSchema>;

export const backupConfigSchema = z
  .object({
    /** pgBackRest's name for the cluster in the repository; the cluster's name by default */
    stanza: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'letters, digits, _ and -').optional(),
    repo: backupRepoSchema,
    /** repository encryption: on unless `none` is written out */
    cipher: z.enum(['aes-256-cbc', 'none']).default('aes-256-cbc'),
    /** the repository key; kept in pgbackrest.conf (0600, PostgreSQL's OS user), never on a command line */
    cipherPass: z.string().min(32).regex(/^[^\r\n]+$/, 'one line').optional(),
    /** PostgreSQL's archive_timeout: at most this many seconds of writes wait outside the archive when little is written */
    archiveTimeoutSeconds: z.number().int().min(1).max(86_400).default(60),
    /** pgBackRest's processes for a backup or a restore */
    processMax: z.number().int().min(1).max(32).default(2),
    binary: absolutePath.default('/usr/bin/pgbackrest'),
  })
  .strict()
  .refine((b) => b.cipher === 'none' || b.cipherPass !== undefined, {
    message: 'the repository key (32 characters or more) that aes-256-cbc needs',
    path: ['cipherPass'],
  });

export type BackupConfig = z.infer<typeof backupConfigSchema>;

/** Parameters the backup block sets itself: node.yml's postgres.parameters may not set them beside it. */
export const archivingParameters = ['archive_mode', 'archive_command', 'archive_timeout', 'restore_command', 'archive_library'];
