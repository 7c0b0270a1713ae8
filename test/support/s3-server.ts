/**
 * An S3-compatible server for tests (npm's s3rver), over TLS with a test CA
 * of its own, on 127.0.0.1, in a process of its own (a test that waits for a
 * `keel` command blocks its own event loop). pgBackRest speaks to S3 over TLS
 * only, and checks the server's name against its certificate's DNS names or,
 * without any, its common name (not IP addresses): the certificate names
 * 127.0.0.1 as its CN.
 */
import { execFileSync, spawn } from 'node:child_process';
import { chmodSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { isPortFree } from '../../src/util/ports.js';
import { terminate } from '../../src/util/process.js';

/** s3rver with the options in KEEL_TEST_S3 (JSON); files named there are read by it. */
const serverMain = `
const fs = require('node:fs');
const S3rver = require('s3rver');
const o = JSON.parse(process.env.KEEL_TEST_S3);
new S3rver({ address: '127.0.0.1', port: o.port, silent: true, directory: o.dataDir, key: fs.readFileSync(o.key), cert: fs.readFileSync(o.cert),
  vhostBuckets: false, configureBuckets: [{ name: o.bucket }] }).run().then(() => process.stdout.write('listening\\n'));
`;

export interface TestS3 {
  endpoint: string;
  bucket: string;
  region: string;
  /** the CA that signed the server's certificate (0644: PostgreSQL's OS user reads it) */
  caFile: string;
  /** s3rver's own credentials */
  key: string;
  keySecret: string;
  /** where the objects are kept on disk */
  dataDir: string;
  stop(): Promise<void>;
}

function openssl(args: string[]): void {
  execFileSync('/usr/bin/openssl', args, { stdio: 'ignore' });
}

export async function startTestS3(dir: string, port: number, bucket = 'keel-backups'): Promise<TestS3> {
  if (!(await isPortFree('127.0.0.1', port))) throw new Error(`127.0.0.1:${port} is taken: an S3 server of an earlier run?`);
  mkdirSync(dir, { recursive: true });
  chmodSync(dir, 0o755);
  const file = (name: string) => join(dir, name);
  openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', file('ca.key')]);
  openssl(['req', '-x509', '-new', '-key', file('ca.key'), '-subj', '/CN=keel test S3 CA', '-days', '2', '-out', file('ca.crt')]);
  openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', file('server.key')]);
  openssl(['req', '-new', '-key', file('server.key'), '-subj', '/CN=127.0.0.1', '-out', file('server.csr')]);
  openssl(['x509', '-req', '-in', file('server.csr'), '-CA', file('ca.crt'), '-CAkey', file('ca.key'), '-CAcreateserial', '-days', '2', '-out', file('server.crt')]);
  chmodSync(file('ca.crt'), 0o644);
  const dataDir = file('objects');
  mkdirSync(dataDir, { recursive: true });
  const options = { port, dataDir, key: file('server.key'), cert: file('server.crt'), bucket };
  const child = spawn(process.execPath, ['-e', serverMain], { cwd: process.cwd(), env: { ...process.env, KEEL_TEST_S3: JSON.stringify(options) }, stdio: ['ignore', 'pipe', 'inherit'] });
  const pid = child.pid!;
  const listening = await new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), 15_000);
    child.stdout.on('data', (chunk: Buffer) => chunk.toString().includes('listening') && (clearTimeout(timer), resolve(true)));
    child.once('exit', () => (clearTimeout(timer), resolve(false)));
  });
  if (!listening || (await isPortFree('127.0.0.1', port))) {
    await terminate(pid, 2000);
    throw new Error(`s3rver did not listen on 127.0.0.1:${port}`);
  }
  return { endpoint: `127.0.0.1:${port}`, bucket, region: 'us-east-1', caFile: file('ca.crt'), key: 'S3RVER', keySecret: 'S3RVER', dataDir, stop: () => terminate(pid, 5000) };
}
