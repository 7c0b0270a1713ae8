/**
 * What an etcd member's boot asks of the cluster and changes in it: whether
 * another member with a quorum answers and which members it lists, the
 * removal and re-addition of a replaced member, waiting for its own quorum,
 * and etcd's users and roles. Membership changes need etcd's root user once
 * auth is on; before that, the member's own certificate suffices.
 */
import type { Etcd3 } from 'etcd3';
import type { TlsFiles } from '../config/schema.js';
import { setUpEtcdAuth, type EtcdAuthSetupOptions } from '../dcs/etcd-auth.js';
import { rootUser } from '../dcs/etcd-auth-plan.js';
import { createEtcdClient } from '../dcs/etcd-client.js';
import { etcdHealthy } from '../dcs/etcd-server.js';
import { describeError, KeelError } from '../errors.js';
import { sleep } from '../util/clock.js';
import type { EtcdClusterMember, EtcdJoin } from './aws-etcd-member.js';

const requestTimeoutMs = 5000;
const notEnabled = (err: unknown): boolean => err instanceof Error && /authentication is not enabled/.test(err.message);

async function using<T>(client: Etcd3, use: (client: Etcd3) => Promise<T>): Promise<T> {
  try {
    return await use(client);
  } finally {
    client.close();
  }
}

/**
 * A client that may change membership: root once auth is on, else whoever the certificate says. Another
 * member may switch auth on meanwhile (the certificate's CN is no etcd user): then root again.
 */
async function withAdmin<T>(endpoints: string[], tls: TlsFiles, rootPassword: string, use: (client: Etcd3) => Promise<T>): Promise<T> {
  const asRoot = () => createEtcdClient(endpoints, requestTimeoutMs, { tls, user: rootUser, password: rootPassword });
  try {
    return await using(asRoot(), use);
  } catch (err) {
    if (!notEnabled(err)) throw err;
  }
  try {
    return await using(createEtcdClient(endpoints, requestTimeoutMs, { tls }), use);
  } catch (err) {
    if (!/user name not found|permission denied/i.test(describeError(err))) throw err;
    return using(asRoot(), use);
  }
}

async function memberList(client: Etcd3): Promise<EtcdClusterMember[]> {
  const answer = await client.cluster.memberList({});
  return (answer.members ?? []).map((m) => ({ id: String(m.ID), name: m.name ?? '', peerUrls: m.peerURLs ?? [], clientUrls: m.clientURLs ?? [] }));
}

/** The member list of the first other member whose /health says a quorum answers; null when none does. */
export async function observeRunningCluster(others: string[], tls: TlsFiles, rootPassword: string): Promise<{ endpoint: string; members: EtcdClusterMember[] } | null> {
  for (const endpoint of others) {
    if (!(await etcdHealthy(endpoint, tls, 2000))) continue;
    try {
      return { endpoint, members: await withAdmin([endpoint], tls, rootPassword, memberList) };
    } catch (err) {
      throw new KeelError('KEEL_ETCD_UNREACHABLE', `etcd at ${endpoint} is healthy but did not list its members: ${describeError(err)}`, {
        hint: "the cluster's etcd-root-password parameter must hold etcd's root password",
        cause: err,
      });
    }
  }
  return null;
}

/** How long an add may be refused as unsafe: etcd wants every voting member connected for its 5 s health interval. */
const addRetryMs = 30_000;

async function addMember(client: Etcd3, peerUrl: string): Promise<void> {
  const deadline = Date.now() + addRetryMs;
  for (;;) {
    if ((await memberList(client)).some((m) => m.peerUrls.includes(peerUrl))) return;
    try {
      await client.cluster.memberAdd({ peerURLs: [peerUrl] });
      return;
    } catch (err) {
      // etcd answers `unhealthy cluster` (gRPC Unavailable) until the remaining members have been connected for 5 s;
      // the client's breaker may then report the endpoint as failing: either way, wait and ask again
      if (!/unhealthy cluster|failed repeatedly|unavailable/i.test(describeError(err)) || Date.now() > deadline) throw err;
      await sleep(1000);
    }
  }
}

/** Removes the replaced member's old entry and adds it again, as decided; the member list that results. */
export async function changeMembership(endpoint: string, tls: TlsFiles, rootPassword: string, join: EtcdJoin, peerUrl: string): Promise<EtcdClusterMember[]> {
  return withAdmin([endpoint], tls, rootPassword, async (client) => {
    if (join.removeId !== null) {
      try {
        await client.cluster.memberRemove({ ID: join.removeId });
      } catch (err) {
        // another boot of this member got there first
        if (!/member not found/i.test(describeError(err))) throw err;
      }
    }
    if (join.add) await addMember(client, peerUrl);
    return memberList(client);
  }).catch((err: unknown) => {
    throw new KeelError('KEEL_ETCD_UNREACHABLE', `could not re-add this member through ${endpoint}: ${describeError(err)}`, { cause: err });
  });
}

/** Resolves once this member's /health says true (it is in a cluster with a quorum); KEEL_TIMEOUT after waitMs. */
export async function waitForQuorum(endpoint: string, tls: TlsFiles, waitMs: number, exited: () => string | null = () => null): Promise<void> {
  const deadline = Date.now() + waitMs;
  while (!(await etcdHealthy(endpoint, tls, 2000))) {
    const gone = exited();
    if (gone !== null) throw new KeelError('KEEL_ETCD_UNREACHABLE', `etcd at ${endpoint} ${gone}`);
    if (Date.now() > deadline) {
      throw new KeelError('KEEL_TIMEOUT', `etcd at ${endpoint} had no quorum within ${Math.round(waitMs / 1000)} s`, {
        hint: 'the other members may still be booting: look at their consoles; this boot can be run again',
      });
    }
    await sleep(500);
  }
}

/**
 * etcd's users and roles as every Keel cluster has them (setUpEtcdAuth). All members may try at once: one
 * that loses a race (a role another just added, auth switched on under it) tries again and finds less to do.
 */
export async function setUpEtcdAuthWithRetries(options: EtcdAuthSetupOptions, attempts = 6): Promise<number> {
  for (let attempt = 1; ; attempt++) {
    try {
      return (await setUpEtcdAuth(options)).length;
    } catch (err) {
      if (attempt >= attempts) throw err;
      options.logger.warn({ attempt }, `etcd auth set-up failed, trying again: ${describeError(err)}`);
      await sleep(500 * attempt + Math.floor(Math.random() * 500));
    }
  }
}
