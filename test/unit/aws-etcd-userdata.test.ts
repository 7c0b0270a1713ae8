/**
 * The user data of an etcd member on AWS (src/providers/aws-etcd-userdata.ts): valid bash, clean for
 * shellcheck, no secret in it, the SSM names aws-plan.ts gives etcd, bad options refused with
 * KEEL_CONFIG_INVALID, and it fits in EC2's user data.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { KeelError } from '../../src/errors.js';
import { parseAwsDeploymentText } from '../../src/providers/aws-deployment.js';
import { buildEtcdUserData, etcdSecretParameters, parseAwsEtcdMemberOptions, type AwsEtcdMemberOptions } from '../../src/providers/aws-etcd-userdata.js';
import { clusterParameters } from '../../src/providers/aws-plan.js';
import { maxUserDataBytes } from '../../src/providers/aws-userdata.js';

const deploymentYaml = readFileSync(join(import.meta.dirname, '../../deploy/aws/keel-aws.yml'), 'utf8');
const deployment = parseAwsDeploymentText(deploymentYaml);

const base: AwsEtcdMemberOptions = {
  cluster: 'main',
  region: 'eu-west-1',
  member: { name: 'etcd2', zone: 'eu-west-1b', address: '10.0.2.10' },
  members: deployment.etcd.members.map((m) => ({ name: m.name, address: m.address })),
  parameterPrefix: '/keel/main',
  keel: { kind: 'url', url: 'https://releases.example.com/keel/keel-0.1.0.tar.gz', sha256: 'ab'.repeat(32) },
  nodejs: 'nodesource',
  deploymentYaml,
  controllerLaunch: { securityGroupIds: ['sg-0123456789abcdef0'], keel: { kind: 'url', url: 'https://releases.example.com/keel/keel-0.1.0.tar.gz', sha256: 'ab'.repeat(32) } },
};

const dir = mkdtempSync(join(tmpdir(), 'keel-etcd-userdata-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function scriptFile(text: string): string {
  const path = join(dir, `user-data-${Math.random().toString(36).slice(2)}.sh`);
  writeFileSync(path, text);
  return path;
}

function refusal(input: unknown): KeelError {
  try {
    buildEtcdUserData(input as AwsEtcdMemberOptions);
  } catch (err) {
    expect(err).toBeInstanceOf(KeelError);
    return err as KeelError;
  }
  throw new Error(`accepted ${JSON.stringify(input).slice(0, 200)}`);
}

describe('buildEtcdUserData', () => {
  const script = buildEtcdUserData(base);

  it('is a bash script that fits in EC2 user data', () => {
    expect(script.startsWith('#!/bin/bash\n')).toBe(true);
    expect(script).toContain('set -euo pipefail');
    expect(Buffer.byteLength(script)).toBeLessThan(maxUserDataBytes);
  });

  it('passes bash -n and shellcheck', () => {
    const syntax = spawnSync('bash', ['-n', scriptFile(script)], { encoding: 'utf8' });
    expect(syntax.stderr).toBe('');
    expect(syntax.status).toBe(0);
    const which = spawnSync('sh', ['-c', 'command -v shellcheck'], { encoding: 'utf8' });
    // no quiet skip: `make setup` installs shellcheck
    expect(which.status, 'shellcheck is not installed: run make setup (apt-get install shellcheck)').toBe(0);
    const result = spawnSync('shellcheck', [scriptFile(script)], { encoding: 'utf8' });
    expect(result.stdout).toBe('');
    expect(result.status).toBe(0);
  });

  it("reads the member's parameters by the names the plan gives etcd", () => {
    const parameters = etcdSecretParameters(parseAwsEtcdMemberOptions(base));
    expect(parameters['server.crt']).toBe('/keel/main/etcd/etcd2/tls/server.crt');
    const planned = new Map(clusterParameters(deployment).map((p) => [p.name, p.readBy]));
    for (const [key, name] of Object.entries(parameters)) {
      expect(script).toContain(`'${name}'`);
      // the CA's certificate is the nodes' too; everything else is etcd's alone
      expect(planned.get(name), `${key} ${name}`).toBe(key === 'ca.crt' ? 'nodes' : 'etcd');
    }
  });

  it('refuses bad options with KEEL_CONFIG_INVALID', () => {
    expect(refusal({ ...base, member: { ...base.member, name: "etcd2'; reboot #" } }).code).toBe('KEEL_CONFIG_INVALID');
  });
});
