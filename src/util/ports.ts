import { createServer } from 'node:net';

/**
 * True when nothing listens on host:port, found by listening there briefly.
 * Checking by connecting would miss a port bound but not yet listening, and a
 * port taken on another address of the same host.
 */
export function isPortFree(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen({ host, port, exclusive: true }, () => {
      server.close(() => resolve(true));
    });
  });
}

/**
 * The first `count` consecutive free ports at or above `start` (e.g. an etcd
 * client and peer port). Another process may take them before they are used:
 * callers still handle a bind failure.
 */
export async function findFreePorts(host: string, start: number, count = 1, maxTries = 200): Promise<number[]> {
  for (let base = start; base < start + maxTries && base + count - 1 <= 65535; base++) {
    const ports = Array.from({ length: count }, (_, i) => base + i);
    let allFree = true;
    for (const port of ports) {
      if (!(await isPortFree(host, port))) {
        allFree = false;
        break;
      }
    }
    if (allFree) return ports;
  }
  throw new Error(`no ${count} consecutive free ports on ${host} from ${start} within ${maxTries} tries`);
}
