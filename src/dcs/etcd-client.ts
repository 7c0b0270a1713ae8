/**
 * The etcd3 client as Keel configures it. etcd3's defaults suit long-lived
 * services that can wait; Keel's failover budget cannot, so reconnects are
 * quick and a failed endpoint is skipped for one second, not five.
 */
import { Etcd3, isRecoverableError, type IOptions } from 'etcd3';

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

export function createEtcdClient(endpoints: string[], requestTimeoutMs: number): Etcd3 {
  return new Etcd3({
    hosts: endpoints,
    dialTimeout: requestTimeoutMs,
    // gives up calls that Keel's own timer already abandoned, instead of letting them linger
    defaultCallOptions: (context) => (context.isStream ? {} : { deadline: Date.now() + requestTimeoutMs }),
    faultHandling: { host: quickBreaker, watchBackoff: cappedBackoff(100, 1000) },
  });
}
