/**
 * Instance classes of the local provider: on one machine every node gets the
 * same CPUs, so a class is the memory PostgreSQL may use. The agent reads its
 * node's class from the `instanceClass` tag and writes these parameters under
 * the cluster's own (an operator's explicit `postgresql_parameters` win).
 * Pure.
 */

export const defaultLocalInstanceClass = 'local-medium';

/** Only parameters a replica may hold at a different value than its primary (max_connections may not). */
export const localInstanceClasses: Readonly<Record<string, Readonly<Record<string, string>>>> = {
  'local-small': { shared_buffers: '32MB', effective_cache_size: '128MB', work_mem: '2MB', maintenance_work_mem: '32MB' },
  'local-medium': { shared_buffers: '128MB', effective_cache_size: '512MB', work_mem: '4MB', maintenance_work_mem: '64MB' },
  'local-large': { shared_buffers: '256MB', effective_cache_size: '1GB', work_mem: '8MB', maintenance_work_mem: '128MB' },
};

/** The parameters of the class named in the node's tags; none for an untagged node or a class of another provider. */
export function instanceClassParameters(tags: Record<string, string | number | boolean>): Record<string, string> {
  const name = tags.instanceClass;
  return typeof name === 'string' ? { ...(localInstanceClasses[name] ?? {}) } : {};
}
