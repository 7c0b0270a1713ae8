/**
 * The aws provider with the real SDK against the loopback EC2 endpoint
 * (test/support/ec2-endpoint.ts): every request is serialized, SigV4-signed,
 * sent over HTTP to 127.0.0.1, answered in EC2's XML and parsed, errors
 * included. Create, list, fence and destroy; one instance for one ClientToken
 * even when an answer is lost; the next zone on InsufficientInstanceCapacity;
 * KEEL_AWS_FORBIDDEN on UnauthorizedOperation; unsigned or wrongly signed
 * requests refused. Ports 19700-19749; nothing leaves the machine.
 */
import { DescribeInstancesCommand, paginateDescribeInstances, RunInstancesCommand, type EC2Client } from '@aws-sdk/client-ec2';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { KeelError } from '../../src/errors.js';
import { AwsProvider, awsTags, clientToken, type AwsProviderOptions } from '../../src/providers/aws.js';
import { Ec2Endpoint, ec2EndpointCredentials, type Ec2EndpointOptions, type Ec2Instance } from '../support/ec2-endpoint.js';
import { computeSignature } from '../support/ec2-sigv4.js';

const CLUSTER = 'geo';
const port = 19700;
const subnets: Ec2EndpointOptions['subnets'] = {
  'subnet-0a': { zone: 'eu-west-1a', cidr: '10.0.1.0/24' },
  'subnet-0b': { zone: 'eu-west-1b', cidr: '10.0.2.0/24' },
  'subnet-0c': { zone: 'eu-west-1c', cidr: '10.0.3.0/24' },
};
const savedEnv = { ...process.env };
let endpoint: Ec2Endpoint;
const runs: { instanceId: string; userData: string }[] = [];
const stops: string[] = [];
const terminations: string[] = [];
let stopHookFails = false;

function options(overrides: Partial<AwsProviderOptions> = {}): AwsProviderOptions {
  return {
    region: 'eu-west-1',
    cluster: CLUSTER,
    subnets: { 'eu-west-1a': 'subnet-0a', 'eu-west-1b': 'subnet-0b', 'eu-west-1c': 'subnet-0c' },
    instanceTypes: { default: 'm7g.large', byClass: { small: 't4g.medium' } },
    amiId: 'ami-0123456789abcdef0',
    securityGroupIds: ['sg-0keel'],
    instanceProfileName: 'keel-node',
    dataVolume: { sizeGiB: 100 },
    userData: (n) => `#!/bin/bash\n# ${n.cluster}/${n.name} in ${n.zone} as ${n.instanceType}\n`,
    endpoint: endpoint.url,
    maxAttempts: 1,
    waiterDelaySeconds: { min: 1, max: 1 },
    fenceWaitSeconds: 8,
    destroyWaitSeconds: 8,
    ...overrides,
  };
}

function setCredentials(accessKeyId: string, secretAccessKey: string): void {
  Object.assign(process.env, { AWS_ACCESS_KEY_ID: accessKeyId, AWS_SECRET_ACCESS_KEY: secretAccessKey });
}

async function keelError(promise: Promise<unknown>): Promise<KeelError> {
  const err = await promise.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(KeelError);
  return err as KeelError;
}

function ofNode(name: string): Ec2Instance[] {
  return endpoint.instances().filter((i) => i.tags.some((t) => t.key === awsTags.node && t.value === name));
}

/** Waits (bounded) for the endpoint to show the instance in `state`. */
async function untilState(instanceId: string, state: Ec2Instance['state'], timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (endpoint.instance(instanceId)?.state !== state) {
    if (Date.now() > deadline) throw new Error(`${instanceId} is ${endpoint.instance(instanceId)?.state}, not ${state}, after ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

beforeAll(async () => {
  // the SDK's default chain finds these first: it never asks an instance profile or a file
  for (const name of ['AWS_PROFILE', 'AWS_SESSION_TOKEN', 'AWS_CONFIG_FILE', 'AWS_SHARED_CREDENTIALS_FILE', 'AWS_ENDPOINT_URL', 'AWS_ENDPOINT_URL_EC2']) delete process.env[name];
  setCredentials(ec2EndpointCredentials.accessKeyId, ec2EndpointCredentials.secretAccessKey);
  process.env.AWS_EC2_METADATA_DISABLED = 'true';
  endpoint = await Ec2Endpoint.start({
    port,
    subnets,
    delaysMs: { boot: 50, stop: 100, terminate: 100 },
    lifecycle: {
      onRun: (instance, userData) => void runs.push({ instanceId: instance.instanceId, userData }),
      onStop: (instance) => {
        if (stopHookFails) throw new Error(`the processes of ${instance.instanceId} would not die`);
        stops.push(instance.instanceId);
      },
      onTerminate: (instance) => void terminations.push(instance.instanceId),
    },
  });
});

afterAll(async () => {
  await endpoint?.close();
  process.env = savedEnv;
});

beforeEach(() => {
  setCredentials(ec2EndpointCredentials.accessKeyId, ec2EndpointCredentials.secretAccessKey);
  stopHookFails = false;
});

afterEach(async () => {
  for (const zone of ['eu-west-1a', 'eu-west-1b', 'eu-west-1c']) endpoint.setCapacity(zone, 'available');
  for (const action of ['RunInstances', 'DescribeInstances', 'TerminateInstances', 'StopInstances'] as const) endpoint.allow(action);
  await endpoint.settled();
});

describe('the provider through the real SDK', () => {
  it('creates, lists, fences and destroys a node', async () => {
    const provider = new AwsProvider(options({ randomId: () => 'nonce-rt' }));
    const created = await provider.create(CLUSTER, { name: 'rt1', zone: 'eu-west-1a', instanceClass: 'small' });
    const [instance, ...others] = ofNode('rt1');
    expect(others).toEqual([]);
    expect(created).toEqual({ name: 'rt1', zone: 'eu-west-1a', state: 'running', agentPid: null, pgAddress: `${instance!.privateIpAddress}:5432`, apiAddress: `${instance!.privateIpAddress}:8008` });
    expect(instance!.privateIpAddress).toMatch(/^10\.0\.1\.\d+$/);
    // what RunInstances carried, as EC2 would have recorded it
    expect(instance).toMatchObject({
      imageId: 'ami-0123456789abcdef0',
      instanceType: 't4g.medium',
      subnetId: 'subnet-0a',
      zone: 'eu-west-1a',
      securityGroupIds: ['sg-0keel'],
      iamInstanceProfile: { name: 'keel-node' },
      metadataOptions: { httpTokens: 'required', httpEndpoint: 'enabled' },
      clientToken: clientToken(CLUSTER, 'rt1', 'nonce-rt', 'eu-west-1a'),
      userData: '#!/bin/bash\n# geo/rt1 in eu-west-1a as t4g.medium\n',
    });
    expect(instance!.volumes).toMatchObject([{ deviceName: '/dev/sdf', volumeType: 'gp3', sizeGiB: 100, encrypted: true, deleteOnTermination: true }]);
    const tags = Object.fromEntries(instance!.tags.map((t) => [t.key, t.value]));
    expect(tags).toEqual({ 'keel:cluster': CLUSTER, 'keel:node': 'rt1', 'keel:zone': 'eu-west-1a', 'keel:class': 'small', Name: `${CLUSTER}-rt1` });
    expect(instance!.volumes[0]!.tags).toEqual(instance!.tags);

    await untilState(instance!.instanceId, 'running');
    expect(runs).toContainEqual({ instanceId: instance!.instanceId, userData: instance!.userData });
    expect((await provider.list(CLUSTER)).find((n) => n.name === 'rt1')).toEqual(created);

    const fenced = await provider.fence('rt1');
    expect(fenced).toEqual({ confirmed: true, detail: `${instance!.instanceId} stopped (forced)` });
    expect(stops).toContain(instance!.instanceId);
    expect(endpoint.calls('StopInstances').at(-1)!.params).toMatchObject({ InstanceId: [instance!.instanceId], Force: 'true' });
    expect((await provider.list(CLUSTER)).find((n) => n.name === 'rt1')?.state).toBe('stopped');

    await provider.destroy('rt1');
    expect(endpoint.instance(instance!.instanceId)?.state).toBe('terminated');
    expect(terminations).toContain(instance!.instanceId);
    expect((await provider.list(CLUSTER)).find((n) => n.name === 'rt1')).toBeUndefined();
    // destroyed already: nothing to terminate
    const terminateCalls = endpoint.calls('TerminateInstances').length;
    await provider.destroy('rt1');
    expect(endpoint.calls('TerminateInstances')).toHaveLength(terminateCalls);
  });

  it('launches one instance for one ClientToken: the same creation twice, and an answer lost on its way back', async () => {
    const provider = new AwsProvider(options());
    const first = await provider.create(CLUSTER, { name: 'idem1', zone: 'eu-west-1b', creationId: 'c-1' });
    const again = await provider.create(CLUSTER, { name: 'idem1', zone: 'eu-west-1b', creationId: 'c-1' });
    expect(again).toEqual(first);
    expect(ofNode('idem1')).toHaveLength(1);

    // the endpoint launches, the connection drops before the answer: the SDK's retry sends the same token
    endpoint.loseNextAnswer('RunInstances');
    const before = endpoint.calls('RunInstances').length;
    const retried = new AwsProvider(options({ maxAttempts: 3 }));
    const node = await retried.create(CLUSTER, { name: 'idem2', zone: 'eu-west-1b', creationId: 'c-2' });
    const attempts = endpoint.calls('RunInstances').slice(before);
    expect(attempts.map((a) => a.status)).toEqual([0, 200]);
    expect(attempts[0]!.params.ClientToken).toBe(attempts[1]!.params.ClientToken);
    expect(ofNode('idem2')).toHaveLength(1);
    expect(node.pgAddress).toBe(`${ofNode('idem2')[0]!.privateIpAddress}:5432`);

    // the same token with another request is EC2's IdempotentParameterMismatch
    const other = await keelError(new AwsProvider(options({ userData: 'something else' })).create(CLUSTER, { name: 'idem2', zone: 'eu-west-1b', creationId: 'c-2' }));
    expect(other.code).toBe('KEEL_AWS_FAILED');
    expect(other.message).toContain('IdempotentParameterMismatch');
    expect(ofNode('idem2')).toHaveLength(1);
  });

  it('tries the next zone on InsufficientInstanceCapacity, answered as EC2 does (HTTP 500, XML error)', async () => {
    endpoint.setCapacity('eu-west-1b', 'insufficient');
    endpoint.setCapacity('eu-west-1c', 'unsupported');
    const before = endpoint.calls('RunInstances').length;
    const node = await new AwsProvider(options()).create(CLUSTER, { name: 'cap1', zone: 'eu-west-1b' });
    expect(node.zone).toBe('eu-west-1a');
    expect(node.pgAddress).toMatch(/^10\.0\.1\.\d+:5432$/);
    const attempts = endpoint.calls('RunInstances').slice(before);
    expect(attempts.map((a) => [a.params.SubnetId, a.status, a.code])).toEqual([
      ['subnet-0b', 500, 'InsufficientInstanceCapacity'],
      ['subnet-0c', 400, 'Unsupported'],
      ['subnet-0a', 200, null],
    ]);
    expect(ofNode('cap1').map((i) => i.zone)).toEqual(['eu-west-1a']);

    endpoint.setCapacity('eu-west-1a', 'insufficient');
    endpoint.setCapacity('eu-west-1c', 'insufficient');
    const err = await keelError(new AwsProvider(options()).create(CLUSTER, { name: 'cap2', zone: 'eu-west-1c' }));
    expect(err.code).toBe('KEEL_AWS_CAPACITY');
    expect(err.message).toContain('eu-west-1c: InsufficientInstanceCapacity, eu-west-1a: InsufficientInstanceCapacity, eu-west-1b: InsufficientInstanceCapacity');
    expect(ofNode('cap2')).toEqual([]);
  });

  it('turns the endpoint\'s UnauthorizedOperation into KEEL_AWS_FORBIDDEN naming the action', async () => {
    endpoint.deny('RunInstances');
    const err = await keelError(new AwsProvider(options()).create(CLUSTER, { name: 'deny1', zone: 'eu-west-1a' }));
    expect(err.code).toBe('KEEL_AWS_FORBIDDEN');
    expect(err.message).toContain('ec2:RunInstances');
    expect(err.message).toContain('UnauthorizedOperation');
    expect(err.hint).toContain('decode-authorization-message');
    expect(err.message).not.toContain('Encoded authorization failure message');
    expect(endpoint.calls('RunInstances').at(-1)).toMatchObject({ status: 403, code: 'UnauthorizedOperation' });
    expect(ofNode('deny1')).toEqual([]);

    endpoint.deny('DescribeInstances');
    const listErr = await keelError(new AwsProvider(options()).list(CLUSTER));
    expect(listErr.code).toBe('KEEL_AWS_FORBIDDEN');
    expect(listErr.message).toContain('ec2:DescribeInstances');
  });

  it('lists over every page, and the SDK\'s paginator follows NextToken', async () => {
    const paged = await Ec2Endpoint.start({ port: port + 1, subnets, delaysMs: { boot: 10 }, pageSizeWithoutMaxResults: 2 });
    try {
      const provider = new AwsProvider(options({ endpoint: paged.url, cluster: 'paged' }));
      for (let i = 1; i <= 5; i++) await provider.create('paged', { name: `p${i}`, zone: 'eu-west-1c' });
      const nodes = await provider.list('paged');
      expect(nodes.map((n) => n.name).sort()).toEqual(['p1', 'p2', 'p3', 'p4', 'p5']);
      expect(new Set(nodes.map((n) => n.pgAddress)).size).toBe(5);
      expect(paged.calls('DescribeInstances').map((c) => c.params.NextToken === undefined)).toEqual([true, false, false]);

      // MaxResults as the SDK sends it, and EC2's range for it
      const pages: number[] = [];
      for await (const page of paginateDescribeInstances({ client: provider.client, pageSize: 5 }, {})) pages.push((page.Reservations ?? []).flatMap((r) => r.Instances ?? []).length);
      expect(pages).toEqual([5]);
      const tooSmall = await provider.client.send(new DescribeInstancesCommand({ MaxResults: 2 })).catch((e: unknown) => e as Error);
      expect(tooSmall).toMatchObject({ name: 'InvalidParameterValue' });
    } finally {
      await paged.close();
    }
  });

  it('answers EC2\'s errors for unknown instances through the SDK', async () => {
    const client: EC2Client = new AwsProvider(options()).client;
    const err = await client.send(new DescribeInstancesCommand({ InstanceIds: ['i-0123456789abcdef0'] })).catch((e: unknown) => e as Error & { $metadata: { httpStatusCode?: number; requestId?: string } });
    expect(err).toMatchObject({ name: 'InvalidInstanceID.NotFound', message: "The instance ID 'i-0123456789abcdef0' does not exist" });
    expect((err as { $metadata: { httpStatusCode?: number } }).$metadata.httpStatusCode).toBe(400);
    // text EC2 escapes in its XML comes back as it went
    const odd = 'a&b <c> "d" \'e\'';
    await client.send(new RunInstancesCommand({ ImageId: 'ami-0123456789abcdef0', InstanceType: 't4g.nano', MinCount: 1, MaxCount: 1, SubnetId: 'subnet-0c', TagSpecifications: [{ ResourceType: 'instance', Tags: [{ Key: 'odd', Value: odd }] }] }));
    const found = await client.send(new DescribeInstancesCommand({ Filters: [{ Name: 'tag:odd', Values: ['a&b*'] }] }));
    expect(found.Reservations?.flatMap((r) => r.Instances ?? []).map((i) => i.Tags)).toEqual([[{ Key: 'odd', Value: odd }]]);
    // fencing a node nobody has is confirmed at once
    expect(await new AwsProvider(options()).fence('nobody')).toMatchObject({ confirmed: true });
  });

  it('does not confirm a fence while the backing of the instance may still run', async () => {
    const provider = new AwsProvider(options({ fenceWaitSeconds: 2 }));
    await provider.create(CLUSTER, { name: 'stuck1', zone: 'eu-west-1a' });
    const [instance] = ofNode('stuck1');
    await untilState(instance!.instanceId, 'running');
    stopHookFails = true;
    const fenced = await provider.fence('stuck1');
    expect(fenced.confirmed).toBe(false);
    expect(fenced.detail).toContain(`${instance!.instanceId} stopping`);
    expect(endpoint.hookErrors.map((e) => [e.instanceId, e.hook])).toContainEqual([instance!.instanceId, 'onStop']);
  });
});

describe('signatures', () => {
  const body = 'Action=DescribeInstances&Version=2016-11-15';

  it('refuses an unsigned request with AuthFailure (401) in EC2\'s error XML', async () => {
    const res = await fetch(`${endpoint.url}/`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body });
    expect(res.status).toBe(401);
    const xml = await res.text();
    expect(xml).toMatch(/<Response><Errors><Error><Code>AuthFailure<\/Code><Message>[^<]+<\/Message><\/Error><\/Errors><RequestID>[0-9a-f-]{36}<\/RequestID><\/Response>/);
    expect(endpoint.requests.at(-1)).toMatchObject({ action: 'DescribeInstances', status: 401, code: 'AuthFailure' });
  });

  it('refuses a signed request whose body was changed after signing', async () => {
    const amzDate = new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d{3}/, '');
    const scope = `${amzDate.slice(0, 8)}/eu-west-1/ec2/aws4_request`;
    const headers = { host: `127.0.0.1:${endpoint.port}`, 'content-type': 'application/x-www-form-urlencoded', 'x-amz-date': amzDate };
    const signedHeaders = Object.keys(headers).sort();
    const signature = computeSignature({ method: 'POST', path: '/', query: '', headers, body: Buffer.from(body) }, signedHeaders, amzDate, scope, ec2EndpointCredentials.secretAccessKey);
    const authorization = `AWS4-HMAC-SHA256 Credential=${ec2EndpointCredentials.accessKeyId}/${scope}, SignedHeaders=${signedHeaders.join(';')}, Signature=${signature}`;
    const send = (payload: string) => fetch(`${endpoint.url}/`, { method: 'POST', headers: { ...headers, authorization }, body: payload });
    expect((await send(body)).status).toBe(200);
    const tampered = await send(`${body}&InstanceId.1=i-0123456789abcdef0`);
    expect(tampered.status).toBe(403);
    expect(await tampered.text()).toContain('<Code>SignatureDoesNotMatch</Code>');
  });

  it('refuses the SDK signing with an unknown key or a wrong secret', async () => {
    setCredentials('AKIAUNKNOWN000000000', ec2EndpointCredentials.secretAccessKey);
    const unknown = await keelError(new AwsProvider(options()).list(CLUSTER));
    expect(unknown.code).toBe('KEEL_AWS_FAILED');
    expect(unknown.message).toContain('did not accept the credentials');
    setCredentials(ec2EndpointCredentials.accessKeyId, 'a-wrong-secret');
    const wrong = await keelError(new AwsProvider(options()).list(CLUSTER));
    expect(wrong.message).toContain('SignatureDoesNotMatch');
  });
});
