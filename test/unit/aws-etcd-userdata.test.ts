/**
 * The user data of an etcd member on AWS (src/providers/aws-etcd-userdata.ts): valid bash, clean for
 * shellcheck, no secret in it, the SSM names aws-plan.ts gives etcd, bad options refused with
 * KEEL_CONFIG_INVALID, and it fits in EC2's user data.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { scriptFile as writeScript, expectCleanShell, refusalOf } from '../support/user-data.js';
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

const scriptFile = (text: string): string => writeScript(dir, text);

const refusal = (input: unknown): KeelError => refusalOf(buildEtcdUserData, input);

describe('buildEtcdUserData', () => {
  const script = buildEtcdUserData(base);

  it('is a bash script that fits in EC2 user data', () => {
    expect(script.startsWith('#!/bin/bash\n')).toBe(true);
    expect(script).toContain('set -euo pipefail');
    expect(Buffer.byteLength(script)).toBeLessThan(maxUserDataBytes);
  });

  it('passes bash -n and shellcheck', () => {
    expectCleanShell(dir, script);
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

  it('holds no secret: no key, no password, and an option that would carry one is refused', () => {
    expect(script).not.toMatch(/BEGIN [A-Z ]*(PRIVATE KEY|CERTIFICATE)/);
    expect(script).toContain('aws ssm get-parameter --region "$keel_region" --with-decryption --name "$parameter"');
    const err = refusal({ ...base, etcdRootPassword: 'etcd-root-secret-0001' });
    expect(err.code).toBe('KEEL_CONFIG_INVALID');
    expect(err.message).not.toContain('etcd-root-secret-0001');
    expect(refusal({ ...base, controllerLaunch: { ...base.controllerLaunch, caKey: 'x' } }).code).toBe('KEEL_CONFIG_INVALID');
  });

  it('checks the fixed address, starts etcd before the auth set-up, and the controller last', () => {
    expect(script).toContain("keel_address='10.0.2.10'");
    expect(script).toContain('[ "$address" = "$keel_address" ] || fail');
    expect(script).toContain('imds local-ipv4');
    const etcdStep = script.indexOf('boot etcd\n');
    const unit = script.indexOf('systemctl start --no-block keel-etcd.service');
    const controllerStep = script.indexOf('boot controller\n');
    const controllerUnit = script.indexOf('systemctl enable --now keel-controller.service');
    expect(script.indexOf('fetch_secret "${secret_parameters[i]}"')).toBeLessThan(etcdStep);
    expect(etcdStep).toBeLessThan(unit);
    expect(unit).toBeLessThan(controllerStep);
    expect(controllerStep).toBeLessThan(controllerUnit);
    // Debian's etcd-server would start an etcd of its own on installing
    expect(script.indexOf('systemctl mask etcd.service')).toBeLessThan(script.indexOf('apt_install ca-certificates curl etcd-server etcd-client'));
  });

  it("carries keel-aws.yml and the controller's launch values in its options line", () => {
    const line = script.split('\n')[script.split('\n').indexOf("read -r -d '' keel_options <<'KEEL_OPTIONS_EOF' || true") + 1]!;
    const options = JSON.parse(line) as { deploymentYaml: string; controllerLaunch: { securityGroupIds: string[] } };
    expect(options.deploymentYaml).toBe(deploymentYaml);
    expect(options.controllerLaunch.securityGroupIds).toEqual(['sg-0123456789abcdef0']);
  });
});

describe('bad options are refused with KEEL_CONFIG_INVALID', () => {
  const rows: [string, Record<string, unknown>][] = [
    ['a member name with a quote', { member: { ...base.member, name: "etcd2'; reboot #" } }],
    ['a member address with a command', { member: { ...base.member, address: '10.0.2.10$(id)' } }],
    ['a zone with a backtick', { member: { ...base.member, zone: 'eu-west-1b`id`' } }],
    ['a region with a semicolon', { region: 'eu-west-1;id' }],
    ['a parameter prefix with a space', { parameterPrefix: '/keel/main x' }],
    ['a member that is not one of the members', { member: { name: 'etcd9', zone: 'eu-west-1b', address: '10.0.2.10' } }],
    ['a member at another address than the members give it', { member: { ...base.member, address: '10.0.2.11' } }],
    ['a member named twice', { members: [...base.members, { name: 'etcd2', address: '10.0.2.12' }] }],
    ['a cluster other than keel-aws.yml says', { cluster: 'other' }],
    ['a zone other than keel-aws.yml gives the member', { member: { ...base.member, zone: 'eu-west-1c' } }],
    ['a parameter prefix other than keel-aws.yml says', { parameterPrefix: '/keel/other' }],
    ['members other than keel-aws.yml lists', { members: base.members.slice(0, 2) }],
    ['keel-aws.yml that is not valid', { deploymentYaml: 'region: [' }],
    ['a launch without the nodes\' security group', { controllerLaunch: { keel: base.keel } }],
    ['a Keel URL with a quote', { keel: { kind: 'url', url: "https://x.example.com/k.tgz'", sha256: 'ab'.repeat(32) } }],
  ];
  it.each(rows)('%s', (_name, change) => {
    const err = refusal({ ...base, ...change });
    expect(['KEEL_CONFIG_INVALID', 'KEEL_CONFIG_UNREADABLE']).toContain(err.code);
    expect(err.exitStatus).toBe(2);
  });

  it('a script past EC2\'s 16 KiB (keel-aws.yml goes in whole)', () => {
    const padded = `${deploymentYaml}${'# a long comment line that only takes room in the user data\n'.repeat(100)}`;
    const err = refusal({ ...base, deploymentYaml: padded });
    expect(err.code).toBe('KEEL_CONFIG_INVALID');
    expect(err.message).toContain(String(maxUserDataBytes));
  });
});
