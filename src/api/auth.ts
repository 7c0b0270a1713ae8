/**
 * Bearer-token check, run in an onRequest hook: before fastify reads or
 * parses a body, so a client without the token cannot make the agent read
 * megabytes. Every request that may change something needs this node's token;
 * reads need it too with `api.readAuth` (then load balancers' health checks
 * must send it).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { KeelError } from '../errors.js';

const readMethods = new Set(['GET', 'HEAD', 'OPTIONS']);

export function isReadMethod(method: string): boolean {
  return readMethods.has(method);
}

/** Whether a request by `method` must carry the token. */
export function needsToken(method: string, readAuth: boolean): boolean {
  return readAuth || !isReadMethod(method);
}

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

/** The token of an `Authorization: Bearer <token>` header; null for none or another scheme. */
export function bearerToken(header: string | string[] | undefined): string | null {
  const match = typeof header === 'string' ? /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header) : null;
  return match === null ? null : match[1]!;
}

/** Throws KEEL_UNAUTHORIZED (401) without a bearer token and KEEL_FORBIDDEN (403) with a wrong one. */
export function checkToken(what: string, header: string | string[] | undefined, expected: string | undefined): void {
  const presented = bearerToken(header);
  if (presented === null) throw new KeelError('KEEL_UNAUTHORIZED', `${what} needs a bearer token`);
  // Fail closed: a node without a token refuses every request that needs one rather than accepting anyone's.
  if (expected === undefined) {
    throw new KeelError('KEEL_FORBIDDEN', 'this node has no API token configured: its endpoints that need one are disabled', {
      hint: 'set api.token in the node config and restart the agent',
    });
  }
  if (!tokenMatches(presented, expected)) throw new KeelError('KEEL_FORBIDDEN', 'the bearer token is wrong');
}

/** The onRequest hook: refuses a request that needs the token and lacks it, and closes its connection. */
export function tokenHook(expected: string | undefined, readAuth: boolean): (request: FastifyRequest, reply: FastifyReply) => Promise<void> {
  return async (request, reply) => {
    if (!needsToken(request.method, readAuth)) return;
    try {
      checkToken(`${request.method} ${request.url.split('?')[0]}`, request.headers.authorization, expected);
    } catch (err) {
      if (err instanceof KeelError && err.code === 'KEEL_UNAUTHORIZED') reply.header('www-authenticate', 'Bearer realm="keel"');
      // The body (if any) stays unread: after the answer the connection is closed instead of drained.
      reply.header('connection', 'close');
      throw err;
    }
  };
}
