/**
 * The agent's REST API: Patroni-compatible health checks, the cluster's view,
 * the dynamic config, operator actions and Prometheus metrics.
 *
 * fastify's own logger stays off: load balancers call the health checks every
 * second, and its request logs would carry headers. Requests that change
 * something are logged through Keel's (redacting) logger instead, without
 * headers or bodies.
 *
 * With the node's certificate (node.yml `tls`) it serves HTTPS only; the
 * certificate is read again on SIGHUP without closing a connection. Every
 * connection is bounded in time and number (./limits.ts).
 */
import { readFileSync } from 'node:fs';
import type { Server as HttpsServer } from 'node:https';
import Fastify, { type FastifyError, type FastifyInstance } from 'fastify';
import { splitHostPort } from '../agent/member.js';
import type { TlsFiles } from '../config/schema.js';
import { describeError, isKeelError, KeelError, redactSecrets } from '../errors.js';
import { registerActions } from './actions.js';
import { isReadMethod, tokenHook } from './auth.js';
import { registerCluster } from './cluster.js';
import { registerConfig } from './config.js';
import type { AgentHandle, ApiOptions } from './handle.js';
import { registerHealth } from './health.js';
import { defaultApiLimits, timeoutCheckIntervalMs, type ApiLimits } from './limits.js';
import { registerMetrics } from './metrics.js';
import { defaultReadCacheMs, SharedRead } from './read-cache.js';
import { zodOnlySchemaController } from '../util/fastify-schemas.js';

export type { AgentHandle, ApiOptions } from './handle.js';

/** How the API is reached: HTTPS with a certificate and key (PEM), or plain HTTP; and its limits. */
export interface ApiTransport {
  tls?: { cert: string | Buffer; key: string | Buffer };
  limits?: ApiLimits;
}

/**
 * fastify's parser refuses `__proto__` and `constructor.prototype` keys but
 * calls such a body "not valid JSON". When the text is valid JSON, say what
 * was wrong: for the config, as the settings error it is.
 */
function prototypeKeyRefusal(url: string, text: string): KeelError | null {
  try {
    JSON.parse(text); // only to tell the two refusals apart; the value is dropped
  } catch {
    return null;
  }
  const message = 'the body holds a "__proto__" or "constructor.prototype" key, which no endpoint accepts; nothing was changed';
  return url.split('?')[0] === '/config'
    ? new KeelError('KEEL_CONFIG_INVALID', message, { hint: 'no setting has that name (GET /config lists the settings)' })
    : new KeelError('KEEL_USAGE', message);
}

export function buildApi(handle: AgentHandle, options: ApiOptions, transport: ApiTransport = {}): FastifyInstance {
  const limits = transport.limits ?? defaultApiLimits;
  // Node's own defaults let a slowloris hold a connection for a minute (headers) and look only every 30 s.
  const serverLimits = { headersTimeout: limits.headersTimeoutMs, connectionsCheckingInterval: timeoutCheckIntervalMs(limits) };
  const app = Fastify({
    schemaController: zodOnlySchemaController,
    logger: false,
    bodyLimit: 64 * 1024,
    forceCloseConnections: true,
    return503OnClosing: true,
    requestTimeout: limits.requestTimeoutMs,
    keepAliveTimeout: limits.idleTimeoutMs,
    connectionTimeout: limits.connectionTimeoutMs,
    ...(transport.tls === undefined
      ? { http: serverLimits }
      : { https: { ...transport.tls, ...serverLimits, handshakeTimeout: limits.headersTimeoutMs, minVersion: 'TLSv1.2' as const } }),
  }) as unknown as FastifyInstance; // one type for both transports: no route or hook depends on which
  app.server.maxConnections = limits.maxConnections;
  let droppedConnections = 0;
  let dropLoggedAtMs = Number.NEGATIVE_INFINITY;
  app.server.on('drop', () => {
    droppedConnections += 1;
    const now = options.clock.now();
    if (now - dropLoggedAtMs < 10_000) return;
    options.logger.warn({ maxConnections: limits.maxConnections }, `refused ${droppedConnections} connection(s): the REST API holds ${limits.maxConnections}`);
    droppedConnections = 0;
    dropLoggedAtMs = now;
  });
  // `curl -X POST -H 'content-type: application/json'` without a body is common: treat it as no body, not an error.
  const json = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser(['application/json', 'application/merge-patch+json'], { parseAs: 'string' }, (request, body, done) => {
    if (body.length === 0) return done(null, undefined);
    const text = body.toString();
    json(request, text, (err, value) => done(err === null ? null : (prototypeKeyRefusal(request.url, text) ?? err), value));
  });

  app.setErrorHandler((err: FastifyError | KeelError, request, reply) => {
    if (isKeelError(err)) return reply.code(err.httpStatus).send(err.toJSON());
    const status = typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 500;
    if (status < 500) {
      // fastify's own refusals: malformed JSON, wrong media type, body too large
      return reply.code(status).send({ code: 'KEEL_USAGE', message: redactSecrets(err.message), hint: 'see the API section of the docs for what each endpoint accepts' });
    }
    options.logger.error({ method: request.method, url: request.url, err: describeError(err) }, 'API request failed');
    // The text of an unexpected error is logged, never sent: it may quote a connection string.
    // KEEL_INTERNAL has no entry in errors.ts yet (the catalogue has no catch-all code).
    return reply.code(500).send({ code: 'KEEL_INTERNAL', message: 'the request failed unexpectedly', hint: 'look at the agent log' });
  });

  app.setNotFoundHandler((request, reply) => {
    reply.code(404).send({ code: 'KEEL_USAGE', message: `no endpoint ${request.method} ${request.url.split('?')[0]}`, hint: 'e.g. GET /cluster, GET /primary' });
  });

  // Before any body is read: see auth.ts.
  app.addHook('onRequest', tokenHook(options.token, options.readAuth ?? false));

  // Reads are not logged (health checks come every second, and their 503s are answers, not failures);
  // unexpected errors are logged by the error handler above.
  app.addHook('onResponse', async (request, reply) => {
    if (isReadMethod(request.method)) return;
    options.logger.info({ method: request.method, url: request.url, status: reply.statusCode, ms: Math.round(reply.elapsedTime) }, 'API request');
  });

  const clusterReads = new SharedRead(() => options.dcs.readCluster(), options.clock, options.readCacheMs ?? defaultReadCacheMs);
  registerHealth(app, handle, options);
  registerCluster(app, clusterReads, options);
  registerConfig(app, clusterReads, options);
  registerActions(app, handle, clusterReads, options);
  registerMetrics(app, handle, options);
  return app;
}

export interface RunningApi {
  app: FastifyInstance;
  /** host:port actually listened on */
  address: string;
  /** https or http */
  scheme: 'https' | 'http';
  /** Reads the certificate and key again and serves new connections with them; open ones keep theirs. Without TLS, false. */
  reloadTls(): boolean;
  close(): Promise<void>;
}

/** The node's certificate and key as the API serves them; KEEL_TLS_FAILED when one cannot be read. */
export function readApiTlsFiles(files: TlsFiles): { cert: Buffer; key: Buffer } {
  try {
    return { cert: readFileSync(files.cert), key: readFileSync(files.key) };
  } catch (err) {
    throw new KeelError('KEEL_TLS_FAILED', `the REST API cannot read its certificate or key (${files.cert}, ${files.key}): ${(err as Error).message}`, { cause: err });
  }
}

export interface ApiServerSettings {
  /** host:port */
  listen: string;
  /** the node's certificate and key: HTTPS; without them plain HTTP */
  tls?: TlsFiles;
  limits?: ApiLimits;
}

/** Builds the API and listens on `listen` (host:port). A port in use is KEEL_PORT_IN_USE (exit 2). */
export async function startApi(handle: AgentHandle, options: ApiOptions, settings: ApiServerSettings): Promise<RunningApi> {
  const { listen, tls } = settings;
  const app = buildApi(handle, options, { ...(tls === undefined ? {} : { tls: readApiTlsFiles(tls) }), ...(settings.limits ? { limits: settings.limits } : {}) });
  const { host, port } = splitHostPort(listen);
  try {
    await app.listen({ host, port });
  } catch (err) {
    await app.close().catch(() => undefined);
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE') {
      throw new KeelError('KEEL_PORT_IN_USE', `the REST API cannot listen on ${listen}: the port is in use`, {
        hint: 'stop what listens there (another agent of this node?) or change api.listen in the node config',
      });
    }
    if (code === 'EADDRNOTAVAIL' || code === 'EACCES') {
      throw new KeelError('KEEL_CONFIG_INVALID', `api.listen ${listen}: cannot listen there (${code})`, {
        hint: 'use an address of this host and a port above 1023, e.g. 127.0.0.1:8008',
      });
    }
    throw err;
  }
  const reloadTls = (): boolean => {
    if (tls === undefined) return false;
    const pair = readApiTlsFiles(tls);
    try {
      (app.server as unknown as HttpsServer).setSecureContext({ ...pair, minVersion: 'TLSv1.2' });
    } catch (err) {
      // the pair in use stays
      throw new KeelError('KEEL_TLS_FAILED', `the REST API's new certificate or key is unusable (${tls.cert}, ${tls.key}): ${(err as Error).message}`, { cause: err });
    }
    return true;
  };
  return { app, address: `${host}:${port}`, scheme: tls === undefined ? 'http' : 'https', reloadTls, close: () => app.close() };
}
