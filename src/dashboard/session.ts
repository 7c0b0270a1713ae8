/**
 * Who may act through the dashboard, and how a browser is kept from being
 * made to act by another site (CSRF).
 *
 * - A script sends `Authorization: Bearer <token>` with each action. A
 *   browser never adds that header by itself, so no other site can make it
 *   send one: no further check is needed.
 * - A person signs in once (POST /api/session) with the token or with the
 *   operator's client certificate, and gets a session cookie (HttpOnly,
 *   Secure, SameSite=Strict) and a CSRF token that the page keeps in memory
 *   and sends as `X-Keel-CSRF` with each action. The certificate is sent by
 *   the browser on every request to the host, the cookie on every same-site
 *   one: neither alone is enough to act. Another site cannot read the CSRF
 *   token (no CORS), and the custom header forces a preflight the server
 *   never answers.
 * - Every request that changes something must come from the dashboard's own
 *   origin when the browser says where it comes from (Origin,
 *   Sec-Fetch-Site); a request that names another origin is refused, signed
 *   in or not.
 */
import { randomBytes, createHmac } from 'node:crypto';
import { bearerToken, tokenMatches } from '../api/auth.js';
import { KeelError } from '../errors.js';
import type { Clock } from '../util/clock.js';

export const sessionCookie = 'keel_session';
export const csrfHeader = 'x-keel-csrf';
export const sessionTtlMs = 12 * 3600 * 1000;
const maxSessions = 1000;

export type SignedInWith = 'token' | 'certificate';

interface Session {
  csrf: string;
  via: SignedInWith;
  expiresAtMs: number;
}

/** How the request that acts was allowed: by its own token, or by a session. */
export type Actor = { via: SignedInWith; session: boolean };

/** The dashboard's token for actions, derived from the cluster's key (as each node's API token is). */
export function dashboardTokenFromKey(key: string): string {
  return createHmac('sha256', key).update('keel dashboard token').digest('base64url');
}

export function parseCookies(header: string | undefined): Record<string, string> {
  const cookies: Record<string, string> = {};
  for (const part of (header ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0) cookies[part.slice(0, eq).trim()] = part.slice(eq + 1).trim();
  }
  return cookies;
}

/** What a browser says of where a request comes from, and the host it was sent to. */
export interface RequestOrigin {
  origin: string | undefined;
  fetchSite: string | undefined;
  host: string | undefined;
}

/** Throws KEEL_FORBIDDEN when the browser says the request comes from another site or origin. */
export function checkSameOrigin(from: RequestOrigin): void {
  if (from.fetchSite !== undefined && from.fetchSite !== 'same-origin' && from.fetchSite !== 'none') {
    throw new KeelError('KEEL_FORBIDDEN', `refused: the request comes from another site (Sec-Fetch-Site: ${from.fetchSite})`, { hint: 'act from the dashboard page itself, or send the token from a script' });
  }
  if (from.origin === undefined) return;
  if (from.host === undefined || (from.origin !== `https://${from.host}` && from.origin !== `http://${from.host}`)) {
    throw new KeelError('KEEL_FORBIDDEN', `refused: the request comes from ${from.origin}, not from this dashboard`, { hint: 'act from the dashboard page itself, or send the token from a script' });
  }
}

export class Sessions {
  private readonly sessions = new Map<string, Session>();

  constructor(
    private readonly clock: Clock,
    /** the token that signs in and acts; undefined: only the operator's certificate signs in */
    private readonly token: string | undefined,
  ) {}

  get tokenConfigured(): boolean {
    return this.token !== undefined;
  }

  /** true for a token that matches, false for none; KEEL_FORBIDDEN for a wrong one (or when no token is configured). */
  bearer(authorization: string | string[] | undefined): boolean {
    const presented = bearerToken(authorization);
    if (presented === null) return false;
    if (this.token === undefined) throw new KeelError('KEEL_FORBIDDEN', 'this dashboard has no token configured', { hint: "sign in with the operator's certificate, or start the dashboard with --token-file" });
    if (!tokenMatches(presented, this.token)) throw new KeelError('KEEL_FORBIDDEN', 'the token is wrong', { hint: 'use the token in DIR/dashboard-token (or the --token-file the dashboard was started with)' });
    return true;
  }

  /** A new session; its id goes in the cookie, its CSRF token to the page. */
  create(via: SignedInWith): { id: string; csrf: string; maxAgeSeconds: number } {
    this.expire();
    if (this.sessions.size >= maxSessions) this.sessions.delete(this.sessions.keys().next().value!);
    const id = randomBytes(32).toString('base64url');
    const csrf = randomBytes(32).toString('base64url');
    this.sessions.set(id, { csrf, via, expiresAtMs: this.clock.now() + sessionTtlMs });
    return { id, csrf, maxAgeSeconds: sessionTtlMs / 1000 };
  }

  /** The session of a cookie header, or null (none, unknown, expired). */
  find(cookieHeader: string | undefined): { id: string; csrf: string; via: SignedInWith } | null {
    const id = parseCookies(cookieHeader)[sessionCookie];
    if (id === undefined) return null;
    const session = this.sessions.get(id);
    if (session === undefined) return null;
    if (session.expiresAtMs <= this.clock.now()) {
      this.sessions.delete(id);
      return null;
    }
    return { id, csrf: session.csrf, via: session.via };
  }

  end(cookieHeader: string | undefined): void {
    const found = this.find(cookieHeader);
    if (found !== null) this.sessions.delete(found.id);
  }

  /**
   * Who acts: the bearer token, else a session whose CSRF token came along.
   * KEEL_UNAUTHORIZED without either; KEEL_FORBIDDEN for a wrong token or a
   * session without its CSRF token.
   */
  authorize(headers: { authorization?: string | string[]; cookie?: string; csrf?: string | string[] }): Actor {
    if (this.bearer(headers.authorization)) return { via: 'token', session: false };
    const session = this.find(headers.cookie);
    if (session === null) {
      throw new KeelError('KEEL_UNAUTHORIZED', 'sign in first: actions need the token or the operator\'s certificate', { hint: 'sign in on the page, or send Authorization: Bearer <token>' });
    }
    const presented = typeof headers.csrf === 'string' ? headers.csrf : '';
    if (presented === '' || !tokenMatches(presented, session.csrf)) {
      throw new KeelError('KEEL_FORBIDDEN', 'refused: the request lacks the CSRF token of its session', { hint: 'act from the dashboard page itself (it sends X-Keel-CSRF)' });
    }
    return { via: session.via, session: true };
  }

  private expire(): void {
    const now = this.clock.now();
    for (const [id, session] of this.sessions) if (session.expiresAtMs <= now) this.sessions.delete(id);
  }
}
