/**
 * A loopback EC2 for tests: an HTTP server on 127.0.0.1 that speaks the EC2
 * Query API for exactly the calls the aws provider makes (RunInstances,
 * DescribeInstances, TerminateInstances, StopInstances), so the real SDK,
 * pointed at it through the provider's `endpoint`, serializes, signs, sends
 * and parses as it would against AWS. Nothing here reaches AWS.
 *
 * Every request must carry a SigV4 signature by the endpoint's (dummy) key,
 * checked in full (ec2-sigv4.ts); anything else is refused as EC2 refuses it.
 * Instances move through the state table of ec2-fleet.ts on timers, and a
 * harness can back each with real processes through the lifecycle hooks
 * (ec2-netns.ts does, with network namespaces). Tests switch a zone's
 * capacity off, deny an action, or make the next calls of an action fail.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { isKnownFilter, matchesFilter, nextFreeAddress, nextState, type Ec2Event, type Ec2Filter, type Ec2Instance, type Ec2StateName, type Ec2Tag, type Ec2Volume } from './ec2-fleet.js';
import { verifySigV4 } from './ec2-sigv4.js';
import {
  Ec2Fault,
  ec2ApiVersion,
  errorXml,
  list,
  parseQueryForm,
  reservationXml,
  responseXml,
  stateChangeXml,
  struct,
  text,
  texts,
  type Ec2ErrorCode,
  type QueryValue,
} from './ec2-wire.js';

export type Ec2Action = 'RunInstances' | 'DescribeInstances' | 'TerminateInstances' | 'StopInstances';
const actions: readonly Ec2Action[] = ['RunInstances', 'DescribeInstances', 'TerminateInstances', 'StopInstances'];

/**
 * What backs the instances. The hooks of one instance run one after another,
 * in order (a stop waits for its run hook); a hook that throws is recorded in
 * `hookErrors`. A stop or termination completes only once its hook has
 * finished without error: the endpoint never reports `stopped` while the
 * backing may still run.
 */
export interface Ec2Lifecycle {
  onRun?(instance: Readonly<Ec2Instance>, userData: string): Promise<void> | void;
  onStop?(instance: Readonly<Ec2Instance>): Promise<void> | void;
  onTerminate?(instance: Readonly<Ec2Instance>): Promise<void> | void;
}

export interface Ec2EndpointOptions {
  /** 0 (default) for any free port */
  port?: number;
  region?: string;
  /** the only key the endpoint accepts; default ec2EndpointCredentials */
  credentials?: { accessKeyId: string; secretAccessKey: string };
  /** subnet id -> its zone and range; RunInstances in another subnet is InvalidSubnetID.NotFound */
  subnets: Record<string, { zone: string; cidr: string }>;
  /** the AMIs that exist; any well-formed id when absent */
  imageIds?: string[];
  /** how long pending, stopping and shutting-down last (each at least this, and until its hook ends); default 100 ms each */
  delaysMs?: { boot?: number; stop?: number; terminate?: number };
  /** how long a terminated instance stays visible (EC2: about an hour); default for ever */
  terminatedVisibleMs?: number;
  /**
   * EC2 answers DescribeInstances without MaxResults in one page; a number
   * here makes the endpoint page anyway, so a caller's page loop is
   * exercised by callers that never set MaxResults
   */
  pageSizeWithoutMaxResults?: number;
  lifecycle?: Ec2Lifecycle;
}

/** The dummy key of the tests: give it to the SDK through AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY. */
export const ec2EndpointCredentials = { accessKeyId: 'AKIAKEELLOOPBACK0001', secretAccessKey: 'keel-loopback-secret-not-a-real-key' } as const;
const accountId = '123456789012';
const vpcId = 'vpc-0keel00000000000';
const maxBodyBytes = 1024 * 1024;
const userDataMaxBytes = 16 * 1024;
const maxInstancesPerRun = 20;

export interface Ec2RequestRecord {
  action: string;
  status: number;
  /** the error code answered, or null for a success */
  code: string | null;
  /** the request's parameters, as parsed (UserData as sent: base64) */
  params: Record<string, QueryValue>;
}

interface Reservation {
  reservationId: string;
  instanceIds: string[];
}

interface IdempotentRun {
  fingerprint: string;
  reservation: Reservation;
}

interface Pagination {
  instanceIds: string[];
  /** which request it continues: the same filters are expected with the token */
  fingerprint: string;
}

export class Ec2Endpoint {
  readonly url: string;
  readonly port: number;
  /** every request answered, in order (signature failures included) */
  readonly requests: Ec2RequestRecord[] = [];
  readonly hookErrors: { instanceId: string; hook: keyof Ec2Lifecycle; error: Error }[] = [];
  private readonly region: string;
  private readonly credentials: { accessKeyId: string; secretAccessKey: string };
  private readonly delays: { boot: number; stop: number; terminate: number };
  private readonly fleet = new Map<string, Ec2Instance>();
  private readonly reservations = new Map<string, Reservation>();
  private readonly clientTokens = new Map<string, IdempotentRun>();
  private readonly pages = new Map<string, Pagination>();
  private readonly zoneCapacity = new Map<string, 'insufficient' | 'unsupported'>();
  private readonly denied = new Set<Ec2Action>();
  private readonly injected: { action: Ec2Action; code: Ec2ErrorCode; message: string }[] = [];
  private readonly answersToLose: Ec2Action[] = [];
  private readonly hookChains = new Map<string, Promise<boolean>>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private closed = false;

  private constructor(
    private readonly server: Server,
    private readonly options: Ec2EndpointOptions,
  ) {
    this.port = (server.address() as AddressInfo).port;
    this.url = `http://127.0.0.1:${this.port}`;
    this.region = options.region ?? 'eu-west-1';
    this.credentials = options.credentials ?? ec2EndpointCredentials;
    this.delays = { boot: options.delaysMs?.boot ?? 100, stop: options.delaysMs?.stop ?? 100, terminate: options.delaysMs?.terminate ?? 100 };
  }

  /** Listens on 127.0.0.1 only. */
  static async start(options: Ec2EndpointOptions): Promise<Ec2Endpoint> {
    for (const [subnetId, subnet] of Object.entries(options.subnets)) nextFreeAddress(subnet.cidr, new Set()) ?? fail(`subnet ${subnetId} has no address`);
    let endpoint: Ec2Endpoint | null = null;
    const server = createServer((req, res) => {
      if (endpoint === null) res.destroy();
      else endpoint.handle(req, res);
    });
    // EC2 is behind a load balancer that keeps connections; the SDK's agent reuses them
    server.keepAliveTimeout = 5000;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(options.port ?? 0, '127.0.0.1', () => resolve());
    });
    endpoint = new Ec2Endpoint(server, options);
    return endpoint;
  }

  /** Stops answering, clears the timers, waits for hooks in progress. */
  async close(): Promise<void> {
    this.closed = true;
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    await Promise.allSettled([...this.hookChains.values()]);
  }

  /** A zone that cannot launch: InsufficientInstanceCapacity (500) or Unsupported (400); 'available' again. */
  setCapacity(zone: string, capacity: 'available' | 'insufficient' | 'unsupported'): void {
    if (capacity === 'available') this.zoneCapacity.delete(zone);
    else this.zoneCapacity.set(zone, capacity);
  }

  /** The caller's role may not call `action`: UnauthorizedOperation (403) until allow(). */
  deny(action: Ec2Action): void {
    this.denied.add(action);
  }

  allow(action: Ec2Action): void {
    this.denied.delete(action);
  }

  /** The next `times` calls of `action` fail with `code` (after authentication, before anything else). */
  failNext(action: Ec2Action, code: Ec2ErrorCode, times = 1, message = `${code} (injected by the test)`): void {
    for (let i = 0; i < times; i++) this.injected.push({ action, code, message });
  }

  /**
   * The next call of `action` is carried out but its answer is lost (the
   * connection is reset), as when a response times out on its way back: the
   * SDK retries, and only the ClientToken keeps a RunInstances from launching twice.
   */
  loseNextAnswer(action: Ec2Action): void {
    this.answersToLose.push(action);
  }

  /** Copies of every instance the endpoint knows (terminated ones too). */
  instances(): Ec2Instance[] {
    return [...this.fleet.values()].map((i) => structuredClone(i));
  }

  instance(instanceId: string): Ec2Instance | undefined {
    const found = this.fleet.get(instanceId);
    return found === undefined ? undefined : structuredClone(found);
  }

  /** Resolves once every hook started so far has ended. */
  async settled(): Promise<void> {
    await Promise.allSettled([...this.hookChains.values()]);
  }

  calls(action: string): Ec2RequestRecord[] {
    return this.requests.filter((r) => r.action === action);
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > maxBodyBytes) {
        res.writeHead(413).end();
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      if (res.writableEnded) return;
      const body = Buffer.concat(chunks);
      const params = parseQueryForm(body.toString('utf8'));
      const action = text(params, 'Action') ?? '';
      const requestId = randomUUID();
      let status = 200;
      let code: string | null = null;
      let xml: string;
      try {
        xml = responseXml(action, requestId, this.answer(req, body, params, action));
      } catch (err) {
        const fault = err instanceof Ec2Fault ? err : new Ec2Fault('InternalError', `An internal error has occurred (${(err as Error).message})`);
        status = fault.status;
        code = fault.code;
        xml = errorXml(fault, requestId);
      }
      const lost = this.answersToLose.indexOf(action as Ec2Action);
      if (lost >= 0 && code === null) {
        this.answersToLose.splice(lost, 1);
        this.requests.push({ action, status: 0, code: 'ConnectionReset', params });
        res.socket?.destroy();
        return;
      }
      this.requests.push({ action, status, code, params });
      res.writeHead(status, { 'content-type': 'text/xml;charset=UTF-8', 'x-amzn-requestid': requestId, 'content-length': Buffer.byteLength(xml) });
      res.end(xml);
    });
  }

  /** One request's answer body, or an Ec2Fault. Authentication comes before anything the request asks. */
  private answer(req: IncomingMessage, body: Buffer, params: Record<string, QueryValue>, action: string): Record<string, unknown> {
    const [path = '/', query = ''] = (req.url ?? '/').split('?');
    const auth = verifySigV4({ method: req.method ?? '', path, query, headers: req.headers, body }, { ...this.credentials, region: this.region, service: 'ec2' }, Date.now());
    if (!auth.ok) throw new Ec2Fault(auth.code, auth.message);
    if (req.method !== 'POST') throw new Ec2Fault('InvalidAction', `${req.method} is not supported here: the SDK POSTs`);
    if (!(actions as readonly string[]).includes(action)) throw new Ec2Fault('InvalidAction', `The action ${action || '(none)'} is not valid for this web service.`);
    const known = action as Ec2Action;
    if (text(params, 'Version') !== ec2ApiVersion) throw new Ec2Fault('NoSuchVersion', `The requested version (${text(params, 'Version') ?? 'none'}) is not valid.`);
    if (this.denied.has(known)) {
      const encoded = randomBytes(48).toString('base64url');
      throw new Ec2Fault('UnauthorizedOperation', `You are not authorized to perform this operation. User: arn:aws:sts::${accountId}:assumed-role/keel-controller/test is not authorized to perform: ec2:${known} because no identity-based policy allows the ec2:${known} action. Encoded authorization failure message: ${encoded}`);
    }
    const at = this.injected.findIndex((f) => f.action === known);
    if (at >= 0) {
      const [fault] = this.injected.splice(at, 1);
      throw new Ec2Fault(fault!.code, fault!.message);
    }
    this.forgetOldTerminated();
    switch (known) {
      case 'RunInstances':
        return this.runInstances(params);
      case 'DescribeInstances':
        return this.describeInstances(params);
      case 'TerminateInstances':
        return this.changeStates(params, 'terminate');
      case 'StopInstances':
        return this.changeStates(params, 'stop');
    }
  }

  private runInstances(params: Record<string, QueryValue>): Record<string, unknown> {
    const imageId = required(params, 'ImageId');
    if (!/^ami-[0-9a-f]{8,17}$/.test(imageId)) throw new Ec2Fault('InvalidAMIID.Malformed', `Invalid id: "${imageId}" (expecting "ami-...")`);
    if (this.options.imageIds !== undefined && !this.options.imageIds.includes(imageId)) throw new Ec2Fault('InvalidAMIID.NotFound', `The image id '[${imageId}]' does not exist`);
    const instanceType = required(params, 'InstanceType');
    const minCount = count(params, 'MinCount');
    const maxCount = count(params, 'MaxCount');
    if (minCount > maxCount) throw new Ec2Fault('InvalidParameterValue', 'MinCount must be less than or equal to MaxCount');
    if (maxCount > maxInstancesPerRun) throw new Ec2Fault('InvalidParameterValue', `this endpoint launches at most ${maxInstancesPerRun} instances per call`);
    // without a default VPC, EC2 wants the subnet
    const subnetId = required(params, 'SubnetId');
    const subnet = this.options.subnets[subnetId];
    if (subnet === undefined) throw new Ec2Fault('InvalidSubnetID.NotFound', `The subnet ID '${subnetId}' does not exist`);
    const userData = decodeUserData(text(params, 'UserData'));
    const tagsByResource = tagSpecifications(params);
    const clientToken = text(params, 'ClientToken') ?? null;
    if (clientToken !== null && clientToken.length > 64) throw new Ec2Fault('InvalidParameterValue', 'ClientToken is longer than 64 characters');
    // the same token with the same request is the same launch: EC2 answers with what that launch made
    const fingerprint = JSON.stringify({ ...params, ClientToken: undefined });
    if (clientToken !== null) {
      const earlier = this.clientTokens.get(clientToken);
      if (earlier !== undefined) {
        if (earlier.fingerprint !== fingerprint) throw new Ec2Fault('IdempotentParameterMismatch', `The client token '${clientToken}' was used for another request`);
        return this.reservationBody(earlier.reservation);
      }
    }
    const capacity = this.zoneCapacity.get(subnet.zone);
    if (capacity === 'insufficient') {
      const others = [...new Set(Object.values(this.options.subnets).map((s) => s.zone))].filter((z) => z !== subnet.zone && !this.zoneCapacity.has(z));
      throw new Ec2Fault(
        'InsufficientInstanceCapacity',
        `We currently do not have sufficient ${instanceType} capacity in the Availability Zone you requested (${subnet.zone}). Our system will be working on provisioning additional capacity. You can currently get ${instanceType} capacity by not specifying an Availability Zone in your request or choosing ${others.join(', ')}.`,
      );
    }
    if (capacity === 'unsupported') {
      throw new Ec2Fault('Unsupported', `Your requested instance type (${instanceType}) is not supported in your requested Availability Zone (${subnet.zone}).`);
    }
    const taken = new Set([...this.fleet.values()].filter((i) => i.subnetId === subnetId && i.state !== 'terminated').map((i) => i.privateIpAddress));
    const addresses: string[] = [];
    for (let i = 0; i < maxCount; i++) {
      const address = nextFreeAddress(subnet.cidr, taken);
      if (address === null) break;
      taken.add(address);
      addresses.push(address);
    }
    if (addresses.length < minCount) throw new Ec2Fault('InsufficientFreeAddressesInSubnet', `There are not enough free addresses in subnet '${subnetId}' to satisfy the requested number of instances.`);
    const reservation: Reservation = { reservationId: `r-0${randomBytes(8).toString('hex')}`, instanceIds: [] };
    const profile = struct(params, 'IamInstanceProfile');
    const metadata = struct(params, 'MetadataOptions');
    for (const address of addresses) {
      const instance: Ec2Instance = {
        instanceId: `i-0${randomBytes(8).toString('hex')}`,
        reservationId: reservation.reservationId,
        imageId,
        instanceType,
        subnetId,
        vpcId,
        zone: subnet.zone,
        privateIpAddress: address,
        state: 'pending',
        stateReason: null,
        launchTime: new Date(),
        clientToken,
        tags: tagsByResource.instance,
        securityGroupIds: texts(params, 'SecurityGroupId'),
        iamInstanceProfile: text(profile, 'Name') === undefined && text(profile, 'Arn') === undefined ? null : { name: text(profile, 'Name'), arn: text(profile, 'Arn') },
        metadataOptions: {
          httpTokens: text(metadata, 'HttpTokens') ?? 'optional',
          httpEndpoint: text(metadata, 'HttpEndpoint') ?? 'enabled',
          httpPutResponseHopLimit: Number(text(metadata, 'HttpPutResponseHopLimit') ?? 1),
        },
        volumes: blockDevices(params, tagsByResource.volume),
        userData,
        terminatedAtMs: null,
      };
      this.fleet.set(instance.instanceId, instance);
      reservation.instanceIds.push(instance.instanceId);
      this.startTransition(instance, 'booted', this.delays.boot, 'onRun', false);
    }
    this.reservations.set(reservation.reservationId, reservation);
    if (clientToken !== null) this.clientTokens.set(clientToken, { fingerprint, reservation });
    return this.reservationBody(reservation);
  }

  private reservationBody(reservation: Reservation): Record<string, unknown> {
    const instances = reservation.instanceIds.flatMap((id) => this.fleet.get(id) ?? []);
    return reservationXml(reservation.reservationId, accountId, instances, this.region);
  }

  private describeInstances(params: Record<string, QueryValue>): Record<string, unknown> {
    const instanceIds = texts(params, 'InstanceId');
    const filters: Ec2Filter[] = list(params, 'Filter').map((f) => ({ name: text(f, 'Name') ?? '', values: texts(f, 'Value') }));
    for (const f of filters) if (!isKnownFilter(f.name)) throw new Ec2Fault('InvalidParameterValue', `The filter '${f.name}' is invalid`);
    const maxResultsText = text(params, 'MaxResults');
    const token = text(params, 'NextToken');
    if (maxResultsText !== undefined && instanceIds.length > 0) throw new Ec2Fault('InvalidParameterCombination', 'The parameter instancesSet cannot be used with the parameter maxResults');
    const maxResults = maxResultsText === undefined ? this.options.pageSizeWithoutMaxResults ?? Infinity : Number(maxResultsText);
    if (maxResultsText !== undefined && (!Number.isInteger(maxResults) || maxResults < 5 || maxResults > 1000)) {
      throw new Ec2Fault('InvalidParameterValue', `Value ( ${maxResultsText} ) for parameter maxResults is invalid. Expecting a value between 5 and 1000.`);
    }
    const fingerprint = JSON.stringify({ instanceIds, filters, maxResults: maxResultsText });
    let matching: string[];
    if (token !== undefined) {
      const page = this.pages.get(token);
      if (page === undefined || page.fingerprint !== fingerprint) throw new Ec2Fault('InvalidPaginationToken', 'The specified pagination token is not valid or is expired.');
      this.pages.delete(token);
      matching = page.instanceIds;
    } else {
      for (const id of instanceIds) if (!/^i-[0-9a-f]{8,17}$/.test(id)) throw new Ec2Fault('InvalidInstanceID.Malformed', `Invalid id: "${id}"`);
      const missing = instanceIds.filter((id) => !this.fleet.has(id));
      if (missing.length > 0) throw new Ec2Fault('InvalidInstanceID.NotFound', `The instance ID${missing.length > 1 ? 's' : ''} '${missing.join(', ')}' do${missing.length > 1 ? '' : 'es'} not exist`);
      matching = [...this.fleet.values()]
        .filter((i) => (instanceIds.length === 0 || instanceIds.includes(i.instanceId)) && filters.every((f) => matchesFilter(i, f)))
        .map((i) => i.instanceId);
    }
    const pageIds = matching.slice(0, maxResults);
    const rest = matching.slice(pageIds.length);
    let nextToken: string | undefined;
    if (rest.length > 0) {
      nextToken = randomBytes(24).toString('base64url');
      this.pages.set(nextToken, { instanceIds: rest, fingerprint });
    }
    // a page shows each instance as it is now, grouped by the launch that made it
    const byReservation = new Map<string, Ec2Instance[]>();
    for (const id of pageIds) {
      const instance = this.fleet.get(id);
      if (instance === undefined) continue;
      byReservation.set(instance.reservationId, [...(byReservation.get(instance.reservationId) ?? []), instance]);
    }
    return {
      reservationSet: { item: [...byReservation].map(([reservationId, instances]) => reservationXml(reservationId, accountId, instances, this.region)) },
      ...(nextToken === undefined ? {} : { nextToken }),
    };
  }

  /** TerminateInstances and StopInstances: every id must exist and be able to move, or nothing moves. */
  private changeStates(params: Record<string, QueryValue>, event: 'stop' | 'terminate'): Record<string, unknown> {
    const ids = texts(params, 'InstanceId');
    if (ids.length === 0) throw new Ec2Fault('MissingParameter', 'The request must contain the parameter InstanceId');
    for (const id of ids) if (!/^i-[0-9a-f]{8,17}$/.test(id)) throw new Ec2Fault('InvalidInstanceID.Malformed', `Invalid id: "${id}"`);
    const missing = ids.filter((id) => !this.fleet.has(id));
    if (missing.length > 0) throw new Ec2Fault('InvalidInstanceID.NotFound', `The instance ID '${missing.join(', ')}' does not exist`);
    const instances = ids.map((id) => this.fleet.get(id)!);
    for (const instance of instances) {
      if (nextState(instance.state, event) === null) {
        throw new Ec2Fault('IncorrectInstanceState', `The instance '${instance.instanceId}' is not in a state from which it can be ${event === 'stop' ? 'stopped' : 'terminated'}.`);
      }
    }
    const changes = instances.map((instance) => {
      const previous = instance.state;
      const current = nextState(previous, event)!;
      if (current !== previous) {
        instance.state = current;
        const forced = event === 'stop' && text(params, 'Force') === 'true';
        instance.stateReason = { code: 'Client.UserInitiatedShutdown', message: `Client.UserInitiatedShutdown: User initiated shutdown${forced ? ' (forced)' : ''}` };
        if (event === 'stop') this.startTransition(instance, 'halted', this.delays.stop, 'onStop', true);
        else this.startTransition(instance, 'gone', this.delays.terminate, 'onTerminate', true);
      }
      return { instanceId: instance.instanceId, previous, current };
    });
    return stateChangeXml(changes);
  }

  /**
   * Moves the instance by `event` once `delayMs` has passed and, when
   * `afterHook`, once its hook has ended well; the hook waits for the ones
   * before it. A transition another request made meanwhile wins: the table
   * has no pair for a late event.
   */
  private startTransition(instance: Ec2Instance, event: Ec2Event, delayMs: number, hook: keyof Ec2Lifecycle, afterHook: boolean): void {
    const id = instance.instanceId;
    const snapshot = structuredClone(instance);
    const previous = this.hookChains.get(id) ?? Promise.resolve(true);
    const hookDone = previous.then(async () => {
      try {
        const lifecycle = this.options.lifecycle;
        if (hook === 'onRun') await lifecycle?.onRun?.(snapshot, snapshot.userData);
        else await lifecycle?.[hook]?.(snapshot);
        return true;
      } catch (err) {
        this.hookErrors.push({ instanceId: id, hook, error: err instanceof Error ? err : new Error(String(err)) });
        return false;
      }
    });
    this.hookChains.set(id, hookDone);
    const delay = new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.timers.delete(timer);
        resolve();
      }, delayMs);
      this.timers.add(timer);
    });
    void Promise.all([afterHook ? hookDone : Promise.resolve(true), delay]).then(([hookOk]) => {
      if (this.closed || !hookOk) return;
      const current = this.fleet.get(id);
      if (current === undefined) return;
      const to = nextState(current.state, event);
      if (to === null) return;
      current.state = to;
      if (to === 'stopped') current.stateReason = { code: 'Client.UserInitiatedShutdown', message: 'Client.UserInitiatedShutdown: User initiated shutdown' };
      if (to === 'terminated') {
        current.terminatedAtMs = Date.now();
        current.stateReason = { code: 'Client.UserInitiatedShutdown', message: 'Client.UserInitiatedShutdown: User initiated shutdown' };
      }
    });
  }

  private forgetOldTerminated(): void {
    const visibleMs = this.options.terminatedVisibleMs;
    if (visibleMs === undefined) return;
    for (const [id, instance] of this.fleet) {
      if (instance.terminatedAtMs !== null && Date.now() - instance.terminatedAtMs > visibleMs) this.fleet.delete(id);
    }
  }
}

function fail(message: string): never {
  throw new RangeError(message);
}

function missing(name: string): never {
  throw new Ec2Fault('MissingParameter', `The request must contain the parameter ${name}`);
}

function required(params: Record<string, QueryValue>, name: string): string {
  const value = text(params, name);
  return value === undefined || value === '' ? missing(name) : value;
}

function count(params: Record<string, QueryValue>, name: string): number {
  const value = Number(required(params, name));
  if (!Number.isInteger(value) || value < 1) throw new Ec2Fault('InvalidParameterValue', `Value (${text(params, name)}) for parameter ${name} is invalid. Expecting a positive integer.`);
  return value;
}

function decodeUserData(encoded: string | undefined): string {
  if (encoded === undefined) return '';
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(encoded) || encoded.length % 4 !== 0) throw new Ec2Fault('InvalidParameterValue', 'Invalid BASE64 encoding of user data.');
  const decoded = Buffer.from(encoded, 'base64');
  if (decoded.length > userDataMaxBytes) throw new Ec2Fault('InvalidParameterValue', `User data is limited to ${userDataMaxBytes} bytes`);
  return decoded.toString('utf8');
}

/** TagSpecification.N.{ResourceType, Tag.M.{Key, Value}} per resource type. */
function tagSpecifications(params: Record<string, QueryValue>): { instance: Ec2Tag[]; volume: Ec2Tag[] } {
  const byResource = { instance: [] as Ec2Tag[], volume: [] as Ec2Tag[] };
  for (const spec of list(params, 'TagSpecification')) {
    const resource = text(spec, 'ResourceType');
    if (resource !== 'instance' && resource !== 'volume') throw new Ec2Fault('InvalidParameterValue', `'${resource ?? ''}' is not a valid taggable resource type for this operation.`);
    for (const tag of list(spec, 'Tag')) {
      const key = text(tag, 'Key') ?? '';
      if (key === '' || key.length > 128 || key.toLowerCase().startsWith('aws:')) throw new Ec2Fault('InvalidParameterValue', `Tag key '${key}' is invalid`);
      byResource[resource].push({ key, value: text(tag, 'Value') ?? '' });
    }
  }
  return byResource;
}

/** BlockDeviceMapping.N.{DeviceName, Ebs.{VolumeType, VolumeSize, Encrypted, DeleteOnTermination}} as volumes. */
function blockDevices(params: Record<string, QueryValue>, tags: Ec2Tag[]): Ec2Volume[] {
  return list(params, 'BlockDeviceMapping').map((mapping) => {
    const ebs = struct(mapping, 'Ebs');
    const sizeGiB = Number(text(ebs, 'VolumeSize') ?? 8);
    const volumeType = text(ebs, 'VolumeType') ?? 'gp2';
    if (!Number.isInteger(sizeGiB) || sizeGiB < 1 || sizeGiB > 16384) throw new Ec2Fault('InvalidParameterValue', `Volume of ${text(ebs, 'VolumeSize')}GiB is out of range for ${volumeType}`);
    return {
      deviceName: text(mapping, 'DeviceName') ?? missing('BlockDeviceMapping.DeviceName'),
      volumeId: `vol-0${randomBytes(8).toString('hex')}`,
      volumeType,
      sizeGiB,
      encrypted: text(ebs, 'Encrypted') === 'true',
      deleteOnTermination: text(ebs, 'DeleteOnTermination') !== 'false',
      tags,
    };
  });
}

export type { Ec2Instance, Ec2StateName };
