/**
 * `keel aws up` and `keel aws down` as a person runs them: the compiled CLI
 * (`bin/keel.js`, built by the global set-up or `npx tsc -p tsconfig.json`).
 * Every AWS endpoint of the child is a loopback port this test listens on and
 * counts connections to (fake credentials, no instance metadata), so "nothing
 * was sent" is measured, not assumed; a call that does go out gets its
 * connection closed, never an answer from AWS.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';

const root = join(import.meta.dirname, '../..');
const dir = mkdtempSync(join(tmpdir(), 'keel-aws-up-cli-'));
const example = readFileSync(join(root, 'deploy/aws/keel-aws.yml'), 'utf8');

let server: Server;
let port = 0;
let connections = 0;
const sockets = new Set<Socket>();

beforeAll(async () => {
  server = createServer((socket) => {
    connections += 1;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.destroy();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as { port: number }).port;
});

afterAll(async () => {
  for (const s of sockets) s.destroy();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  rmSync(dir, { recursive: true, force: true });
});

beforeEach(() => {
  connections = 0;
});

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** The CLI without a terminal (stdin is a pipe, closed at once), its AWS calls pointed at the counting port. */
function keel(args: string[]): Promise<Run> {
  const env = {
    PATH: process.env.PATH ?? '',
    HOME: dir,
    AWS_ENDPOINT_URL: `http://127.0.0.1:${port}`,
    AWS_ACCESS_KEY_ID: 'AKIAFAKEFORTESTS0000',
    AWS_SECRET_ACCESS_KEY: 'fake-secret-for-tests',
    AWS_EC2_METADATA_DISABLED: 'true',
  };
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(root, 'bin/keel.js'), ...args], { cwd: root, env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.stdin.end();
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('error', reject);
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}

function file(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

const config = () => file('keel-aws.yml', example);
const keelSource = ['--keel', '/opt/keel', '--nodejs', 'present'];

describe('keel aws up / down on the command line', () => {
  it('a bad keel-aws.yml: KEEL_CONFIG_INVALID, exit 2, nothing sent', async () => {
    const bad = file('bad.yml', example.replace('address: 10.0.3.10', 'address: 10.0.9.10'));
    for (const args of [['aws', 'up', '--config', bad, ...keelSource, '--yes'], ['aws', 'down', '--config', bad, '--yes']]) {
      const run = await keel(args);
      expect(run.status, args[1]).toBe(2);
      expect(run.stderr).toContain('KEEL_CONFIG_INVALID');
      expect(run.stderr).toContain('etcd.members.2.address');
      expect(run.stdout).toBe('');
    }
    expect(connections).toBe(0);
  });

  it('a Keel source the instances cannot use: KEEL_USAGE, exit 2, nothing sent', async () => {
    for (const keelArgs of [['--keel', 'http://example.com/keel.tgz'], ['--keel', 'https://example.com/keel.tgz'], ['--keel', 'opt/keel']]) {
      const run = await keel(['aws', 'up', '--config', config(), ...keelArgs, '--yes']);
      expect(run.status, keelArgs.join(' ')).toBe(2);
      expect(run.stderr).toContain('KEEL_USAGE');
      expect(run.stderr).toContain('--keel');
    }
    expect(connections).toBe(0);
  });

  it('without --yes and without a terminal: says what it would do, refuses with KEEL_USAGE (exit 2), sends nothing', async () => {
    const up = await keel(['aws', 'up', '--config', config(), ...keelSource]);
    expect(up.status).toBe(2);
    expect(up.stderr).toContain('KEEL_USAGE');
    expect(up.stderr).toContain('--yes');
    expect(up.stdout).toMatch(/instance\s+main-etcd1\s+eu-west-1a/);
    expect(up.stdout).toContain('launches the 3 database nodes');
    const down = await keel(['aws', 'down', '--config', config()]);
    expect(down.status).toBe(2);
    expect(down.stderr).toContain('KEEL_USAGE');
    expect(down.stdout).toContain('1. terminate the etcd members');
    expect(down.stdout).toContain('keep the SSM parameters under /keel/main');
    expect(connections).toBe(0);
  });

  it('with --yes it goes to AWS: an endpoint that hangs up is KEEL_AWS_FAILED naming the first action, exit 1', async () => {
    const run = await keel(['aws', 'up', '--config', config(), ...keelSource, '--yes']);
    expect(run.status).toBe(1);
    expect(run.stdout).toContain('keel aws up: cluster main in eu-west-1');
    expect(run.stderr).toContain('KEEL_AWS_FAILED');
    expect(run.stderr).toContain('ec2:DescribeSecurityGroups');
    expect(run.stderr).not.toContain('fake-secret-for-tests');
    // the SDK's standard retries: the port was reached, more than once
    expect(connections).toBeGreaterThan(1);
  });
});
