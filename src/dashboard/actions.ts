/**
 * What the dashboard may do: sign in and out, ask for a switchover, change
 * the declared number of nodes, change dynamic settings. Each action goes
 * through the same checks as the CLI's (requestLeaderChange, applySettings,
 * applyConfigPatch, compare-and-swap writes), and each one that did something
 * adds an event saying what and by whom, which the page then shows in its
 * event stream like any other.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { TLSSocket } from 'node:tls';
import { z } from 'zod';
import { applyConfigPatch, patchFromAssignments } from '../config/patch.js';
import { defaultDynamicConfig } from '../config/schema.js';
import { applySettings, type ProviderLimits } from '../controller/spec.js';
import { requestLeaderChange } from '../dcs/requests.js';
import type { Dcs } from '../dcs/types.js';
import { KeelError } from '../errors.js';
import { nameSchema } from '../model/names.js';
import type { Clock } from '../util/clock.js';
import type { Logger } from '../util/log.js';
import { checkSameOrigin, csrfHeader, sessionCookie, type Actor, type Sessions, type SignedInWith } from './session.js';

export interface ActionOptions {
  dcs: Dcs;
  sessions: Sessions;
  /** the CN of the operator's client certificate; null: certificates do not sign in */
  operatorCommonName: string | null;
  /** what the provider holds, for scale requests; null when unknown */
  limits: ProviderLimits | null;
  clock: Clock;
  logger: Logger;
}

const switchoverBody = z.object({ candidate: nameSchema.nullable().optional(), leader: nameSchema.optional() }).strict();
const scaleBody = z.object({ replicas: z.number().int().min(0).max(100) }).strict();
const configBody = z.object({ set: z.array(z.string().max(300)).min(1).max(20) }).strict();
const casAttempts = 5;

function parseBody<T>(schema: z.ZodType<T>, body: unknown, example: string): T {
  const checked = schema.safeParse(body ?? {});
  if (checked.success) return checked.data;
  const why = checked.error.issues.map((i) => `${i.path.length > 0 ? i.path.join('.') : '(body)'}: ${i.message}`).join('; ');
  throw new KeelError('KEEL_USAGE', `invalid request body: ${why}`, { hint: `send JSON such as ${example}` });
}

const how = (via: SignedInWith): string => (via === 'token' ? 'with the token' : "with the operator's certificate");

/** The CN of a client certificate the TLS handshake verified against the cluster CA; null for none. */
function verifiedCommonName(request: FastifyRequest): string | null {
  const socket = request.raw.socket as Partial<TLSSocket>;
  if (socket.authorized !== true || typeof socket.getPeerCertificate !== 'function') return null;
  const subject = socket.getPeerCertificate().subject as { CN?: string | string[] } | undefined;
  const cn = subject?.CN;
  return typeof cn === 'string' ? cn : null;
}

export function registerActions(app: FastifyInstance, o: ActionOptions): void {
  // every request that may change something: from this dashboard's own origin only
  app.addHook('onRequest', async (request) => {
    if (request.method === 'GET' || request.method === 'HEAD') return;
    const header = (name: string) => (typeof request.headers[name] === 'string' ? (request.headers[name] as string) : undefined);
    checkSameOrigin({ origin: header('origin'), fetchSite: header('sec-fetch-site'), host: header('host') });
  });

  const actor = (request: FastifyRequest): Actor =>
    o.sessions.authorize({ authorization: request.headers.authorization, cookie: request.headers.cookie, csrf: request.headers[csrfHeader] });

  const record = async (kind: string, message: string): Promise<void> => {
    o.logger.info({ kind }, message);
    await o.dcs.addEvent({ atMs: o.clock.now(), source: 'dashboard', kind, message });
  };

  app.get('/api/session', async (request) => {
    const session = o.sessions.find(request.headers.cookie);
    return {
      signedIn: session !== null,
      via: session?.via ?? null,
      csrf: session?.csrf ?? null,
      token: o.sessions.tokenConfigured,
      certificate: o.operatorCommonName !== null,
    };
  });

  app.post('/api/session', async (request, reply: FastifyReply) => {
    let via: SignedInWith;
    if (o.sessions.bearer(request.headers.authorization)) via = 'token';
    else if (o.operatorCommonName !== null && verifiedCommonName(request) === o.operatorCommonName) via = 'certificate';
    else throw new KeelError('KEEL_UNAUTHORIZED', "signing in needs the token or the operator's certificate", { hint: 'paste the token from DIR/dashboard-token' });
    const session = o.sessions.create(via);
    reply.header('set-cookie', `${sessionCookie}=${session.id}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=${session.maxAgeSeconds}`);
    o.logger.info({ via }, 'signed in on the dashboard');
    return { signedIn: true, via, csrf: session.csrf };
  });

  app.delete('/api/session', async (request, reply) => {
    o.sessions.end(request.headers.cookie);
    reply.header('set-cookie', `${sessionCookie}=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0`);
    return { signedIn: false };
  });

  app.post('/api/switchover', async (request, reply) => {
    const who = actor(request);
    const body = parseBody(switchoverBody, request.body, '{"candidate": "node2"}');
    const to = body.candidate ?? null;
    const value = await requestLeaderChange(o.dcs, { failover: false, to, ...(body.leader === undefined ? {} : { expectLeader: body.leader }) }, o.clock.now());
    await record('switchover', `switchover requested on the dashboard (signed in ${how(who.via)}): ${value.from} -> ${value.to ?? 'the healthiest replica'}`);
    return reply.code(202).send({ message: `switchover requested: ${value.from} -> ${value.to ?? 'the healthiest replica'}`, from: value.from, to: value.to });
  });

  app.post('/api/scale', async (request, reply) => {
    const who = actor(request);
    const { replicas } = parseBody(scaleBody, request.body, '{"replicas": 2}');
    for (let attempt = 0; attempt < casAttempts; attempt++) {
      const stored = await o.dcs.readSpec();
      if (stored === null) throw new KeelError('KEEL_CONFLICT', 'the cluster has no spec yet: the controller writes the first one when it starts', { hint: 'start a controller (keel up runs one)' });
      const next = applySettings(stored.value, [`replicas=${replicas}`], o.limits);
      if (!(await o.dcs.putSpec(next, stored.modRevision))) continue;
      await record('scale', `scale requested on the dashboard (signed in ${how(who.via)}): ${stored.value.nodes} -> ${next.nodes} nodes (a leader and ${replicas} replica(s))`);
      return reply.code(202).send({ message: `declared ${next.nodes} nodes: the controller creates or removes nodes to match`, nodes: next.nodes });
    }
    throw new KeelError('KEEL_CONFLICT', `the spec changed under ${casAttempts} attempts to write it`);
  });

  app.post('/api/config', async (request) => {
    const who = actor(request);
    const { set } = parseBody(configBody, request.body, '{"set": ["ttl=20"]}');
    const patch = patchFromAssignments(set);
    const stored = (await o.dcs.readCluster()).config;
    const next = applyConfigPatch(stored?.value ?? defaultDynamicConfig, patch);
    if (!(await o.dcs.putConfig(next, stored?.modRevision ?? null))) throw new KeelError('KEEL_CONFLICT', 'the config changed while this change was applied');
    // names only: parameter values are the operator's business, not the event stream's
    const names = set.map((word) => word.slice(0, word.indexOf('=')));
    await record('config', `config changed on the dashboard (signed in ${how(who.via)}): ${names.join(', ')}`);
    return { message: `changed ${names.join(', ')}`, config: next };
  });
}
