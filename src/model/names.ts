/**
 * Names of clusters and members: one rule for node.yml, the REST API, the CLI
 * and every value read from etcd, since a name becomes an etcd key, a
 * replication slot, a word in synchronous_standby_names and a file path.
 */
import { z } from 'zod';

export const nameSchema = z
  .string()
  .regex(/^[a-z][a-z0-9_]{0,30}$/, 'lower-case letters, digits and _, starting with a letter, at most 31 characters');
