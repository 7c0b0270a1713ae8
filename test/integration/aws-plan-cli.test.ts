/**
 * `keel aws plan` as a person runs it: the compiled CLI (`bin/keel.js`, built
 * by the global set-up or `npx tsc -p tsconfig.json`) on a keel-aws.yml. A dry
 * run: the child gets no AWS credentials and an EC2 endpoint nobody listens
 * on, so a call that escaped would fail, not reach AWS.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const root = join(import.meta.dirname, '../..');
const dir = mkdtempSync(join(tmpdir(), 'keel-aws-plan-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const env = { PATH: process.env.PATH ?? '', HOME: dir, AWS_EC2_METADATA_DISABLED: 'true', AWS_ENDPOINT_URL: 'http://127.0.0.1:9' };
const keel = (args: string[]) => spawnSync(process.execPath, [join(root, 'bin/keel.js'), ...args], { cwd: root, encoding: 'utf8', timeout: 30_000, env });

function file(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

const example = readFileSync(join(root, 'deploy/aws/keel-aws.yml'), 'utf8');

describe('keel aws plan', () => {
  it('prints the plan and the estimate of the example, exit 0', () => {
    const run = keel(['aws', 'plan', '--config', file('keel-aws.yml', example)]);
    expect(run.stderr).toBe('');
    expect(run.status).toBe(0);
    expect(run.stdout).toContain('a dry run, no AWS API was called');
    expect(run.stdout).toMatch(/instance\s+main-node3\s+eu-west-1c/);
    // 65: the router's pair joined the cluster's parameters
    expect(run.stdout).toContain('65 resources');
    expect(run.stdout).toMatch(/instance\s+main-node3\s+eu-west-1c\s+controller\s/);
    expect(run.stdout).toMatch(/instance\s+main-etcd3\s+eu-west-1c\s+up\s/);
    expect(run.stdout).toContain('Monthly cost ESTIMATE');
    expect(run.stdout).toContain('estimated total: $340.83 a month');
  });

  it('--json gives the same plan as data', () => {
    const run = keel(['aws', 'plan', '--config', file('keel-aws.yml', example), '--json']);
    expect(run.status).toBe(0);
    const plan = JSON.parse(run.stdout) as { resources: { kind: string; zone: string | null }[]; cost: { kind: string; totalMonthlyUsd: number } };
    expect(plan.resources.filter((r) => r.kind === 'instance').map((r) => r.zone)).toEqual(['eu-west-1a', 'eu-west-1b', 'eu-west-1c', 'eu-west-1a', 'eu-west-1b', 'eu-west-1c']);
    expect(plan.cost).toMatchObject({ kind: 'estimate', totalMonthlyUsd: 340.83 });
  });

  it('a bad file: KEEL_CONFIG_INVALID naming the field, exit 2, nothing on stdout', () => {
    const bad = example.replace('address: 10.0.3.10', 'address: 10.0.9.10').replace('nodes: 3 ', 'nodes: 0 ');
    const run = keel(['aws', 'plan', '--config', file('bad.yml', bad)]);
    expect(run.status).toBe(2);
    expect(run.stdout).toBe('');
    expect(run.stderr).toContain('KEEL_CONFIG_INVALID');
    expect(run.stderr).toContain('etcd.members.2.address');
    expect(run.stderr).toContain('nodes');
    expect(run.stderr).toContain('hint:');
  });

  it('a missing file or flag: exit 2', () => {
    expect(keel(['aws', 'plan', '--config', join(dir, 'absent.yml')])).toMatchObject({ status: 2, stderr: expect.stringContaining('KEEL_CONFIG_UNREADABLE') });
    expect(keel(['aws', 'plan'])).toMatchObject({ status: 2, stderr: expect.stringContaining('KEEL_USAGE') });
  });
});
