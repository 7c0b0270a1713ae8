/**
 * Calls that must not depend on which etcd member answers: lease keep-alives
 * and the agents' read of the cluster. Through the shared client every call
 * goes to a member picked at random; a member cut off from its peers (or
 * from this host, or frozen) never answers, so calls would keep landing on it
 * until its breaker opened: long enough to cost a healthy leader its lease
 * while etcd still has a quorum. Here each member has a client of its own; a
 * call goes first to the member that answered last, and a silent member costs
 * one short attempt before the next one is asked. Only idempotent calls come
 * here: an attempt given up on may still have been carried out.
 */
import type { Etcd3, ILeaseKeepAliveResponse } from 'etcd3';
import { describeError, KeelError, redactSecrets } from '../errors.js';
import type { Logger } from '../util/log.js';
import { createEtcdClient, type EtcdCredentials } from './etcd-client.js';

/** EtcdDcs's bounded call: what (for the error), the request, its timeout, and where it goes (for the error). */
export type BoundedCall = <T>(what: string, run: (signal: AbortSignal) => Promise<T>, timeoutMs: number, where: string) => Promise<T>;

export class MemberRotation {
  /** made on first use */
  private clients: Etcd3[] | null = null;
  /** the member that answered last */
  private from = 0;
  private readonly attemptMs: number;

  constructor(
    private readonly endpoints: string[],
    private credentials: EtcdCredentials,
    requestTimeoutMs: number,
    private readonly log: Logger,
    private readonly call: BoundedCall,
  ) {
    this.attemptMs = Math.max(250, Math.floor(requestTimeoutMs / 2));
  }

  get size(): number {
    return this.endpoints.length;
  }

  /** The first answer of a member, asking one after the other; KEEL_ETCD_UNREACHABLE when none answered. */
  async run<T>(what: string, request: (client: Etcd3, signal: AbortSignal) => Promise<T>): Promise<T> {
    this.clients ??= this.endpoints.map((endpoint) => createEtcdClient([endpoint], this.attemptMs * 2, this.credentials));
    for (let i = 0; i < this.endpoints.length; i++) {
      const index = (this.from + i) % this.endpoints.length;
      const client = this.clients[index]!;
      const where = redactSecrets(this.endpoints[index]!);
      try {
        const answer = await this.call(what, (signal) => request(client, signal), this.attemptMs, where);
        this.from = index;
        return answer;
      } catch (err) {
        // an answer that is an error (a lease etcd does not know...) is the answer
        if (!(err instanceof KeelError) || err.code !== 'KEEL_ETCD_UNREACHABLE') throw err;
        this.log.debug({ err: describeError(err), endpoint: where }, `${what}: no answer; asking the next member`);
      }
    }
    throw new KeelError('KEEL_ETCD_UNREACHABLE', `no etcd member (${redactSecrets(this.endpoints.join(', '))}) answered the ${what}, ${this.attemptMs} ms each`, {
      hint: 'check that a majority of the etcd members run and can be reached from this host',
    });
  }

  close(): void {
    for (const client of this.clients ?? []) client.close();
  }

  /** Drops the member clients; the next call makes new ones with `credentials` (files read again). */
  renew(credentials: EtcdCredentials): Etcd3[] {
    const old = this.clients ?? [];
    this.clients = null;
    this.credentials = credentials;
    return old;
  }
}

/** One keep-alive on a fresh stream: true while etcd still knows the lease. */
export async function keepAliveOnce(client: Etcd3, leaseId: string, signal: AbortSignal): Promise<boolean> {
  const stream = await client.leaseClient.leaseKeepAlive();
  try {
    const res = await new Promise<ILeaseKeepAliveResponse>((resolve, reject) => {
      stream.on('data', resolve);
      stream.on('error', reject);
      stream.on('end', () => reject(new Error('keep-alive stream ended before an answer')));
      signal.addEventListener('abort', () => stream.cancel(), { once: true });
      stream.write({ ID: leaseId });
    });
    // etcd answers TTL 0 for a lease it does not know (expired or revoked)
    return Number(res.TTL) > 0;
  } finally {
    stream.end();
  }
}
