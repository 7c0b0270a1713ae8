import net from 'node:net';

/** PostgreSQL's SSLRequest: every server answers it with one byte, S or N, before any authentication. */
const sslRequest = Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);

/**
 * Whether a PostgreSQL server answers at host:port, found without credentials:
 * an SSLRequest answered with S or N. Through a router this also proves the
 * endpoint forwards (while it has no backend, it holds and the probe times out).
 */
export function probePostgres(host: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const done = (ok: boolean): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    socket.once('connect', () => socket.write(sslRequest));
    socket.once('data', (chunk: Buffer) => done(chunk[0] === 0x4e || chunk[0] === 0x53));
    socket.once('error', () => done(false));
    socket.once('close', () => done(false));
  });
}
