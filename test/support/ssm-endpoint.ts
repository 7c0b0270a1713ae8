/**
 * A loopback SSM Parameter Store for the tests: the calls Keel makes
 * (GetParameter, PutParameter, DeleteParameters) in SSM's JSON protocol
 * (awsJson1_1: POST /, X-Amz-Target: AmazonSSM.<Action>), with every request's
 * SigV4 signature verified (ec2-sigv4.ts, service `ssm`), so the real SDK
 * serializes, signs and parses. Each parameter is a file at
 * <dir><parameter name>, the layout the user data's KEEL_BOOT_SECRETS_DIR
 * reads: what the controller writes through SSM is what a test host boots
 * from. SecureString values are kept in clear in those files (a test
 * directory, 0600).
 */
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { dirname, join } from 'node:path';
import { verifySigV4 } from './ec2-sigv4.js';

export const ssmEndpointCredentials = { accessKeyId: 'AKIAKEELLOOPBACK0002', secretAccessKey: 'keel-loopback-ssm-secret-not-a-real-key' } as const;

export type SsmAction = 'GetParameter' | 'PutParameter' | 'DeleteParameters';
const actions: readonly SsmAction[] = ['GetParameter', 'PutParameter', 'DeleteParameters'];

export interface SsmRequestRecord {
  action: string;
  status: number;
  /** the error's __type, or null */
  code: string | null;
  /** the parameter names the request named (never the values) */
  names: string[];
}

class SsmFault extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly status = 400,
  ) {
    super(message);
  }
}

const nameRule = /^(\/[A-Za-z0-9_.-]+)+$/;

export class SsmEndpoint {
  readonly url: string;
  readonly requests: SsmRequestRecord[] = [];
  private readonly types = new Map<string, { type: string; version: number }>();
  private readonly denied = new Set<SsmAction>();

  private constructor(
    private readonly server: Server,
    private readonly dir: string,
    private readonly region: string,
    private readonly credentials: { accessKeyId: string; secretAccessKey: string },
  ) {
    this.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  }

  /** Listens on 127.0.0.1 only; parameters live under `dir`. */
  static async start(options: { dir: string; region: string; port?: number; credentials?: { accessKeyId: string; secretAccessKey: string } }): Promise<SsmEndpoint> {
    let endpoint: SsmEndpoint | null = null;
    const server = createServer((req, res) => {
      if (endpoint === null) res.destroy();
      else endpoint.handle(req, res);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(options.port ?? 0, '127.0.0.1', () => resolve());
    });
    endpoint = new SsmEndpoint(server, options.dir, options.region, options.credentials ?? ssmEndpointCredentials);
    return endpoint;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  /** The action answers AccessDeniedException from now on (or again, with false). */
  deny(action: SsmAction, denied = true): void {
    if (denied) this.denied.add(action);
    else this.denied.delete(action);
  }

  /** A parameter as the test puts it, beside the API (the operator's `keel aws up` in real life). */
  async seed(name: string, value: string, type: 'String' | 'SecureString'): Promise<void> {
    await this.write(name, value, type);
  }

  /** The stored value, or null. */
  async value(name: string): Promise<string | null> {
    return this.types.has(name) ? readFile(this.path(name), 'utf8') : null;
  }

  typeOf(name: string): string | null {
    return this.types.get(name)?.type ?? null;
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const target = String(req.headers['x-amz-target'] ?? '');
      const action = target.startsWith('AmazonSSM.') ? target.slice('AmazonSSM.'.length) : target;
      let names: string[] = [];
      void (async () => {
        let status = 200;
        let code: string | null = null;
        let answer: unknown;
        try {
          const input = this.authenticate(req, body, action);
          names = typeof input.Name === 'string' ? [input.Name] : Array.isArray(input.Names) ? input.Names.map(String) : [];
          answer = await this.answer(action as SsmAction, input);
        } catch (err) {
          const fault = err instanceof SsmFault ? err : new SsmFault('InternalServerError', (err as Error).message, 500);
          status = fault.status;
          code = fault.code;
          answer = { __type: fault.code, message: fault.message };
        }
        this.requests.push({ action, status, code, names });
        const text = JSON.stringify(answer);
        res.writeHead(status, { 'content-type': 'application/x-amz-json-1.1', 'x-amzn-requestid': `req-${this.requests.length}`, 'content-length': Buffer.byteLength(text) });
        res.end(text);
      })();
    });
  }

  private authenticate(req: IncomingMessage, body: Buffer, action: string): Record<string, unknown> {
    const [path = '/', query = ''] = (req.url ?? '/').split('?');
    const auth = verifySigV4({ method: req.method ?? '', path, query, headers: req.headers, body }, { ...this.credentials, region: this.region, service: 'ssm' }, Date.now());
    if (!auth.ok) throw new SsmFault(auth.code === 'SignatureDoesNotMatch' ? 'InvalidSignatureException' : 'UnrecognizedClientException', auth.message);
    if (req.method !== 'POST' || !String(req.headers['content-type'] ?? '').startsWith('application/x-amz-json-1.1')) throw new SsmFault('SerializationException', 'POST application/x-amz-json-1.1 only');
    if (!(actions as readonly string[]).includes(action)) throw new SsmFault('UnknownOperationException', `unknown operation ${action}`);
    if (this.denied.has(action as SsmAction)) throw new SsmFault('AccessDeniedException', `User: arn:aws:sts::123456789012:assumed-role/keel-test/i-0 is not authorized to perform: ssm:${action}`);
    return JSON.parse(body.toString('utf8') || '{}') as Record<string, unknown>;
  }

  private async answer(action: SsmAction, input: Record<string, unknown>): Promise<unknown> {
    switch (action) {
      case 'GetParameter': {
        const name = this.nameOf(input.Name);
        const meta = this.types.get(name);
        if (meta === undefined) throw new SsmFault('ParameterNotFound', `parameter ${name} not found`);
        const value = await readFile(this.path(name), 'utf8');
        // a SecureString read without decryption comes back encrypted: never the clear value
        const shown = meta.type === 'SecureString' && input.WithDecryption !== true ? Buffer.from(value).toString('base64') : value;
        return { Parameter: { Name: name, Type: meta.type, Value: shown, Version: meta.version, DataType: 'text', ARN: `arn:aws:ssm:${this.region}:123456789012:parameter${name}`, LastModifiedDate: Date.now() / 1000 } };
      }
      case 'PutParameter': {
        const name = this.nameOf(input.Name);
        const type = String(input.Type ?? 'String');
        if (!['String', 'SecureString', 'StringList'].includes(type)) throw new SsmFault('ValidationException', `unknown type ${type}`);
        if (typeof input.Value !== 'string' || input.Value === '') throw new SsmFault('ValidationException', 'Value must not be empty');
        if (Buffer.byteLength(input.Value) > 4096) throw new SsmFault('ValidationException', 'a Standard parameter holds at most 4 KB');
        if (this.types.has(name) && input.Overwrite !== true) throw new SsmFault('ParameterAlreadyExists', `parameter ${name} already exists`);
        const version = await this.write(name, input.Value, type);
        return { Version: version, Tier: 'Standard' };
      }
      case 'DeleteParameters': {
        const names = Array.isArray(input.Names) ? input.Names.map((n) => this.nameOf(n)) : [];
        if (names.length === 0 || names.length > 10) throw new SsmFault('ValidationException', 'Names holds 1 to 10 names');
        const deleted = names.filter((n) => this.types.has(n));
        for (const n of deleted) {
          this.types.delete(n);
          await rm(this.path(n), { force: true });
        }
        return { DeletedParameters: deleted, InvalidParameters: names.filter((n) => !deleted.includes(n)) };
      }
    }
  }

  private nameOf(value: unknown): string {
    if (typeof value !== 'string' || !nameRule.test(value)) throw new SsmFault('ValidationException', `invalid parameter name ${JSON.stringify(value)}`);
    return value;
  }

  private path(name: string): string {
    return join(this.dir, name);
  }

  private async write(name: string, value: string, type: string): Promise<number> {
    const path = this.path(name);
    await mkdir(dirname(path), { recursive: true });
    // a reader (the booting host) sees the old value or the new one, never half of it
    await writeFile(`${path}.tmp`, value, { mode: 0o600 });
    await rename(`${path}.tmp`, path);
    const version = (this.types.get(name)?.version ?? 0) + 1;
    this.types.set(name, { type, version });
    return version;
  }
}
