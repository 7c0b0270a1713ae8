/**
 * Patroni's health-check endpoints, with Patroni's names and meanings, so
 * HAProxy and cloud load-balancer configs written for Patroni work unchanged.
 * GET, HEAD and OPTIONS answer with the same status: HAProxy's reference
 * config checks with `OPTIONS /primary`.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { KeelError } from '../errors.js';
import type { AgentHandle, ApiOptions } from './handle.js';
import { checkStatus, observeNode, parseCheckQuery, type CheckKind } from './status.js';

/** Each path and what it checks. `/` is Patroni's default check: the primary. */
export const healthPaths: Record<string, CheckKind> = {
  '/': 'primary',
  '/primary': 'primary',
  '/read-write': 'primary',
  '/leader': 'primary',
  '/master': 'primary',
  '/replica': 'replica',
  '/read-only': 'read-only',
  '/health': 'health',
  '/liveness': 'liveness',
  '/readiness': 'readiness',
};

export function registerHealth(app: FastifyInstance, handle: AgentHandle, options: ApiOptions): void {
  for (const [path, kind] of Object.entries(healthPaths)) {
    // HEAD comes with GET (fastify's exposeHeadRoutes): same status and headers, no body.
    app.route({
      method: ['GET', 'OPTIONS'],
      url: path,
      handler: async (request: FastifyRequest, reply: FastifyReply) => {
        const parsed = parseCheckQuery(request.query as Record<string, string | string[] | undefined>);
        if (!parsed.ok) throw new KeelError('KEEL_USAGE', parsed.why, { hint: 'e.g. GET /replica?lag=16MB&tag_zone=a' });
        const facts = observeNode(handle, options.node, options.clock.now());
        reply.code(checkStatus(kind, facts, parsed.query)).header('cache-control', 'no-store');
        return facts.status;
      },
    });
  }

  // Always 200: the node's own view, for people and tools (Patroni's GET /patroni).
  for (const path of ['/status', '/patroni']) {
    app.get(path, async () => observeNode(handle, options.node, options.clock.now()).status);
  }
}
