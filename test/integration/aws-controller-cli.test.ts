/**
 * `keel controller --aws-config keel-aws.yml --aws-launch aws-launch.json` as
 * a person (or the etcd members' unit) runs it, on bad input: each mistake is
 * a KEEL_* error with a hint and exit 2 before anything starts. The child gets
 * fake credentials and endpoints nobody listens on, so a call that escaped
 * would fail, not reach AWS, and show in the output.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const root = join(import.meta.dirname, '../..');
const dir = mkdtempSync(join(tmpdir(), 'keel-aws-controller-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const env = {
  PATH: process.env.PATH ?? '',
  HOME: dir,
  AWS_EC2_METADATA_DISABLED: 'true',
  AWS_ENDPOINT_URL: 'http://127.0.0.1:9',
  AWS_ACCESS_KEY_ID: 'AKIAKEELCLITEST00001',
  AWS_SECRET_ACCESS_KEY: 'not-a-real-secret',
};
const keel = (args: string[]) => spawnSync(process.execPath, [join(root, 'bin/keel.js'), 'controller', ...args], { cwd: root, encoding: 'utf8', timeout: 30_000, env });

function file(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

const example = readFileSync(join(root, 'deploy/aws/keel-aws.yml'), 'utf8');
const launch = { securityGroupIds: ['sg-0123456789abcdef0'], keel: { kind: 'path', path: '/opt/keel' } };
const etcd = ['--etcd', 'https://127.0.0.1:9'];

function refused(run: ReturnType<typeof keel>, code: string): void {
  expect(run.status).toBe(2);
  expect(run.stderr).toContain(code);
  expect(run.stderr).toContain('hint:');
  // it stopped before starting: no controller, no AWS or etcd call
  expect(`${run.stdout}${run.stderr}`).not.toMatch(/controller started|ECONNREFUSED|127\.0\.0\.1:9/);
}

describe('keel controller --aws-config', () => {
  it('wants --aws-launch with it', () => {
    refused(keel(['--aws-config', file('keel-aws.yml', example), ...etcd]), 'KEEL_USAGE');
  });

  it('refuses a keel-aws.yml with a bad field, naming it', () => {
    const run = keel(['--aws-config', file('bad.yml', example.replace('nodes: 3 ', 'nodes: 0 ')), '--aws-launch', file('launch.json', JSON.stringify(launch)), ...etcd]);
    refused(run, 'KEEL_CONFIG_INVALID');
    expect(run.stderr).toContain('nodes');
  });

  it('refuses an aws-launch.json holding a key it does not know, without printing its value', () => {
    const run = keel(['--aws-config', file('keel-aws.yml', example), '--aws-launch', file('secret.json', JSON.stringify({ ...launch, password: 'hunter2-do-not-print' })), ...etcd]);
    refused(run, 'KEEL_CONFIG_INVALID');
    expect(run.stderr).toContain('password');
    expect(run.stderr).not.toContain('hunter2-do-not-print');
  });

  it('refuses a missing file, and --cluster or --dir that contradict the file', () => {
    refused(keel(['--aws-config', join(dir, 'missing.yml'), '--aws-launch', file('launch.json', JSON.stringify(launch)), ...etcd]), 'KEEL_CONFIG_UNREADABLE');
    const both = ['--aws-config', file('keel-aws.yml', example), '--aws-launch', file('launch.json', JSON.stringify(launch))];
    const other = keel([...both, ...etcd, '--cluster', 'other']);
    refused(other, 'KEEL_CONFIG_INVALID');
    expect(other.stderr).toContain('main');
    refused(keel([...both, '--dir', dir]), 'KEEL_USAGE');
  });
});
