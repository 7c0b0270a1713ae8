/**
 * Bearer-token check for the endpoints that change something. Health checks
 * and reads stay open: load balancers must not need the token.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { KeelError } from '../errors.js';

function digest(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}

/**
 * Compares digests rather than the strings so that neither the content nor
 * the length of the configured token shows in the response time.
 */
export function tokenMatches(presented: string, expected: string): boolean {
  return timingSafeEqual(digest(presented), digest(expected));
}

/** Throws KEEL_UNAUTHORIZED (401) without a bearer token and KEEL_FORBIDDEN (403) with a wrong one. */
export function requireToken(expected: string | undefined): (request: FastifyRequest, reply: FastifyReply) => Promise<void> {
  return async (request, reply) => {
    const header = request.headers.authorization;
    const match = typeof header === 'string' ? /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header) : null;
    if (match === null) {
      reply.header('www-authenticate', 'Bearer realm="keel"');
      throw new KeelError('KEEL_UNAUTHORIZED', `${request.method} ${request.routeOptions.url ?? request.url} needs a bearer token`);
    }
    // Fail closed: a node without a token refuses every write rather than accepting anyone's.
    if (expected === undefined) {
      throw new KeelError('KEEL_FORBIDDEN', 'this node has no API token configured: its write endpoints are disabled', {
        hint: 'set api.token in the node config and restart the agent',
      });
    }
    if (!tokenMatches(match[1]!, expected)) throw new KeelError('KEEL_FORBIDDEN', 'the bearer token is wrong');
  };
}
