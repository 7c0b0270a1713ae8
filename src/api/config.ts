/**
 * GET /config and PATCH /config: the cluster-wide dynamic settings in etcd.
 * A PATCH is a JSON merge patch (RFC 7386) applied to the value read, checked
 * against dynamicConfigSchema, and written with a compare-and-swap on the
 * revision read, so two operators cannot silently overwrite each other. The
 * revision is the ETag: send it back as If-Match to make a read-modify-write
 * from a client safe as well. GET shares a recent read (./read-cache.ts);
 * PATCH reads afresh, and the next GET shows what it wrote.
 */
import type { FastifyInstance } from 'fastify';
import { applyConfigPatch } from '../config/patch.js';
import { defaultDynamicConfig } from '../config/schema.js';
import { KeelError } from '../errors.js';
import type { ClusterView } from '../model/values.js';
import type { ApiOptions } from './handle.js';
import type { SharedRead } from './read-cache.js';

/** A strong ETag from an etcd revision; "0" stands for a config key that does not exist yet. */
const etagOf = (modRevision: string | null): string => `"${modRevision ?? '0'}"`;

function parseIfMatch(header: string | undefined): string | null | undefined {
  if (header === undefined) return undefined;
  const match = /^\s*(?:W\/)?"(\d+)"\s*$/.exec(header);
  if (match === null) throw new KeelError('KEEL_USAGE', 'If-Match must be one ETag from GET /config, e.g. "42"');
  return match[1] === '0' ? null : match[1]!;
}

export function registerConfig(app: FastifyInstance, clusterReads: SharedRead<ClusterView>, options: ApiOptions): void {
  app.get('/config', async (_request, reply) => {
    const stored = (await clusterReads.get()).config;
    reply.header('etag', etagOf(stored?.modRevision ?? null));
    return stored?.value ?? defaultDynamicConfig;
  });

  // the token is checked before the body is read (auth.ts)
  app.patch('/config', async (request, reply) => {
    const stored = (await options.dcs.readCluster()).config;
    const readRevision = stored?.modRevision ?? null;
    const ifMatch = parseIfMatch(request.headers['if-match'] as string | undefined);
    if (ifMatch !== undefined && ifMatch !== readRevision) {
      throw new KeelError('KEEL_CONFLICT', `the config changed since revision ${ifMatch ?? 0} (now ${readRevision ?? 0})`);
    }
    const next = applyConfigPatch(stored?.value ?? defaultDynamicConfig, request.body);
    if (!(await options.dcs.putConfig(next, readRevision))) {
      throw new KeelError('KEEL_CONFLICT', 'the config changed while this patch was applied');
    }
    clusterReads.invalidate();
    // field names only: parameter values are the operator's business, not the log's
    options.logger.info({ fields: Object.keys(request.body as object) }, 'dynamic config changed through the API');
    const written = (await options.dcs.readCluster()).config;
    reply.header('etag', etagOf(written?.modRevision ?? null));
    return written?.value ?? next;
  });
}
