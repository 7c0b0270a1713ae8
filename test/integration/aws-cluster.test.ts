/**
 * Keel on "AWS": a controller in this process drives the aws provider (real
 * SDK) against the loopback EC2 endpoint, whose instances are network
 * namespace hosts that boot buildUserData()'s script and run guard and agent
 * (test/support/ec2-netns.ts). The provider's options, limits and spec
 * defaults come from a keel-aws.yml deployment (aws-controller.ts). etcd has
 * three members at the deployment's fixed addresses, with TLS and a user per
 * component; a router runs in the root namespace on 127.0.0.1. Nothing
 * reaches AWS.
 *
 * Each node gets its certificate and token from the provider, as on AWS: the
 * controller issues them once EC2 has given the instance its address and
 * writes them to SSM (a loopback SSM endpoint, whose parameters are the files
 * the booting host reads), the instance id last; the host waits for that.
 *
 * The controller starts from no node at all: it launches the first, which
 * bootstraps the cluster, then brings it to three nodes, one per zone, replaces the
 * leader's instance when it is terminated through the EC2 API, and places a
 * replacement in another zone while one has no capacity, moving it back when
 * capacity returns.
 *
 * Root, postgresql-15, etcd-server and a build (dist/) are needed; ports
 * 19750-19752; the namespaces' /24 is 10.81.0.0.
 */
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes, X509Certificate } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { EC2Client, TerminateInstancesCommand } from '@aws-sdk/client-ec2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Controller } from '../../src/controller/controller.js';
import { defaultSpec } from '../../src/controller/spec.js';
import { defaultDynamicConfig } from '../../src/config/schema.js';
import { setUpEtcdAuth } from '../../src/dcs/etcd-auth.js';
import { EtcdDcs } from '../../src/dcs/etcd.js';
import type { ClusterView } from '../../src/model/values.js';
import { AwsProvider, awsTags } from '../../src/providers/aws.js';
import { awsControllerDefaults, awsNodeCredentialsOptions, awsProviderLimits, awsProviderOptions, type AwsControllerLaunch } from '../../src/controller/aws.js';
import { SsmNodeCredentials } from '../../src/providers/aws-credentials.js';
import { parameterPrefixOf, parseAwsDeployment, type AwsDeployment } from '../../src/providers/aws-deployment.js';
import { instanceIdParameter, secretParameters, type AwsNodeOptions } from '../../src/providers/aws-userdata.js';
import { etcdUsers, LocalLayout } from '../../src/providers/local-layout.js';
import { keelBin } from '../../src/providers/local.js';
import { NetnsEtcd } from '../../src/providers/netns-etcd.js';
import { NetnsNetwork, removeStaleNamespaces } from '../../src/providers/netns-net.js';
import { isReady } from '../../src/supervisor/local-cluster.js';
import { silentLogger } from '../../src/util/log.js';
import { terminateIfNamed } from '../../src/util/process.js';
import { queryOnce, type Login } from '../../src/workload/connect.js';
import { appConnection, makeClusterDir } from '../support/cluster.js';
import { localController } from '../support/controller.js';
import { Ec2Endpoint, ec2EndpointCredentials } from '../support/ec2-endpoint.js';
import type { Ec2Instance } from '../support/ec2-fleet.js';
import { Ec2NetnsBacking } from '../support/ec2-netns.js';
import { SsmEndpoint } from '../support/ssm-endpoint.js';

const repo = join(import.meta.dirname, '../..');
const isRoot = process.getuid?.() === 0;
const installed = (p: string) => spawnSync('dpkg-query', ['-W', '-f=${Status}', p], { encoding: 'utf8' }).stdout.includes('install ok installed');
const hasPackages = installed('postgresql-15') && installed('etcd-server');
const built = existsSync(join(repo, 'dist/providers/aws-boot.js')) && existsSync(join(repo, 'dist/guard/main.js'));
const runnable = isRoot && hasPackages && built;

const CLUSTER = 'orbit';
const REGION = 'eu-west-1';
const subnetPrefix = '10.81.0';
const endpointPort = 19750;
const rwPort = 19751;
const roPort = 19752;
const zones = ['eu-west-1a', 'eu-west-1b', 'eu-west-1c'];

/** keel-aws.yml of the test: three /26 of the namespaces' /24, etcd at a fixed address high in each. */
const deployment: AwsDeployment = parseAwsDeployment({
  region: REGION,
  cluster: CLUSTER,
  vpc: { id: 'vpc-0123456789abcdef0', cidr: `${subnetPrefix}.0/24` },
  zones: zones.map((name, i) => ({ name, subnetId: `subnet-0${'abc'[i]!.repeat(15)}${i + 1}`, subnetCidr: `${subnetPrefix}.${64 * i}/26` })),
  amiId: 'ami-0123456789abcdef0',
  instanceTypes: { medium: 'm6i.large' },
  instanceClass: 'medium',
  nodes: 3,
  etcd: { members: zones.map((zone, i) => ({ name: `etcd${i + 1}`, zone, address: `${subnetPrefix}.${64 * i + 60}` })) },
});

const secret = () => randomBytes(24).toString('base64url');
const passwords: Record<string, string> = { 'superuser-password': secret(), 'rewind-password': secret(), 'app-password': secret() };
const etcdRootPassword = secret();

const layout: LocalLayout = makeClusterDir('/tmp/keel-aws-cluster-');
const secretsDir = join(layout.dir, 'ssm');
const savedEnv = { ...process.env };
let net: NetnsNetwork | null = null;
let etcd: NetnsEtcd | null = null;
let endpoint: Ec2Endpoint | null = null;
let ssm: SsmEndpoint | null = null;
let credentials: SsmNodeCredentials | null = null;
let backing: Ec2NetnsBacking | null = null;
let dcs: EtcdDcs | null = null;
let controllerDcs: EtcdDcs | null = null;
let controller: Controller | null = null;
let provider: AwsProvider | null = null;
let ec2: EC2Client | null = null;
let routerPid: number | null = null;
let failed = false;
const login = (): Login => ({ user: 'app', password: passwords['app-password']!, caPem: readFileSync(layout.caFiles.cert, 'utf8') });

function tagOf(instance: Readonly<Ec2Instance>, key: string): string {
  return instance.tags.find((t) => t.key === key)?.value ?? '';
}

/** What `keel aws up` puts in SSM for the whole cluster: the passwords, the CA (its key for the controller), the key tokens derive from. */
async function seedClusterParameters(): Promise<void> {
  const prefix = parameterPrefixOf(deployment);
  for (const [key, value] of Object.entries(passwords)) await ssm!.seed(`${prefix}/${key}`, value, 'SecureString');
  await ssm!.seed(`${prefix}/tls/ca.crt`, readFileSync(layout.caFiles.cert, 'utf8'), 'String');
  await ssm!.seed(`${prefix}/tls/ca.key`, readFileSync(layout.caFiles.key, 'utf8'), 'SecureString');
  await ssm!.seed(`${prefix}/api-key`, secret(), 'SecureString');
}

/** A node's own parameters, as the provider's credentials wrote them (null when absent). */
async function nodeParameter(node: string, key: 'instance-id' | 'node.crt' | 'api-token'): Promise<string | null> {
  const prefix = parameterPrefixOf(deployment);
  if (key === 'instance-id') return ssm!.value(instanceIdParameter(prefix, node));
  return ssm!.value(secretParameters({ parameterPrefix: prefix, cluster: CLUSTER, name: node } as AwsNodeOptions)[key]!);
}

function startRouter(): void {
  const log = openSync(layout.routerLog, 'a');
  const tls = layout.clientTls('router');
  const args = ['router', '--etcd', etcd!.endpoints().join(','), '--cluster', CLUSTER, '--etcd-cacert', tls.ca, '--etcd-cert', tls.cert, '--etcd-key', tls.key];
  args.push('--rw', `127.0.0.1:${rwPort}`, '--ro', `127.0.0.1:${roPort}`, '--engine', 'builtin', '--wait-timeout', '20');
  try {
    const child = spawn(process.execPath, [keelBin, ...args], { detached: true, stdio: ['ignore', log, log] });
    child.unref();
    routerPid = child.pid ?? null;
  } finally {
    closeSync(log);
  }
}

beforeAll(async () => {
  // no quiet skip: where this cannot run the suite fails and says why
  if (!runnable) throw new Error(`the AWS cluster test needs root, postgresql-15, etcd-server and a build (root: ${isRoot}, packages: ${hasPackages}, built: ${built}); make setup installs and builds`);
  await removeStaleNamespaces();
  for (const name of ['AWS_PROFILE', 'AWS_SESSION_TOKEN', 'AWS_CONFIG_FILE', 'AWS_SHARED_CREDENTIALS_FILE', 'AWS_ENDPOINT_URL', 'AWS_ENDPOINT_URL_EC2']) delete process.env[name];
  Object.assign(process.env, { AWS_ACCESS_KEY_ID: ec2EndpointCredentials.accessKeyId, AWS_SECRET_ACCESS_KEY: ec2EndpointCredentials.secretAccessKey, AWS_EC2_METADATA_DISABLED: 'true' });
  const logger = silentLogger();
  await layout.ensureClusterTls({ v: 1, cluster: CLUSTER, portBase: endpointPort, nodes: 3, synchronousMode: 'off' });

  net = await NetnsNetwork.create({ subnet: subnetPrefix });
  const members = deployment.etcd.members;
  for (const m of members) await net.addHost(m.name, Number(m.address.split('.')[3]));
  etcd = new NetnsEtcd(net, layout.etcdDir, members.map((m) => m.name), { tls: { ca: layout.caFiles, client: layout.clientTls('operator') } });
  for (const m of members) mkdirSync(join(layout.etcdDir, m.name), { recursive: true });
  await etcd.start();
  await setUpEtcdAuth({ endpoints: etcd.endpoints(), cluster: CLUSTER, users: etcdUsers(CLUSTER), rootPassword: etcdRootPassword, tls: layout.clientTls('operator'), logger });
  dcs = new EtcdDcs({ endpoints: etcd.endpoints(), cluster: CLUSTER, requestTimeoutMs: 2000, logger, credentials: { tls: layout.clientTls('operator') } });
  // the config key before any agent, so none runs with other settings
  await dcs.putConfig({ ...defaultDynamicConfig }, null);
  startRouter();

  ssm = await SsmEndpoint.start({ dir: secretsDir, region: REGION, credentials: ec2EndpointCredentials });
  await seedClusterParameters();
  const launch: AwsControllerLaunch = {
    securityGroupIds: ['sg-0123456789abcdef0'],
    keel: { kind: 'path', path: repo },
    nodejs: 'present',
    endpoints: { ec2: `http://127.0.0.1:${endpointPort}`, ssm: ssm.url },
    provider: { maxAttempts: 2, waiterDelaySeconds: { min: 0.25, max: 1 }, fenceWaitSeconds: 30, destroyWaitSeconds: 30 },
  };
  credentials = new SsmNodeCredentials(awsNodeCredentialsOptions(deployment, launch));
  const options = { ...awsProviderOptions(deployment, launch), credentials };
  // no prepareSecrets: the provider's credentials write each node's parameters, the host waits for them
  backing = new Ec2NetnsBacking({ net, dir: join(layout.dir, 'instances'), secretsDir });
  endpoint = await Ec2Endpoint.start({
    port: endpointPort,
    region: REGION,
    subnets: Object.fromEntries(deployment.zones.map((z) => [z.subnetId, { zone: z.name, cidr: z.subnetCidr }])),
    // a terminated instance is shutting down for a while, as on EC2, before it is gone from the list
    delaysMs: { boot: 100, stop: 100, terminate: 1000 },
    lifecycle: backing,
  });
  provider = new AwsProvider(options);
  ec2 = new EC2Client({ region: REGION, endpoint: endpoint.url, maxAttempts: 1 });

  controllerDcs = new EtcdDcs({ endpoints: etcd.endpoints(), cluster: CLUSTER, requestTimeoutMs: 2000, logger, credentials: { tls: layout.clientTls('controller') } });
  await dcs.putSpec({ ...defaultSpec({ nodes: 3, ...awsControllerDefaults(deployment) }), replaceAfterSeconds: 5 }, null);
  controller = localController('aws-test', controllerDcs, provider, {
    limits: awsProviderLimits(deployment),
    defaults: awsControllerDefaults(deployment),
    tickMs: 250,
    drainMs: 2000,
  });
}, 120_000);

/** The last lines of every log under the cluster's directory, and the controller's events: what a failed run leaves to read. */
async function printDiagnostics(): Promise<void> {
  const logs: string[] = [];
  const walk = (dir: string): void => {
    for (const entry of existsSync(dir) ? readdirSync(dir, { withFileTypes: true }) : []) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (entry.name.endsWith('.log')) logs.push(`== ${path}\n${readFileSync(path, 'utf8').split('\n').slice(-15).join('\n')}`);
    }
  };
  walk(layout.dir);
  const events = await dcs?.listEvents(60).catch(() => []) ?? [];
  console.log([...logs, '== events', ...events.map((e) => `${e.source} ${e.kind}: ${e.message}`), `== hook errors ${JSON.stringify(endpoint?.hookErrors.map((h) => `${h.instanceId} ${h.hook}: ${h.error.message}`))}`].join('\n'));
}

afterAll(async () => {
  if (failed) await printDiagnostics().catch(() => undefined);
  const problems: string[] = [];
  const step = async (what: string, work: () => Promise<unknown> | unknown) => {
    try {
      await work();
    } catch (err) {
      problems.push(`${what}: ${(err as Error).message}`);
    }
  };
  await step('controller', () => controller?.stop());
  await step('router', () => (routerPid === null ? undefined : terminateIfNamed(routerPid, ['router', `--cluster ${CLUSTER}`], 5000)));
  await step('endpoint', () => endpoint?.close());
  await step('ssm', () => ssm?.close());
  credentials?.client.destroy();
  await step('instances', () => backing?.close());
  ec2?.destroy();
  provider?.client.destroy();
  await step('dcs', () => dcs?.close());
  await step('controller dcs', () => controllerDcs?.close());
  await step('etcd', () => etcd?.stop());
  await step('network', () => net?.destroy());
  rmSync(layout.dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 });
  process.env = savedEnv;
  if (problems.length > 0) throw new Error(`cleanup incomplete: ${problems.join('; ')}`);
}, 120_000);

/** Polls until `check` holds; fails with `what` and the last state seen. */
async function until<T>(what: string, check: () => Promise<T | null | undefined | false>, timeoutMs: number, pollMs = 250): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError = '';
  for (;;) {
    try {
      const value = await check();
      if (value !== null && value !== undefined && value !== false) return value;
    } catch (err) {
      lastError = (err as Error).message;
    }
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms${lastError === '' ? '' : ` (last error: ${lastError})`}`);
    await new Promise((resolve) => setTimeout(resolve, pollMs));
  }
}

/** Three nodes, one per zone, a leader and two replicas streaming from it, and rw writable; returns the view and the nodes by zone. */
async function untilThreeNodesOverThreeZones(timeoutMs: number): Promise<{ view: ClusterView; byZone: Record<string, string> }> {
  return until(
    'three nodes, one per zone, streaming',
    async () => {
      const nodes = await provider!.list(CLUSTER);
      const running = nodes.filter((n) => n.state === 'running');
      if (running.length !== 3 || nodes.length !== 3) return null;
      if ([...running.map((n) => n.zone)].sort().join() !== zones.join()) return null;
      const view = await dcs!.readCluster();
      if (!isReady(view, 3)) return null;
      // the members are the provider's nodes, and no other
      if (view.members.map((m) => m.name).sort().join() !== running.map((n) => n.name).sort().join()) return null;
      await write('ready');
      return { view, byZone: Object.fromEntries(running.map((n) => [n.zone, n.name])) };
    },
    timeoutMs,
  );
}

function write(what: string): Promise<unknown> {
  return queryOnce(appConnection('127.0.0.1', rwPort, login(), 3000), 'INSERT INTO aws_probe (what) VALUES ($1)', [what]);
}

/**
 * Tries a write through rw every 200 ms, each attempt on its own connection
 * (one held by the router while there is no leader must not hide the next);
 * resolves with the time the first one succeeded.
 */
function firstSuccessfulWrite(timeoutMs: number): Promise<number> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    let done = false;
    let lastError = '';
    const finish = (err: Error | null, at = 0) => {
      if (done) return;
      done = true;
      clearInterval(timer);
      if (err === null) resolve(at);
      else reject(err);
    };
    const timer = setInterval(() => {
      if (Date.now() - started > timeoutMs) return finish(new Error(`no write through rw within ${timeoutMs} ms (last error: ${lastError})`));
      write('after termination').then(
        () => finish(null, Date.now()),
        (err: unknown) => {
          lastError = (err as Error).message;
        },
      );
    }, 200);
  });
}

function liveInstanceOf(name: string): Ec2Instance {
  const instance = endpoint!.instances().find((i) => tagOf(i, awsTags.node) === name && i.state !== 'terminated');
  if (instance === undefined) throw new Error(`no live instance of ${name}`);
  return instance;
}

describe('Keel on the loopback EC2 endpoint', () => {
  it('keeps 3 nodes over 3 zones, one per zone, streaming', async () => {
    try {
      // no node yet: the controller launches the first, which bootstraps the cluster, then the two others
      expect(await provider!.list(CLUSTER)).toEqual([]);
      await controller!.start();
      const leader = await until('a leader', async () => (await dcs!.readCluster()).leader?.value.name, 90_000);
      const leaderAddress = (await provider!.list(CLUSTER)).find((n) => n.name === leader)!.pgAddress.split(':')[0]!;
      await until('the probe table', async () => {
        await queryOnce(appConnection(leaderAddress, 5432, login(), 3000), 'CREATE TABLE IF NOT EXISTS aws_probe (id bigserial PRIMARY KEY, what text, at timestamptz DEFAULT now())');
        return true;
      }, 30_000);
      const { byZone } = await untilThreeNodesOverThreeZones(150_000);
      expect(Object.keys(byZone).sort()).toEqual(zones);
      // every instance booted from the provider's user data, none failed
      expect(endpoint!.hookErrors).toEqual([]);
      const created = endpoint!.calls('RunInstances').filter((r) => r.code === null).length;
      expect(created).toBe(3);
      // each node's parameters are its own instance's: its id, a certificate naming its address, a token of its own
      const tokens = new Set<string>();
      for (const node of await provider!.list(CLUSTER)) {
        expect(await nodeParameter(node.name, 'instance-id')).toBe(liveInstanceOf(node.name).instanceId);
        const certificate = new X509Certificate((await nodeParameter(node.name, 'node.crt'))!);
        expect(certificate.subjectAltName).toContain(`IP Address:${node.pgAddress.split(':')[0]}`);
        expect(certificate.checkIssued(new X509Certificate(readFileSync(layout.caFiles.cert)))).toBe(true);
        tokens.add((await nodeParameter(node.name, 'api-token'))!);
      }
      expect(tokens.size).toBe(3);
      expect(ssm!.typeOf(`${parameterPrefixOf(deployment)}/nodes/node1/tls/node.key`)).toBe('SecureString');
    } catch (err) {
      failed = true;
      throw err;
    }
  }, 240_000);

  it('terminating the leader\'s instance through the EC2 API: writes go through rw on a new leader, and a replacement in its zone streams', async () => {
    try {
      const before = await dcs!.readCluster();
      const oldLeader = before.leader!.value.name;
      const instance = liveInstanceOf(oldLeader);
      const zone = instance.zone;

      const terminatedAt = Date.now();
      await ec2!.send(new TerminateInstancesCommand({ InstanceIds: [instance.instanceId] }));
      const writtenAt = await firstSuccessfulWrite(30_000);
      const failoverSeconds = (writtenAt - terminatedAt) / 1000;
      const newLeader = (await dcs!.readCluster()).leader?.value.name;
      // where the time went: the controller ends the lease once EC2 confirms the fence (terminated), else the ttl does
      const leaseEnded = (await dcs!.listEvents(200)).find((e) => e.kind === 'lease-ended' && e.atMs >= terminatedAt && e.message.includes(oldLeader));
      const how = leaseEnded === undefined ? 'its lease expired' : `the controller ended its lease at ${((leaseEnded.atMs - terminatedAt) / 1000).toFixed(2)} s`;
      console.log(`AWS: leader ${oldLeader}'s instance terminated -> first write through rw on ${newLeader}: ${failoverSeconds.toFixed(2)} s (target 2 s; ${how})`);
      expect(newLeader).toBeDefined();
      expect(newLeader).not.toBe(oldLeader);
      expect(failoverSeconds).toBeLessThan(30);

      const { byZone } = await untilThreeNodesOverThreeZones(150_000);
      const replacedSeconds = (Date.now() - terminatedAt) / 1000;
      const replacement = byZone[zone]!;
      console.log(`AWS: ${oldLeader}'s replacement ${replacement} streams in ${zone}: ${replacedSeconds.toFixed(1)} s after the termination`);
      // a new instance (the name may be the freed one: the controller takes the first free name)
      expect(liveInstanceOf(replacement).instanceId).not.toBe(instance.instanceId);
      expect(await nodeParameter(replacement, 'instance-id')).toBe(liveInstanceOf(replacement).instanceId);
      expect(endpoint!.instance(instance.instanceId)?.state).toBe('terminated');
      expect(endpoint!.hookErrors).toEqual([]);
    } catch (err) {
      failed = true;
      throw err;
    }
  }, 240_000);

  it('a zone out of capacity: the replacement goes to another zone, and back once capacity returns', async () => {
    try {
      const view = await dcs!.readCluster();
      const leader = view.leader!.value.name;
      const victim = (await provider!.list(CLUSTER)).find((n) => n.name !== leader && n.state === 'running')!;
      const zone = victim.zone;
      const instance = liveInstanceOf(victim.name);
      const known = new Set(endpoint!.instances().map((i) => i.instanceId));
      const refusedBefore = endpoint!.calls('RunInstances').filter((r) => r.code === 'InsufficientInstanceCapacity').length;

      endpoint!.setCapacity(zone, 'insufficient');
      const terminatedAt = Date.now();
      await ec2!.send(new TerminateInstancesCommand({ InstanceIds: [instance.instanceId] }));
      const elsewhere = await until(
        `a replacement of ${victim.name} outside ${zone}`,
        async () => endpoint!.instances().find((i) => !known.has(i.instanceId) && i.state !== 'terminated'),
        60_000,
      );
      // capacity back before the replacement streams: the controller's rebalancing then finds room in the zone
      endpoint!.setCapacity(zone, 'available');
      console.log(`AWS: ${zone} out of capacity: ${tagOf(elsewhere, awsTags.node)} launched in ${elsewhere.zone} ${((Date.now() - terminatedAt) / 1000).toFixed(1)} s after ${victim.name}'s termination`);
      expect(elsewhere.zone).not.toBe(zone);
      expect(endpoint!.calls('RunInstances').filter((r) => r.code === 'InsufficientInstanceCapacity').length).toBeGreaterThan(refusedBefore);

      const { byZone } = await untilThreeNodesOverThreeZones(150_000);
      console.log(`AWS: capacity back in ${zone}: ${byZone[zone]} runs there, three zones with one node each ${((Date.now() - terminatedAt) / 1000).toFixed(1)} s after the termination`);
      expect(liveInstanceOf(byZone[zone]!).zone).toBe(zone);
      expect(endpoint!.hookErrors).toEqual([]);
    } catch (err) {
      failed = true;
      throw err;
    }
  }, 240_000);
});
