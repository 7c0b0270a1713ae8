/**
 * A small AWS account for the unit tests of `keel aws up` and `down`: what
 * exists (groups, interfaces, instances, volumes, snapshots, roles, policies,
 * profiles, parameters, the NLB), kept by the handlers of the commands up and
 * down send, which aws-sdk-client-mock puts in place of the four clients'
 * `send`. It answers as AWS does where the code depends on it: not-found and
 * already-exists codes, a new instance profile that EC2 refuses for a few
 * tries, interfaces and groups still in use for a while after what used them
 * went. Every command is recorded in order, with its IAM action; every
 * creation is recorded as the plan names it.
 *
 * Nothing reaches AWS: the clients' endpoint is a loopback port nobody listens
 * on, and a command without a handler here fails the test.
 */
import { EC2Client, EC2ServiceException } from '@aws-sdk/client-ec2';
import { ElasticLoadBalancingV2Client, ElasticLoadBalancingV2ServiceException } from '@aws-sdk/client-elastic-load-balancing-v2';
import { IAMClient, IAMServiceException } from '@aws-sdk/client-iam';
import { SSMClient, SSMServiceException } from '@aws-sdk/client-ssm';
import { mockClient, type AwsClientStub } from 'aws-sdk-client-mock';
import { ec2Handlers } from './aws-account-ec2.js';
import { elbHandlers, iamHandlers, ssmHandlers } from './aws-account-services.js';

export type Service = 'ec2' | 'iam' | 'ssm' | 'elasticloadbalancing';
type Tags = Record<string, string>;

export interface Call {
  action: string;
  input: Record<string, any>;
}

export interface Creation {
  kind: string;
  name: string;
}

/** One command's handler: its input in, its output out, or an AWS error thrown. */
export type Handler = (input: any) => unknown;
export type Handlers = [command: { name: string; prototype: object }, handler: Handler][];

const exceptionOf: Record<Service, new (options: any) => Error> = {
  ec2: EC2ServiceException,
  iam: IAMServiceException,
  ssm: SSMServiceException,
  elasticloadbalancing: ElasticLoadBalancingV2ServiceException,
};

export class AwsFault {
  constructor(readonly code: string, readonly message: string) {}
}

export const fail = (code: string, message = `${code} (test account)`): never => {
  throw new AwsFault(code, message);
};

export class FakeAccount {
  readonly accountId = '123456789012';
  readonly calls: Call[] = [];
  creations: Creation[] = [];
  private counter = 0;
  private readonly faults: { action: string; nth: number; code: string; seen: number }[] = [];
  private stubs: AwsClientStub<any, any, any>[] = [];

  // EC2
  groups = new Map<string, { name: string; vpcId: string; description: string; tags: Tags; rules: { port: number; cidr?: string; groupId?: string }[] }>();
  interfaces = new Map<string, { subnetId: string; address: string; groupIds: string[]; tags: Tags; attachedTo: string | null; busyTries: number }>();
  instances = new Map<string, { state: string; tags: Tags; rootDeviceName: string; volumes: { device: string; volumeId: string }[]; groupIds: string[]; interfaceId: string | null; profile: string; userData: string }>();
  volumes = new Map<string, { sizeGiB: number; encrypted: boolean }>();
  snapshots = new Map<string, { volumeId: string; tags: Tags; description: string; state: string }>();
  /** RunInstances refusals a new profile gets before EC2 sees it */
  profileDelayTries = 2;
  // IAM
  roles = new Map<string, { trust: string; inline: Map<string, string>; attached: Set<string>; tags: Tags }>();
  policies = new Map<string, { name: string; document: string }>();
  profiles = new Map<string, { roles: string[]; refusalsLeft: number }>();
  // SSM
  parameters = new Map<string, { value: string; type: string; keyId?: string }>();
  // ELB
  loadBalancers = new Map<string, { arn: string; dnsName: string; subnets: string[]; groups: string[]; attributes: Tags; deleted: boolean }>();
  targetGroups = new Map<string, { arn: string; input: Record<string, any>; attributes: Tags }>();
  listeners = new Map<string, { lbArn: string; port: number; targetGroupArn: string }>();

  id(prefix: string): string {
    this.counter += 1;
    return `${prefix}-${this.counter.toString(16).padStart(17, '0')}`;
  }

  created(kind: string, name: string): void {
    this.creations.push({ kind, name });
  }

  /** The nth call (1-based, counted from now) to `action` fails with `code` (AccessDenied by default). */
  failOn(action: string, nth = 1, code = 'AccessDenied'): void {
    this.faults.push({ action, nth, code, seen: 0 });
  }

  clearFaults(): void {
    this.faults.length = 0;
  }

  /** Mocks the four clients' send with this account's handlers. */
  install(): this {
    const clients: [Service, any, Handlers][] = [
      ['ec2', EC2Client, ec2Handlers(this)],
      ['iam', IAMClient, iamHandlers(this)],
      ['ssm', SSMClient, ssmHandlers(this)],
      ['elasticloadbalancing', ElasticLoadBalancingV2Client, elbHandlers(this)],
    ];
    for (const [service, client, handlers] of clients) {
      const stub = mockClient(client);
      stub.onAnyCommand().callsFake(() => {
        throw new Error(`the test account has no handler for a ${service} command`);
      });
      for (const [command, handler] of handlers) {
        stub.on(command as any).callsFake((input: any) => this.answer(service, command.name.replace(/Command$/, ''), input, handler));
      }
      this.stubs.push(stub);
    }
    return this;
  }

  restore(): void {
    for (const stub of this.stubs) stub.restore();
    this.stubs = [];
  }

  private async answer(service: Service, name: string, input: any, handler: Handler): Promise<unknown> {
    const action = `${service}:${name}`;
    this.calls.push({ action, input });
    try {
      for (const f of this.faults) {
        if (f.action !== action) continue;
        f.seen += 1;
        if (f.seen === f.nth) fail(f.code, `User: arn:aws:iam::${this.accountId}:user/operator is not authorized to perform: ${action}`);
      }
      return { ...(handler(input) as object), $metadata: { httpStatusCode: 200 } };
    } catch (err) {
      if (!(err instanceof AwsFault)) throw err;
      const Exception = exceptionOf[service];
      throw new Exception({ name: err.code, $fault: 'client', $metadata: { httpStatusCode: 400 }, message: err.message });
    }
  }

  /** The actions called, in order, from index `from` of the record. */
  actions(from = 0): string[] {
    return this.calls.slice(from).map((c) => c.action);
  }

  /** What a controller would have launched: a database node with a root and a data volume, keel:cluster tags. */
  addDatabaseNode(cluster: string, node: string, zone: string): string {
    const id = this.id('i');
    const root = this.id('vol');
    const data = this.id('vol');
    this.volumes.set(root, { sizeGiB: 8, encrypted: true });
    this.volumes.set(data, { sizeGiB: 100, encrypted: true });
    const tags = { 'keel:cluster': cluster, 'keel:node': node, 'keel:zone': zone, Name: `${cluster}-${node}` };
    const dbGroup = [...this.groups].find(([, g]) => g.name === `keel-${cluster}-db`)?.[0];
    this.instances.set(id, {
      state: 'running',
      tags,
      rootDeviceName: '/dev/xvda',
      volumes: [
        { device: '/dev/xvda', volumeId: root },
        { device: '/dev/sdf', volumeId: data },
      ],
      groupIds: dbGroup === undefined ? [] : [dbGroup],
      interfaceId: null,
      profile: `keel-${cluster}-node`,
      userData: '',
    });
    return id;
  }

  /** Every value the account holds in SSM. */
  secretValues(): string[] {
    return [...this.parameters.values()].map((p) => p.value);
  }
}

export const tagsOf = (list: { Key?: string; Value?: string }[] | undefined): Tags => Object.fromEntries((list ?? []).map((t) => [t.Key!, t.Value!]));
export const tagList = (tags: Tags) => Object.entries(tags).map(([Key, Value]) => ({ Key, Value }));

/** EC2's filters as the handlers apply them: tag:KEY and named fields. */
export function matches(filters: { Name?: string; Values?: string[] }[] | undefined, fields: (name: string) => string | string[] | undefined): boolean {
  return (filters ?? []).every((f) => {
    const value = fields(f.Name!);
    const values = Array.isArray(value) ? value : value === undefined ? [] : [value];
    return values.some((v) => (f.Values ?? []).includes(v));
  });
}
