/**
 * Reads a router's GET /status (routes and connections) for the dashboard:
 * HTTPS verified against the cluster CA, one connection per read, bounded in
 * time and size. The router keeps nothing in etcd, so this is the only way to
 * see its connections.
 */
import http from 'node:http';
import https from 'node:https';
import type { RouterStatus } from '../router/metrics.js';

const maxAnswerBytes = 1024 * 1024;

export function readRouterStatus(url: string, ca: Buffer | null, timeoutMs = 1500): Promise<RouterStatus> {
  const target = new URL('/status', url);
  const secure = target.protocol === 'https:';
  return new Promise((resolve, reject) => {
    const request = (secure ? https : http).get(target, { agent: false, timeout: timeoutMs, ...(secure && ca !== null ? { ca } : {}) }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > maxAnswerBytes) request.destroy(new Error('the answer is too large'));
        else chunks.push(chunk);
      });
      res.on('error', reject);
      res.on('end', () => {
        clearTimeout(timer);
        if (res.statusCode !== 200) return reject(new Error(`GET /status answered ${res.statusCode}`));
        try {
          resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')) as RouterStatus);
        } catch {
          reject(new Error('GET /status answered something other than JSON'));
        }
      });
    });
    const timer = setTimeout(() => request.destroy(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
    request.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}
