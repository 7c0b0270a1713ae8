/**
 * What every Keel process's /metrics shares: the process metrics, kept
 * clean for Prometheus' linter, and a small HTTP(S) listener for the
 * processes that have no API of their own (router, controller).
 */
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { collectDefaultMetrics, type Registry } from 'prom-client';

/**
 * prom-client names three gauges `*_total`, which `promtool check metrics`
 * refuses (only counters may end so); the same counts stay in
 * `nodejs_active_handles`, `nodejs_active_requests`, `nodejs_active_resources`.
 */
const lintRefused = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

/** prom-client's process and Node.js metrics, in `registry`. */
export function collectProcessMetrics(registry: Registry): void {
  collectDefaultMetrics({ register: registry });
  for (const name of lintRefused) registry.removeSingleMetric(name);
}

export interface MetricsListen {
  host: string;
  port: number;
  /** PEM files: HTTPS; without them plain HTTP */
  tls?: { cert: string; key: string };
}

export interface MetricsServer {
  /** host:port listened on */
  address: string;
  scheme: 'https' | 'http';
  /** Reads the certificate and key again for new connections; false without TLS. Throws when they cannot be used (the old pair stays). */
  reloadTls(): boolean;
  /** Lets the process end while it still listens (for a listener started beside a command's own work). */
  unref(): void;
  close(): Promise<void>;
}

/** Routes beside /metrics: a path and the JSON it answers with. */
export type JsonRoutes = Record<string, () => unknown | Promise<unknown>>;

function readPair(tls: { cert: string; key: string }): { cert: Buffer; key: Buffer } {
  return { cert: readFileSync(tls.cert), key: readFileSync(tls.key) };
}

/**
 * Serves GET /metrics from `registries` (their texts one after the other) and
 * GET of each JSON route; everything else is 404 and every other method 405.
 * Rejects when the port cannot be listened on (the error's code says why).
 */
export function serveMetrics(registries: Registry[], listen: MetricsListen, json: JsonRoutes = {}): Promise<MetricsServer> {
  const handler = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    const path = (req.url ?? '/').split('?')[0]!;
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('only GET\n');
      return;
    }
    const answer = async (): Promise<{ type: string; body: string }> => {
      if (path === '/metrics') {
        const texts = await Promise.all(registries.map((r) => r.metrics()));
        return { type: registries[0]?.contentType ?? 'text/plain', body: texts.join('') };
      }
      const route = json[path];
      if (route === undefined) return { type: '', body: '' };
      return { type: 'application/json', body: `${JSON.stringify(await route())}\n` };
    };
    answer().then(
      ({ type, body }) => {
        if (type === '') res.writeHead(404, { 'content-type': 'text/plain' }).end(`no ${path}: try /metrics\n`);
        else res.writeHead(200, { 'content-type': type, 'cache-control': 'no-store' }).end(req.method === 'HEAD' ? undefined : body);
      },
      () => res.writeHead(500, { 'content-type': 'text/plain' }).end('metrics could not be collected\n'),
    );
  };
  const server = listen.tls === undefined ? http.createServer(handler) : https.createServer({ ...readPair(listen.tls), minVersion: 'TLSv1.2' }, handler);
  // a scraper holds no connection open for long
  server.headersTimeout = 5000;
  server.requestTimeout = 10_000;
  server.keepAliveTimeout = 5000;
  server.maxConnections = 64;
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: listen.host, port: listen.port }, () => {
      server.removeListener('error', reject);
      resolve({
        address: `${listen.host}:${listen.port}`,
        scheme: listen.tls === undefined ? 'http' : 'https',
        reloadTls: () => {
          if (listen.tls === undefined) return false;
          (server as https.Server).setSecureContext({ ...readPair(listen.tls), minVersion: 'TLSv1.2' });
          return true;
        },
        unref: () => void server.unref(),
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done());
            server.closeAllConnections();
          }),
      });
    });
  });
}
