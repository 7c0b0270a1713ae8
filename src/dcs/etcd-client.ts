/**
 * The etcd3 client as Keel configures it. etcd3's defaults suit long-lived
 * services that can wait; Keel's failover budget cannot, so reconnects are
 * quick and a failed endpoint is skipped for one second, not five.
 *
 * Credentials: with `tls` the client verifies etcd's certificate against the
 * given CA and presents its own pair; an etcd started with --client-cert-auth
 * and auth enabled takes the user from that certificate's CN (no password, no
 * token to renew). `user`/`password` log in with etcd's password
 * authentication instead; the token they give wins over the CN.
 */
import { readFileSync } from 'node:fs';
import { Etcd3, isRecoverableError, type IOptions } from 'etcd3';
import type { NodeConfig } from '../config/schema.js';
import { KeelError } from '../errors.js';
import { installFastLongStrings } from './long-strings.js';

installFastLongStrings();

/** How a component proves who it is to etcd: node.yml's etcd.tls, etcd.user and etcd.password. */
export type EtcdCredentials = Pick<NodeConfig['etcd'], 'tls' | 'user' | 'password'>;

/** A problem with the credentials for these endpoints, or null: pure, for a check before anything connects. */
export function etcdCredentialsProblem(endpoints: string[], credentials: EtcdCredentials): string | null {
  if ((credentials.user === undefined) !== (credentials.password === undefined)) return 'an etcd user and password go together';
  const plain = endpoints.filter((endpoint) => endpoint.startsWith('http://'));
  // etcd3 would speak TLS to every endpoint once given a CA: a plain one would fail on every call
  if (credentials.tls !== undefined && plain.length > 0) return `TLS files are given but ${plain.join(', ')} ${plain.length > 1 ? 'are' : 'is'} plain http://`;
  // a password on a plain connection crosses the network in the clear
  if (credentials.password !== undefined && plain.length > 0) return `an etcd password would be sent in the clear to ${plain.join(', ')}`;
  return null;
}

function readPem(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new KeelError('KEEL_TLS_FAILED', `cannot read the etcd ${what} ${path}: ${(err as Error).message}`, { cause: err });
  }
}

/** etcd3's credentials and auth options; the files are read now (a renewed pair counts from the next client). */
function securityOptions(endpoints: string[], credentials: EtcdCredentials): Pick<IOptions, 'credentials' | 'auth'> {
  const problem = etcdCredentialsProblem(endpoints, credentials);
  if (problem !== null) throw new KeelError('KEEL_CONFIG_INVALID', problem, { hint: 'use https:// endpoints with etcd.tls (the CA and this client\'s pair), or neither' });
  const { tls, user, password } = credentials;
  return {
    ...(tls === undefined
      ? {}
      : { credentials: { rootCertificate: readPem(tls.ca, 'CA'), certChain: readPem(tls.cert, 'client certificate'), privateKey: readPem(tls.key, 'client key') } }),
    ...(user === undefined || password === undefined ? {} : { auth: { username: user, password } }),
  };
}

type FaultHandling = NonNullable<IOptions['faultHandling']>;
type HostPolicy = ReturnType<NonNullable<FaultHandling['host']>>;
type WatchBackoff = NonNullable<FaultHandling['watchBackoff']>;

/** Consecutive connection failures after which an endpoint is skipped. */
const failuresToSkip = 3;
/** How long a failing endpoint is skipped before one call may try it again. */
const skipMs = 1000;

class EndpointSkipped extends Error {
  constructor(host: string) {
    super(`etcd endpoint ${host} failed repeatedly; skipped for ${skipMs} ms`);
  }
}

/**
 * A circuit breaker per endpoint, in place of etcd3's default (open for 5 s
 * after 3 failures): with a single endpoint that default leaves an agent blind
 * for 5 s after etcd comes back, long enough to cost a healthy leader its lease.
 * Skipping still matters with several endpoints: a host that drops packets
 * would otherwise eat a whole request timeout for every call routed to it.
 */
function quickBreaker(host: string): HostPolicy {
  let failures = 0;
  let skipUntil = 0;
  const noEvent = () => ({ dispose: () => undefined });
  return {
    _altReturn: undefined as never,
    onSuccess: noEvent,
    onFailure: noEvent,
    async execute(fn, signal) {
      if (Date.now() < skipUntil) throw new EndpointSkipped(host);
      try {
        const result = await fn({ signal: signal ?? new AbortController().signal });
        failures = 0;
        return result;
      } catch (err) {
        if (err instanceof Error && isRecoverableError(err)) {
          failures += 1;
          if (failures >= failuresToSkip) {
            skipUntil = Date.now() + skipMs;
            // after the pause, a single further failure skips the endpoint again
            failures = failuresToSkip - 1;
          }
        }
        throw err;
      }
    },
  };
}

/** Watch reconnect delays: 100 ms doubling to 1 s (etcd3's default grows to 30 s, which hides failovers). */
function cappedBackoff(durationMs: number, maxMs: number): WatchBackoff {
  return { duration: durationMs, next: () => cappedBackoff(Math.min(durationMs * 2, maxMs), maxMs) };
}

export function createEtcdClient(endpoints: string[], requestTimeoutMs: number, credentials: EtcdCredentials = {}): Etcd3 {
  return new Etcd3({
    hosts: endpoints,
    ...securityOptions(endpoints, credentials),
    dialTimeout: requestTimeoutMs,
    // gives up calls that Keel's own timer already abandoned, instead of letting them linger
    defaultCallOptions: (context) => (context.isStream ? {} : { deadline: Date.now() + requestTimeoutMs }),
    faultHandling: { host: quickBreaker, watchBackoff: cappedBackoff(100, 1000) },
  });
}
