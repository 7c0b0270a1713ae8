/**
 * EC2 instances with processes behind them: the aws provider (real SDK)
 * launches through the loopback endpoint, whose instances are network
 * namespace hosts (test/support/ec2-netns.ts) that run the user data
 * buildUserData() made, with secrets from a local directory and no systemd,
 * then their guard and agent. A forced stop kills them by PID; a termination
 * removes the namespace. No etcd answers at the endpoints the nodes are
 * given: this is about the instance's life, not the cluster's.
 * Root, postgresql-15 and a build (dist/) are needed; port 19702; the
 * namespaces' /24 is 10.79.0.0.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadNodeConfig } from '../../src/config/load.js';
import { AwsProvider, awsTags, type AwsUserDataNodeOptions } from '../../src/providers/aws.js';
import { instanceIdParameter, parseAwsNodeOptions, secretParameters } from '../../src/providers/aws-userdata.js';
import { namespacePids, NetnsNetwork, removeStaleNamespaces } from '../../src/providers/netns-net.js';
import { ensureCertificateAuthority, issueCertificate, type CertificateAuthority } from '../../src/tls/pki.js';
import { commandLine, isAlive } from '../../src/util/process.js';
import { Ec2Endpoint, ec2EndpointCredentials } from '../support/ec2-endpoint.js';
import type { Ec2Instance } from '../support/ec2-fleet.js';
import { Ec2NetnsBacking } from '../support/ec2-netns.js';

const repo = join(import.meta.dirname, '../..');
const isRoot = process.getuid?.() === 0;
const hasPostgres = spawnSync('dpkg-query', ['-W', '-f=${Status}', 'postgresql-15'], { encoding: 'utf8' }).stdout.includes('install ok installed');
const built = existsSync(join(repo, 'dist/providers/aws-boot.js')) && existsSync(join(repo, 'dist/guard/main.js'));
const runnable = isRoot && hasPostgres && built;

const CLUSTER = 'geo';
const subnetPrefix = '10.79.0';
const nodeOptions: AwsUserDataNodeOptions = {
  // nobody listens there: the agent keeps trying, which is all this test needs of it
  etcdEndpoints: [`https://${subnetPrefix}.250:2379`],
  clusterCidrs: [`${subnetPrefix}.0/24`],
  keel: { kind: 'path', path: repo },
  nodejs: 'present',
};
const passwords: Record<string, string> = {
  'superuser-password': 'ec2-netns-superuser-pw-3c1d',
  'rewind-password': 'ec2-netns-rewind-pw-7a2e',
  'app-password': 'ec2-netns-app-pw-90fb',
  'api-token': 'ec2-netns-api-token-abcdefghijklmnopqrstuvwxyz',
};

const work = mkdtempSync('/tmp/keel-ec2-netns-');
const secretsDir = join(work, 'ssm');
const savedEnv = { ...process.env };
let net: NetnsNetwork | null = null;
let endpoint: Ec2Endpoint | null = null;
let backing: Ec2NetnsBacking | null = null;
let ca: CertificateAuthority;

function tagOf(instance: Readonly<Ec2Instance>, key: string): string {
  return instance.tags.find((t) => t.key === key)?.value ?? '';
}

/** The instance's secrets as SSM would hold them, its certificate naming the address EC2 gave it. */
async function prepareSecrets(instance: Readonly<Ec2Instance>): Promise<void> {
  const options = parseAwsNodeOptions({ ...nodeOptions, name: tagOf(instance, awsTags.node), cluster: CLUSTER, region: 'eu-west-1', zone: instance.zone });
  const parameters = secretParameters(options);
  const file = (key: keyof typeof parameters): string => {
    const path = join(secretsDir, parameters[key]!);
    mkdirSync(dirname(path), { recursive: true });
    return path;
  };
  for (const [key, value] of Object.entries(passwords)) writeFileSync(file(key as keyof typeof parameters), `${value}\n`, { mode: 0o600 });
  await issueCertificate(ca, { cert: file('node.crt'), key: file('node.key') }, { commonName: `${CLUSTER}-agent`, names: [instance.privateIpAddress], usage: 'both' });
  await issueCertificate(ca, { cert: file('replication.crt'), key: file('replication.key') }, { commonName: 'replicator', usage: 'client' });
  writeFileSync(file('ca.crt'), readFileSync(ca.cert));
  // last, as the controller does: the user data reads nothing before this names its instance
  const holder = join(secretsDir, instanceIdParameter(options.parameterPrefix ?? `/keel/${CLUSTER}`, options.name));
  writeFileSync(holder, instance.instanceId, { mode: 0o600 });
}

beforeAll(async () => {
  // no quiet skip: where this cannot run the suite fails and says why
  if (!runnable) throw new Error(`the namespace-backed EC2 test needs root, postgresql-15 and a build (root: ${isRoot}, postgresql-15: ${hasPostgres}, built: ${built}); make setup installs and builds`);
  await removeStaleNamespaces();
  for (const name of ['AWS_PROFILE', 'AWS_SESSION_TOKEN', 'AWS_CONFIG_FILE', 'AWS_SHARED_CREDENTIALS_FILE', 'AWS_ENDPOINT_URL', 'AWS_ENDPOINT_URL_EC2']) delete process.env[name];
  Object.assign(process.env, { AWS_ACCESS_KEY_ID: ec2EndpointCredentials.accessKeyId, AWS_SECRET_ACCESS_KEY: ec2EndpointCredentials.secretAccessKey, AWS_EC2_METADATA_DISABLED: 'true' });
  ca = await ensureCertificateAuthority({ cert: join(work, 'ca/ca.crt'), key: join(work, 'ca/ca.key') }, 'keel ec2-netns test CA');
  net = await NetnsNetwork.create({ subnet: subnetPrefix });
  backing = new Ec2NetnsBacking({ net, dir: join(work, 'instances'), secretsDir, prepareSecrets });
  endpoint = await Ec2Endpoint.start({
    port: 19702,
    subnets: { 'subnet-0a': { zone: 'eu-west-1a', cidr: `${subnetPrefix}.0/26` }, 'subnet-0b': { zone: 'eu-west-1b', cidr: `${subnetPrefix}.64/26` } },
    delaysMs: { boot: 100, stop: 100, terminate: 100 },
    lifecycle: backing,
  });
});

afterAll(async () => {
  await endpoint?.close();
  await backing?.close();
  await net?.destroy();
  rmSync(work, { recursive: true, force: true });
  process.env = savedEnv;
});

/** Bounded wait for a condition. */
async function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

describe('instances backed by namespaces', () => {
  it('boots the user data in a namespace at the instance address, runs guard and agent, stops them by PID on a forced stop, removes the host on termination', async () => {
    const provider = new AwsProvider({
      region: 'eu-west-1',
      cluster: CLUSTER,
      subnets: { 'eu-west-1b': 'subnet-0b', 'eu-west-1a': 'subnet-0a' },
      instanceTypes: { default: 'm7g.large' },
      amiId: 'ami-0123456789abcdef0',
      securityGroupIds: ['sg-0keel'],
      instanceProfileName: 'keel-node',
      dataVolume: { sizeGiB: 20 },
      userData: { nodeOptions },
      endpoint: endpoint!.url,
      maxAttempts: 1,
      waiterDelaySeconds: { min: 1, max: 1 },
      fenceWaitSeconds: 30,
      destroyWaitSeconds: 30,
    });
    const node = await provider.create(CLUSTER, { name: 'node1', zone: 'eu-west-1b' });
    expect(node.pgAddress).toMatch(/^10\.79\.0\.(6[4-9]|[7-9]\d|1[01]\d|12[0-6]):5432$/);
    const [instance] = endpoint!.instances();
    const id = instance!.instanceId;

    // the run hook: namespace, user data, guard, agent
    await until('the instance is booted', () => (backing!.host(id)?.agentPid ?? null) !== null || endpoint!.hookErrors.length > 0, 90_000);
    expect(endpoint!.hookErrors).toEqual([]);
    const host = backing!.host(id)!;
    expect(host.host.address).toBe(instance!.privateIpAddress);
    const config = loadNodeConfig(host.nodeConfig);
    expect(config).toMatchObject({ name: 'node1', cluster: CLUSTER, zone: 'eu-west-1b' });
    expect(config.postgres.connectAddress).toBe(node.pgAddress);
    expect(config.api.token).toBe(passwords['api-token']);
    const { guardPid, agentPid } = host;
    for (const pid of [guardPid!, agentPid!]) {
      expect(isAlive(pid)).toBe(true);
      expect(commandLine(pid)).toContain(host.nodeConfig);
    }
    expect(await namespacePids(host.host.namespace)).toEqual(expect.arrayContaining([guardPid, agentPid]));
    // the agent is not short-lived: a second later it still runs (it waits for etcd)
    await new Promise((resolve) => setTimeout(resolve, 1000));
    expect(isAlive(agentPid!)).toBe(true);

    const fenced = await provider.fence('node1');
    expect(fenced).toEqual({ confirmed: true, detail: `${id} stopped (forced)` });
    expect(isAlive(guardPid!)).toBe(false);
    expect(isAlive(agentPid!)).toBe(false);
    expect(await namespacePids(host.host.namespace)).toEqual([]);

    await provider.destroy('node1');
    expect(endpoint!.instance(id)?.state).toBe('terminated');
    expect(backing!.host(id)).toBeUndefined();
    expect(net!.list().map((h) => h.namespace)).not.toContain(host.host.namespace);
    expect(existsSync(host.root)).toBe(false);
  });
});

