/**
 * A client of the agents' REST API for tests: HTTPS verified against the
 * cluster CA (node:https; the global fetch takes no CA), or plain HTTP for an
 * http:// URL. One connection per request, bounded in time.
 */
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';

export interface ApiAnswer {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  /** the body parsed as JSON; null for HEAD, metrics and other text */
  json: any;
}

export interface ApiRequest {
  method?: string;
  headers?: Record<string, string>;
  body?: string;
  /** the CA file (PEM) the server's certificate must chain to; required for https */
  caFile?: string;
  /** the bearer token */
  token?: string;
  /** default: 10 s for a GET, 90 s for an action */
  timeoutMs?: number;
}

export function apiRequest(url: string, request: ApiRequest = {}): Promise<ApiAnswer> {
  const secure = url.startsWith('https:');
  if (secure && request.caFile === undefined) throw new Error(`${url}: give the cluster CA (caFile) to verify the API's certificate`);
  const headers: Record<string, string> = { ...(request.headers ?? {}) };
  if (request.token !== undefined) headers.authorization = `Bearer ${request.token}`;
  if (request.body !== undefined) headers['content-type'] ??= 'application/json';
  // an action's answer (a restart answers once PostgreSQL has stopped, its last WAL archived) may take far longer than a read
  const timeoutMs = request.timeoutMs ?? ((request.method ?? 'GET') === 'GET' ? 10_000 : 90_000);
  return new Promise((resolve, reject) => {
    const options = { method: request.method ?? 'GET', headers, agent: false as const, ...(secure ? { ca: readFileSync(request.caFile!) } : {}) };
    const req = (secure ? https : http).request(url, options, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('error', reject);
      res.on('end', () => {
        clearTimeout(timer);
        const text = Buffer.concat(chunks).toString('utf8');
        let json: unknown = null;
        try {
          json = JSON.parse(text);
        } catch {
          // HEAD, metrics
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
      });
    });
    const timer = setTimeout(() => req.destroy(new Error(`${request.method ?? 'GET'} ${url}: no answer within ${timeoutMs} ms`)), timeoutMs);
    req.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    req.end(request.body);
  });
}
