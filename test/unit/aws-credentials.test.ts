/**
 * A node's credentials on AWS (aws-credentials.ts) against a mocked SSM: what
 * the controller writes for a launched node, in which order, as which types;
 * what it leaves alone; and what the provider does when they cannot be given.
 * The certificates are real (a CA made with openssl).
 */
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DescribeInstancesCommand, EC2Client, RunInstancesCommand, TerminateInstancesCommand } from '@aws-sdk/client-ec2';
import { DeleteParametersCommand, GetParameterCommand, PutParameterCommand, SSMClient, type PutParameterCommandInput } from '@aws-sdk/client-ssm';
import { mockClient } from 'aws-sdk-client-mock';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { KeelError } from '../../src/errors.js';
import { SsmNodeCredentials } from '../../src/providers/aws-credentials.js';
import { AwsProvider } from '../../src/providers/aws.js';
import { apiTokenFromKey } from '../../src/providers/local-layout.js';
import { ensureCertificateAuthority } from '../../src/tls/pki.js';
import { awsOptions, CLUSTER, describeFrom, instance } from './aws-fixtures.js';

const ssm = mockClient(SSMClient);
const ec2 = mockClient(EC2Client);
const scratch = mkdtempSync(join(tmpdir(), 'keel-aws-credentials-'));
const savedEnv = { ...process.env };
const stored = new Map<string, string>();
let caPem = '';

const credentials = () =>
  new SsmNodeCredentials({ region: 'eu-west-1', cluster: CLUSTER, parameterPrefix: '/keel/geo', kmsKeyId: 'alias/keel', serverNames: ['keel-geo-0123.elb.eu-west-1.amazonaws.com'], endpoint: 'http://127.0.0.1:9', maxAttempts: 1 });

function mockStore(): void {
  ssm.reset();
  ssm.on(GetParameterCommand).callsFake(({ Name }: { Name: string }) => {
    const value = stored.get(Name);
    if (value === undefined) throw Object.assign(new Error(`${Name} not found`), { name: 'ParameterNotFound' });
    return { Parameter: { Name, Value: value } };
  });
  ssm.on(PutParameterCommand).callsFake(({ Name, Value }: PutParameterCommandInput) => {
    stored.set(Name!, Value!);
    return { Version: 1 };
  });
  ssm.on(DeleteParametersCommand).callsFake(({ Names }: { Names: string[] }) => {
    for (const n of Names) stored.delete(n);
    return { DeletedParameters: Names };
  });
}

beforeAll(async () => {
  Object.assign(process.env, { AWS_ACCESS_KEY_ID: 'AKIATEST', AWS_SECRET_ACCESS_KEY: 'test', AWS_EC2_METADATA_DISABLED: 'true' });
  const ca = await ensureCertificateAuthority({ cert: join(scratch, 'ca.crt'), key: join(scratch, 'ca.key') }, 'keel credentials test CA');
  caPem = readFileSync(ca.cert, 'utf8');
  stored.set('/keel/geo/tls/ca.key', readFileSync(ca.key, 'utf8'));
});

beforeEach(() => {
  for (const key of [...stored.keys()]) if (key !== '/keel/geo/tls/ca.key') stored.delete(key);
  stored.set('/keel/geo/tls/ca.crt', caPem);
  stored.set('/keel/geo/api-key', 'the-key-tokens-derive-from-0123456789abcdef');
  mockStore();
  ec2.reset();
});

afterAll(() => {
  process.env = savedEnv;
  ssm.restore();
  ec2.restore();
  rmSync(scratch, { recursive: true, force: true });
});

describe('a launched node\'s credentials', () => {
  it('writes a certificate naming its address and the NLB, its replication pair and its own token, the instance id last', async () => {
    await credentials().issue({ name: 'node4', instanceId: 'i-0abc', address: '10.0.2.17' });
    const puts = ssm.commandCalls(PutParameterCommand).map((c) => c.args[0].input);
    expect(puts.at(-1)).toMatchObject({ Name: '/keel/geo/nodes/node4/instance-id', Value: 'i-0abc', Type: 'String' });
    const certificate = new X509Certificate(stored.get('/keel/geo/nodes/node4/tls/node.crt')!);
    expect(certificate.subjectAltName).toContain('IP Address:10.0.2.17');
    expect(certificate.subjectAltName).toContain('DNS:keel-geo-0123.elb.eu-west-1.amazonaws.com');
    expect(certificate.subject).toContain(`CN=${CLUSTER}-agent`);
    expect(certificate.checkIssued(new X509Certificate(caPem))).toBe(true);
    expect(new X509Certificate(stored.get('/keel/geo/nodes/node4/tls/replication.crt')!).subject).toContain('CN=replicator');
    expect(stored.get('/keel/geo/nodes/node4/api-token')).toBe(apiTokenFromKey('the-key-tokens-derive-from-0123456789abcdef', 'node4'));
    // keys and the token encrypted with the deployment's key; certificates in clear; every write replaces
    for (const p of puts) {
      const secret = /(key|token)$/.test(p.Name!);
      expect([p.Name, p.Type, p.KeyId, p.Overwrite]).toEqual([p.Name, secret ? 'SecureString' : 'String', secret ? 'alias/keel' : undefined, true]);
    }
  });

  it('fails with a KEEL_AWS_* error naming what is missing when the CA is not in SSM', async () => {
    stored.delete('/keel/geo/tls/ca.crt');
    const err = await credentials().issue({ name: 'node4', instanceId: 'i-0abc', address: '10.0.2.17' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(KeelError);
    expect((err as KeelError).code).toBe('KEEL_AWS_FAILED');
    expect((err as KeelError).message).toContain('/keel/geo/tls/ca.crt');
    expect(ssm.commandCalls(PutParameterCommand)).toHaveLength(0);
  });

  it('forgets a node only while the parameters are its instances\'', async () => {
    await credentials().issue({ name: 'node4', instanceId: 'i-0new', address: '10.0.2.18' });
    // an older instance of node4 is destroyed after the new one was given its credentials: they stay
    await credentials().forget('node4', ['i-0old']);
    expect(stored.get('/keel/geo/nodes/node4/instance-id')).toBe('i-0new');
    await credentials().forget('node4', ['i-0new']);
    expect([...stored.keys()].filter((k) => k.includes('/nodes/node4/'))).toEqual([]);
  });
});

describe('the provider with credentials', () => {
  it('terminates an instance whose credentials cannot be given, and says why', async () => {
    ssm.on(GetParameterCommand).rejects(Object.assign(new Error('not authorized to perform: ssm:GetParameter'), { name: 'AccessDeniedException' }));
    ec2.on(RunInstancesCommand).resolves({ Instances: [instance('i-0launched', 'node2', 'pending', { ip: '10.0.1.30' })] });
    ec2.on(DescribeInstancesCommand).callsFake(describeFrom(() => []));
    ec2.on(TerminateInstancesCommand).resolves({});
    const provider = new AwsProvider(awsOptions({ credentials: credentials() }));
    const err = await provider.create(CLUSTER, { name: 'node2', zone: 'eu-west-1a' }).catch((e: unknown) => e);
    expect((err as KeelError).code).toBe('KEEL_AWS_FORBIDDEN');
    expect((err as KeelError).message).toContain('ssm:GetParameter');
    expect(ec2.commandCalls(TerminateInstancesCommand).map((c) => c.args[0].input.InstanceIds)).toEqual([['i-0launched']]);
  });
});
