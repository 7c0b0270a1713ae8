/**
 * `keel dashboard`'s web server: the page and its files, the live feed as
 * server-sent events (GET /api/events: a `hello` with everything so far, then
 * `state`, `sample` and `event` messages as they happen), the state as JSON
 * (GET /api/state) and the actions (actions.ts). HTTPS with the cluster's
 * certificates; the operator's client certificate is asked for, never
 * required, and only signs in when the cluster CA issued it to the operator.
 */
import { readFileSync } from 'node:fs';
import type { Server as HttpsServer } from 'node:https';
import Fastify, { type FastifyError, type FastifyInstance } from 'fastify';
import { describeError, isKeelError, KeelError, redactSecrets } from '../errors.js';
import type { Dcs } from '../dcs/types.js';
import type { ProviderLimits } from '../controller/spec.js';
import type { Clock } from '../util/clock.js';
import type { Logger } from '../util/log.js';
import { registerActions } from './actions.js';
import { loadAssets } from './assets.js';
import { ClusterFeed, type FeedMessage, type FeedTiming } from './feed.js';
import type { BackupSource } from './model.js';
import { Sessions } from './session.js';
import { zodOnlySchemaController } from '../util/fastify-schemas.js';

export interface DashboardOptions {
  cluster: string;
  dcs: Dcs;
  /** the token that signs in and acts; undefined: only the operator's certificate does */
  token: string | undefined;
  /** the CN of the operator's client certificate (with `tls.clientCa`); null: certificates do not sign in */
  operatorCommonName: string | null;
  limits: ProviderLimits | null;
  router: { url: string; ca: Buffer | null } | null;
  /** the backups section's source; null until the cluster has backups to show */
  backups: BackupSource | null;
  clock: Clock;
  logger: Logger;
  timing?: Partial<FeedTiming>;
}

export interface DashboardTls {
  cert: Buffer;
  key: Buffer;
  /** CA whose client certificates the server asks for (the operator's); absent: none asked */
  clientCa?: Buffer;
}

const maxPages = 100;
/** A page that does not read its events (a stalled tab, a slow link) is cut; its EventSource connects again. */
const maxBufferedBytes = 1024 * 1024;
const heartbeatMs = 15_000;

const securityHeaders = {
  'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
  'cache-control': 'no-store',
};

export function buildDashboard(feed: ClusterFeed, options: DashboardOptions, tls: DashboardTls | null): FastifyInstance {
  const assets = loadAssets();
  const app = Fastify({
    schemaController: zodOnlySchemaController,
    logger: false,
    bodyLimit: 16 * 1024,
    forceCloseConnections: true,
    requestTimeout: 10_000,
    keepAliveTimeout: 5000,
    // event streams stay open; heartbeats keep them moving
    connectionTimeout: 0,
    ...(tls === null
      ? {}
      : { https: { cert: tls.cert, key: tls.key, minVersion: 'TLSv1.2' as const, ...(tls.clientCa === undefined ? {} : { ca: tls.clientCa, requestCert: true, rejectUnauthorized: false }) } }),
  }) as unknown as FastifyInstance;
  app.server.maxConnections = 256;
  app.addHook('onSend', async (_request, reply) => {
    reply.headers(securityHeaders);
  });
  app.setErrorHandler((err: FastifyError | KeelError, request, reply) => {
    if (isKeelError(err)) return reply.code(err.httpStatus).send(err.toJSON());
    const status = typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 500;
    if (status < 500) return reply.code(status).send({ code: 'KEEL_USAGE', message: redactSecrets(err.message), hint: 'the README lists what each dashboard endpoint accepts' });
    options.logger.error({ method: request.method, url: request.url, err: describeError(err) }, 'dashboard request failed');
    return reply.code(500).send({ code: 'KEEL_INTERNAL', message: 'the request failed unexpectedly', hint: 'look at the dashboard log' });
  });
  app.setNotFoundHandler((request, reply) => {
    reply.code(404).send({ code: 'KEEL_USAGE', message: `no ${request.method} ${request.url.split('?')[0]}`, hint: 'the page is at /' });
  });

  for (const [path, asset] of assets) {
    app.get(path, async (_request, reply) => reply.type(asset.type).send(asset.body));
  }
  // browsers ask for it on their own; the page has none
  app.get('/favicon.ico', async (_request, reply) => reply.code(204).send());
  app.get('/api/state', async () => {
    const state = feed.snapshot().state;
    if (state === null) throw new KeelError('KEEL_ETCD_UNREACHABLE', 'the dashboard has not read the cluster yet');
    return state;
  });

  let pages = 0;
  app.get('/api/events', (request, reply) => {
    if (pages >= maxPages) throw new KeelError('KEEL_CONFLICT', `the dashboard serves ${maxPages} pages at most`, { hint: 'close other dashboard tabs' });
    pages += 1;
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, { ...securityHeaders, 'content-type': 'text/event-stream; charset=utf-8', connection: 'keep-alive' });
    const send = (type: string, data: unknown): void => {
      if (res.destroyed) return;
      if (res.writableLength > maxBufferedBytes) {
        res.destroy();
        return;
      }
      res.write(`event: ${type}\ndata: ${JSON.stringify(data)}\n\n`);
    };
    res.write('retry: 1000\n\n');
    send('hello', feed.snapshot());
    const unsubscribe = feed.subscribe((message: FeedMessage) => {
      if (message.type === 'state') send('state', message.state);
      else if (message.type === 'sample') send('sample', { sample: message.sample, mark: message.mark });
      else send('event', message.event);
    });
    const heartbeat = setInterval(() => res.destroyed || res.write(': still here\n\n'), heartbeatMs);
    res.once('close', () => {
      pages -= 1;
      clearInterval(heartbeat);
      unsubscribe();
    });
  });

  registerActions(app, {
    dcs: options.dcs,
    sessions: new Sessions(options.clock, options.token),
    operatorCommonName: tls?.clientCa === undefined ? null : options.operatorCommonName,
    limits: options.limits,
    clock: options.clock,
    logger: options.logger,
  });
  return app;
}

export interface DashboardTlsFiles {
  cert: string;
  key: string;
  clientCa: string | null;
}

export function readDashboardTls(files: DashboardTlsFiles): DashboardTls {
  try {
    return { cert: readFileSync(files.cert), key: readFileSync(files.key), ...(files.clientCa === null ? {} : { clientCa: readFileSync(files.clientCa) }) };
  } catch (err) {
    throw new KeelError('KEEL_TLS_FAILED', `the dashboard cannot read its certificate, key or client CA: ${(err as Error).message}`);
  }
}

export interface RunningDashboard {
  url: string;
  feed: ClusterFeed;
  app: FastifyInstance;
  /** Reads the pair (and client CA) again for new connections; open ones keep theirs. */
  reloadTls(): void;
  close(): Promise<void>;
}

/** Reads the cluster, then listens; a port in use is KEEL_PORT_IN_USE (and nothing keeps running). */
export async function startDashboard(options: DashboardOptions, listen: { host: string; port: number }, files: DashboardTlsFiles): Promise<RunningDashboard> {
  const tls = readDashboardTls(files);
  const feed = new ClusterFeed({ dcs: options.dcs, cluster: options.cluster, clock: options.clock, logger: options.logger, router: options.router, backups: options.backups, ...(options.timing ? { timing: options.timing } : {}) });
  const app = buildDashboard(feed, options, tls);
  await feed.start();
  try {
    await app.listen({ host: listen.host, port: listen.port });
  } catch (err) {
    await app.close().catch(() => undefined);
    await feed.stop();
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE') throw new KeelError('KEEL_PORT_IN_USE', `the dashboard cannot listen on ${listen.host}:${listen.port}: the port is in use`, { hint: 'stop what listens there, or give --listen another host:port' });
    throw new KeelError('KEEL_CONFIG_INVALID', `the dashboard cannot listen on ${listen.host}:${listen.port}: ${(err as Error).message}`, { hint: 'give --listen an address of this host' });
  }
  const host = listen.host.includes(':') ? `[${listen.host}]` : listen.host;
  return {
    url: `https://${host}:${listen.port}/`,
    feed,
    app,
    reloadTls: () => {
      const next = readDashboardTls(files);
      (app.server as unknown as HttpsServer).setSecureContext({ cert: next.cert, key: next.key, minVersion: 'TLSv1.2', ...(next.clientCa === undefined ? {} : { ca: next.clientCa }) });
    },
    close: async () => {
      await app.close();
      await feed.stop();
    },
  };
}
