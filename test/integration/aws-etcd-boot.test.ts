/**
 * The etcd members' user data (buildEtcdUserData), run for real: three network namespaces on a bridge, one
 * member each at its fixed address of 10.83.0.0/24, every path under a root of its own, the secrets from files
 * laid out like the SSM parameters (certificates from a real CA), the address given instead of IMDS, and etcd
 * started as a process by PID instead of a unit (KEEL_BOOT_SYSTEMD=0). The three boot at once and must form
 * one etcd cluster with TLS, client certificates and etcd's auth on, and write the controller's files. Then a
 * member is killed, its data directory wiped, and the same script boots it again: it rejoins as a replaced
 * member (its old entry removed, a new one added) and the cluster has three healthy members.
 *
 * Root, etcd-server and a build (dist/) are needed; the namespaces' /24 is 10.83.0.0; no loopback port.
 */
import { execFile, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Etcd3, EtcdPermissionDeniedError } from 'etcd3';
import { stringify as toYaml } from 'yaml';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { TlsFiles } from '../../src/config/schema.js';
import { createEtcdClient } from '../../src/dcs/etcd-client.js';
import { etcdHealthy } from '../../src/dcs/etcd-server.js';
import { parseAwsControllerLaunch } from '../../src/providers/aws-launch.js';
import { awsEtcdPaths, buildEtcdUserData, etcdSecretParameters, parseAwsEtcdMemberOptions, type AwsEtcdMemberOptions } from '../../src/providers/aws-etcd-userdata.js';
import { etcdUsers } from '../../src/providers/local-layout.js';
import { NetnsNetwork, removeStaleNamespaces } from '../../src/providers/netns-net.js';
import { ensureCertificateAuthority, issueCertificate } from '../../src/tls/pki.js';
import { sleep } from '../../src/util/clock.js';
import { isAlive, readPidFile } from '../../src/util/process.js';

const repo = join(import.meta.dirname, '../..');
const isRoot = process.getuid?.() === 0;
const hasEtcd = spawnSync('dpkg-query', ['-W', '-f=${Status}', 'etcd-server'], { encoding: 'utf8' }).stdout.includes('install ok installed');
const built = existsSync(join(repo, 'dist/providers/aws-etcd-boot.js'));

const CLUSTER = 'ember';
const REGION = 'eu-west-1';
const subnet = '10.83.0';
const zones = ['eu-west-1a', 'eu-west-1b', 'eu-west-1c'];
const members = zones.map((zone, i) => ({ name: `etcd${i + 1}`, zone, address: `${subnet}.${64 * i + 10}` }));
const deploymentYaml = toYaml({
  region: REGION,
  cluster: CLUSTER,
  vpc: { id: 'vpc-0123456789abcdef0', cidr: `${subnet}.0/24` },
  zones: zones.map((name, i) => ({ name, subnetId: `subnet-0${'abc'[i]!.repeat(15)}${i + 1}`, subnetCidr: `${subnet}.${64 * i}/26` })),
  amiId: 'ami-0123456789abcdef0',
  instanceTypes: { medium: 'm6i.large' },
  etcd: { members },
});
const rootPassword = randomBytes(24).toString('base64url');

const work = mkdtempSync('/tmp/keel-etcd-boot-');
const secretsDir = join(work, 'ssm');
const caDir = join(work, 'ca');
let net: NetnsNetwork | null = null;
const clients: Etcd3[] = [];

const optionsOf = (m: (typeof members)[number]): AwsEtcdMemberOptions => ({
  cluster: CLUSTER,
  region: REGION,
  member: m,
  members: members.map(({ name, address }) => ({ name, address })),
  parameterPrefix: `/keel/${CLUSTER}`,
  keel: { kind: 'path', path: repo },
  nodejs: 'present',
  deploymentYaml,
  controllerLaunch: { securityGroupIds: ['sg-0123456789abcdef0'], keel: { kind: 'path', path: repo }, nodejs: 'present' },
});
const rootOf = (name: string): string => join(work, name, 'root');
const scriptOf = (name: string): string => join(work, name, 'user-data.sh');
const endpointOf = (m: (typeof members)[number]): string => `https://${m.address}:2379`;
const endpoints = members.map(endpointOf);
const pair = (name: string): TlsFiles => ({ ca: join(caDir, 'ca.crt'), cert: join(work, 'clients', `${name}.crt`), key: join(work, 'clients', `${name}.key`) });

/** The member's user data in its namespace, as cloud-init would run it, with the test hooks. */
function boot(name: string): Promise<{ ok: boolean; output: string }> {
  const env = { ...process.env, KEEL_BOOT_ROOT: rootOf(name), KEEL_BOOT_SECRETS_DIR: secretsDir, KEEL_BOOT_ADDRESS: net!.host(name).address, KEEL_BOOT_SYSTEMD: '0' };
  return new Promise((resolve) => {
    execFile('ip', ['netns', 'exec', net!.host(name).namespace, 'bash', scriptOf(name)], { env, timeout: 90_000, encoding: 'utf8', maxBuffer: 8 * 1024 * 1024 }, (err, stdout, stderr) => {
      const output = `${stdout}${stderr}`;
      writeFileSync(join(work, name, `boot-${Date.now()}.log`), output);
      resolve({ ok: err === null, output });
    });
  });
}

const etcdPid = (name: string): number | null => readPidFile(join(rootOf(name), awsEtcdPaths.etcdPidFile));

function client(tls: TlsFiles, asRoot = false): Etcd3 {
  const c = createEtcdClient(endpoints, 3000, asRoot ? { tls, user: 'root', password: rootPassword } : { tls });
  clients.push(c);
  return c;
}

async function memberList(): Promise<{ id: string; name: string; clientUrls: string[] }[]> {
  const answer = await client(pair('operator'), true).cluster.memberList({});
  return answer.members.map((m) => ({ id: String(m.ID), name: m.name, clientUrls: m.clientURLs ?? [] }));
}

async function healthyCount(): Promise<number> {
  const answers = await Promise.all(endpoints.map((e) => etcdHealthy(e, pair('operator'), 2000)));
  return answers.filter(Boolean).length;
}

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await sleep(250);
  }
}

beforeAll(async () => {
  // no quiet skip: where this cannot run the suite fails and says why
  if (!(isRoot && hasEtcd && built)) throw new Error(`the etcd boot test needs root, etcd-server and a build (root: ${isRoot}, etcd-server: ${hasEtcd}, built: ${built}); make setup installs and builds`);
  await removeStaleNamespaces();
  const ca = await ensureCertificateAuthority({ cert: join(caDir, 'ca.crt'), key: join(caDir, 'ca.key') }, 'keel etcd boot test CA');
  const m0 = parseAwsEtcdMemberOptions(optionsOf(members[0]!));
  const file = (parameter: string): string => {
    const path = join(secretsDir, parameter);
    mkdirSync(dirname(path), { recursive: true });
    return path;
  };
  const shared = etcdSecretParameters(m0);
  writeFileSync(file(shared['ca.crt']), readFileSync(ca.cert));
  // as the AWS CLI prints it: with a line break
  writeFileSync(file(shared['etcd-root-password']), `${rootPassword}\n`, { mode: 0o600 });
  const users = etcdUsers(CLUSTER);
  await issueCertificate(ca, { cert: file(shared['controller.crt']), key: file(shared['controller.key']) }, { commonName: users.controller, usage: 'client' });
  for (const m of members) {
    const own = etcdSecretParameters({ ...m0, member: m });
    await issueCertificate(ca, { cert: file(own['server.crt']), key: file(own['server.key']) }, { commonName: `${CLUSTER}-${m.name}`, names: [m.address, '127.0.0.1', 'localhost'], usage: 'both' });
    mkdirSync(join(work, m.name), { recursive: true });
    writeFileSync(scriptOf(m.name), buildEtcdUserData(optionsOf(m)), { mode: 0o700 });
  }
  for (const who of ['router', 'operator'] as const) {
    const tls = pair(who);
    mkdirSync(dirname(tls.cert), { recursive: true });
    await issueCertificate(ca, tls, { commonName: users[who], usage: 'client' });
  }
  net = await NetnsNetwork.create({ subnet });
  for (const m of members) await net.addHost(m.name, Number(m.address.split('.')[3]));
}, 60_000);

/** The last lines of each member's boots and etcd log: what a failed run leaves to read. */
function printDiagnostics(): void {
  const tail = (path: string): string => (existsSync(path) ? readFileSync(path, 'utf8').trimEnd().split('\n').slice(-20).join('\n') : '(none)');
  const parts: string[] = [];
  for (const m of members) {
    const dir = join(work, m.name);
    for (const log of existsSync(dir) ? readdirSync(dir).filter((f) => f.startsWith('boot-')) : []) parts.push(`== ${m.name} ${log}\n${tail(join(dir, log))}`);
    parts.push(`== ${m.name} etcd.log\n${tail(join(rootOf(m.name), awsEtcdPaths.etcdLog))}`);
  }
  console.log(parts.join('\n'));
}

let failed = false;
beforeEach((context) => {
  context.onTestFailed(() => {
    failed = true;
  });
});

afterAll(async () => {
  if (failed) printDiagnostics();
  for (const c of clients) c.close();
  for (const m of members) {
    const pid = etcdPid(m.name);
    if (pid !== null && isAlive(pid)) process.kill(pid, 'SIGKILL');
  }
  // kills whatever else runs in the namespaces (by PID), then removes them, the bridge and the root link
  await net?.destroy();
  rmSync(work, { recursive: true, force: true });
}, 60_000);

describe('three etcd members booting at once', () => {
  let firstIds: Map<string, string>;

  it('form one cluster with TLS and write the controller files, printing no secret', async () => {
    const results = await Promise.all(members.map((m) => boot(m.name)));
    results.forEach((r, i) => expect(r.ok, `${members[i]!.name}:\n${r.output.slice(-3000)}`).toBe(true));
    for (const r of results) {
      expect(r.output).not.toContain(rootPassword);
      expect(r.output).toContain('not starting keel-controller');
    }
    expect(await healthyCount()).toBe(3);
    const list = await memberList();
    expect(list.map((m) => m.name).sort()).toEqual(['etcd1', 'etcd2', 'etcd3']);
    firstIds = new Map(list.map((m) => [m.name, m.id]));

    for (const m of members) {
      const root = rootOf(m.name);
      const env = readFileSync(join(root, awsEtcdPaths.etcdEnv), 'utf8');
      expect(env).toContain(`ETCD_INITIAL_CLUSTER_TOKEN=keel-${CLUSTER}`);
      expect(env).toContain('ETCD_CLIENT_CERT_AUTH=true');
      expect(env).not.toContain(rootPassword);
      expect(statSync(join(root, awsEtcdPaths.etcdTlsDir, 'server.key')).mode & 0o777).toBe(0o600);
      expect(readFileSync(join(root, awsEtcdPaths.deployment), 'utf8')).toBe(deploymentYaml);
      expect(parseAwsControllerLaunch(readFileSync(join(root, awsEtcdPaths.launch), 'utf8')).securityGroupIds).toEqual(['sg-0123456789abcdef0']);
      expect(readFileSync(join(root, awsEtcdPaths.controllerEnv), 'utf8')).toContain(`KEEL_ETCD=${endpoints.join(',')}`);
      expect(statSync(join(root, awsEtcdPaths.tlsDir, 'controller.key')).mode & 0o777).toBe(0o600);
    }
  }, 180_000);

  it('refuses a client without a certificate, and lets the router read but not write', async () => {
    const ca = readFileSync(pair('operator').ca);
    const bare = new Etcd3({ hosts: endpoints, credentials: { rootCertificate: ca }, auth: { username: 'root', password: rootPassword }, dialTimeout: 3000 });
    clients.push(bare);
    await expect(bare.get(`/keel/${CLUSTER}/config`).string()).rejects.toThrow();

    const controller = client({ ...pair('operator'), cert: join(rootOf('etcd1'), awsEtcdPaths.tlsDir, 'controller.crt'), key: join(rootOf('etcd1'), awsEtcdPaths.tlsDir, 'controller.key') });
    await controller.put(`/keel/${CLUSTER}/probe`).value('written by the controller');
    const router = client(pair('router'));
    expect(await router.get(`/keel/${CLUSTER}/probe`).string()).toBe('written by the controller');
    await expect(router.put(`/keel/${CLUSTER}/probe`).value('by the router')).rejects.toBeInstanceOf(EtcdPermissionDeniedError);
    // and nothing outside the cluster's prefix, even for the controller
    await expect(controller.put('/elsewhere').value('x')).rejects.toBeInstanceOf(EtcdPermissionDeniedError);
  }, 60_000);

  it('boots again on a member that runs without changing anything', async () => {
    const before = etcdPid('etcd1');
    const again = await boot('etcd1');
    expect(again.ok, again.output.slice(-3000)).toBe(true);
    expect(again.output).toContain('etcd runs already');
    expect(etcdPid('etcd1')).toBe(before);
    expect((await memberList()).map((m) => m.id).sort()).toEqual([...firstIds.values()].sort());
  }, 60_000);

  it('takes a replaced member back: killed, its data wiped, booted again by the same script', async () => {
    const pid = etcdPid('etcd2');
    expect(pid).not.toBeNull();
    process.kill(pid!, 'SIGKILL');
    await waitFor('etcd2 gone', async () => !isAlive(pid!), 10_000);
    rmSync(join(rootOf('etcd2'), awsEtcdPaths.dataDir), { recursive: true, force: true });
    await waitFor('two healthy members', async () => (await healthyCount()) === 2, 20_000);

    const replaced = await boot('etcd2');
    expect(replaced.ok, replaced.output.slice(-3000)).toBe(true);
    expect(replaced.output).toContain('a replaced member');
    expect(readFileSync(join(rootOf('etcd2'), awsEtcdPaths.etcdEnv), 'utf8')).toContain('ETCD_INITIAL_CLUSTER_STATE=existing');

    await waitFor('three healthy members', async () => (await healthyCount()) === 3, 30_000);
    const list = await memberList();
    expect(list.map((m) => m.name).sort()).toEqual(['etcd1', 'etcd2', 'etcd3']);
    expect(list.every((m) => m.clientUrls.length === 1)).toBe(true);
    // a new entry: the old one was removed
    expect(list.find((m) => m.name === 'etcd2')!.id).not.toBe(firstIds.get('etcd2'));
    // its data came back from the others
    const controller = client(pair('operator'), true);
    expect(await controller.get(`/keel/${CLUSTER}/probe`).string()).toBe('written by the controller');
  }, 180_000);
});
