/**
 * A node's credentials on AWS, given by the controller that launches it: its
 * certificate must name the private address EC2 picks at launch, so it can
 * only be issued once RunInstances has answered. The controller reads the
 * cluster CA's key and the key API tokens derive from (SSM parameters only its
 * role may read), issues the node's server+client pair and its replication
 * pair with Debian's openssl (pki.ts) in a private scratch directory, and
 * writes them with the node's API token under `<prefix>/nodes/<name>/`.
 *
 * `<prefix>/nodes/<name>/instance-id` is written last: the node's user data
 * waits until it names its own instance before it reads the rest, so a node
 * never boots with what an earlier instance of the same name was given.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DeleteParametersCommand, GetParameterCommand, PutParameterCommand, SSMClient, type ParameterType } from '@aws-sdk/client-ssm';
import { KeelError } from '../errors.js';
import { issueCertificate } from '../tls/pki.js';
import { awsError, awsErrorCode, callAws, iamActionOf } from './aws-errors.js';
import { instanceIdParameter, secretParameters, type AwsNodeOptions } from './aws-userdata.js';
import { apiTokenFromKey, etcdUsers } from './local-layout.js';

export interface AwsNodeCredentialsOptions {
  region: string;
  cluster: string;
  /** the SSM path of the cluster's parameters (keel-aws.yml's ssm.prefix) */
  parameterPrefix: string;
  /** the KMS key of the SecureString parameters; default the account's alias/aws/ssm */
  kmsKeyId?: string;
  /** more names every node's certificate holds beside its address (the NLB's DNS name) */
  serverNames?: string[];
  /** an SSM-compatible endpoint (tests); AWS's own by default */
  endpoint?: string;
  maxAttempts?: number;
}

/** One launched node, as EC2 answered RunInstances. */
export interface LaunchedNode {
  name: string;
  instanceId: string;
  address: string;
}

/** What the provider asks of whoever gives nodes their credentials. */
export interface NodeCredentials {
  issue(node: LaunchedNode): Promise<void>;
  /** the node's instances are gone: their parameters go too (unless a newer instance of the name holds them) */
  forget(name: string, instanceIds: string[]): Promise<void>;
}

export class SsmNodeCredentials implements NodeCredentials {
  readonly client: SSMClient;

  constructor(private readonly o: AwsNodeCredentialsOptions) {
    // credentials: the SDK's default chain (on AWS the controller's instance profile)
    this.client = new SSMClient({ region: o.region, retryMode: 'standard', maxAttempts: o.maxAttempts ?? 5, ...(o.endpoint === undefined ? {} : { endpoint: o.endpoint }) });
  }

  async issue(node: LaunchedNode): Promise<void> {
    const parameters = this.parametersOf(node.name);
    const prefix = this.o.parameterPrefix;
    const [caCert, caKey, apiKey] = await Promise.all([this.get(`${prefix}/tls/ca.crt`), this.get(`${prefix}/tls/ca.key`), this.get(`${prefix}/api-key`)]);
    const scratch = await mkdtemp(join(tmpdir(), 'keel-node-credentials-'));
    try {
      const ca = { cert: join(scratch, 'ca.crt'), key: join(scratch, 'ca.key') };
      await writeFile(ca.cert, caCert, { mode: 0o600 });
      await writeFile(ca.key, caKey, { mode: 0o600 });
      const names = [node.address, ...(this.o.serverNames ?? []), '127.0.0.1', 'localhost'];
      const pair = await issueCertificate(ca, { cert: join(scratch, 'node.crt'), key: join(scratch, 'node.key') }, { commonName: etcdUsers(this.o.cluster).agent, names, usage: 'both' });
      const replication = await issueCertificate(ca, { cert: join(scratch, 'replication.crt'), key: join(scratch, 'replication.key') }, { commonName: 'replicator', usage: 'client' });
      const values: [string, string][] = [
        [parameters['node.crt']!, await readFile(pair.cert, 'utf8')],
        [parameters['node.key']!, await readFile(pair.key, 'utf8')],
        [parameters['replication.crt']!, await readFile(replication.cert, 'utf8')],
        [parameters['replication.key']!, await readFile(replication.key, 'utf8')],
        [parameters['api-token']!, apiTokenFromKey(apiKey, node.name)],
      ];
      for (const [name, value] of values) await this.put(name, value);
    } finally {
      await rm(scratch, { recursive: true, force: true });
    }
    // last: the node reads nothing before this names its instance
    await this.put(instanceIdParameter(prefix, node.name), node.instanceId);
  }

  async forget(name: string, instanceIds: string[]): Promise<void> {
    const holder = await this.get(instanceIdParameter(this.o.parameterPrefix, name)).catch((err: unknown) => {
      if (err instanceof KeelError && awsErrorCode(err.cause) === 'ParameterNotFound') return null;
      throw err;
    });
    // a node launched again under this name owns them now
    if (holder !== null && !instanceIds.includes(holder)) return;
    const parameters = this.parametersOf(name);
    const names = [instanceIdParameter(this.o.parameterPrefix, name), ...['api-token', 'node.crt', 'node.key', 'replication.crt', 'replication.key'].map((k) => parameters[k as keyof typeof parameters]!)];
    await callAws('ssm', new DeleteParametersCommand({ Names: names }), (c) => this.client.send(c));
  }

  private parametersOf(name: string) {
    // secretParameters reads only the prefix, cluster, name and router of the options
    return secretParameters({ parameterPrefix: this.o.parameterPrefix, cluster: this.o.cluster, name } as AwsNodeOptions);
  }

  private async get(name: string): Promise<string> {
    try {
      const out = await this.client.send(new GetParameterCommand({ Name: name, WithDecryption: true }));
      const value = out.Parameter?.Value;
      if (value === undefined || value === '') throw new KeelError('KEEL_AWS_FAILED', `SSM parameter ${name} is empty`);
      return value;
    } catch (err) {
      if (awsErrorCode(err) === 'ParameterNotFound') {
        throw new KeelError('KEEL_AWS_FAILED', `SSM parameter ${name} does not exist: the controller cannot give a new node its credentials`, {
          hint: '`keel aws up` writes it; check keel-aws.yml\'s ssm.prefix and region',
          cause: err,
        });
      }
      throw awsError(err, iamActionOf(GetParameterCommand.name, 'ssm'));
    }
  }

  private async put(name: string, value: string): Promise<void> {
    const secure = /(token|key)$/.test(name);
    const type: ParameterType = secure ? 'SecureString' : 'String';
    await callAws(
      'ssm',
      new PutParameterCommand({ Name: name, Value: value, Type: type, Overwrite: true, Tier: 'Standard', ...(secure ? { KeyId: this.o.kmsKeyId ?? 'alias/aws/ssm' } : {}) }),
      (c) => this.client.send(c),
    );
  }

}
