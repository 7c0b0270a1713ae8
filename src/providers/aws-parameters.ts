/**
 * The SSM parameters of one cluster on AWS, by name: who reads each one, and
 * what its value is made of (a random password, the CA, a pair the CA
 * issues), so that `keel aws plan` can list them and `keel aws up` can make
 * the missing ones. Pure: names and recipes, never a value.
 */
import { secretParameters, type AwsNodeOptions } from './aws-userdata.js';
import { parameterPrefixOf, type AwsDeployment } from './aws-deployment.js';
import { etcdUsers } from './local-layout.js';

/**
 * Which instances read a parameter: the nodes at boot, the etcd members at boot, or the controller (which runs
 * on the etcd members, so their role) when it launches a node and issues that node's certificate and token.
 */
export type ParameterReader = 'nodes' | 'etcd' | 'controller';

/** What a cluster-wide parameter's value is: `keel aws up` makes it from this when the parameter is missing. */
export type ParameterRecipe =
  /** 32 random bytes, base64url: a password, or the key API tokens derive from */
  | { kind: 'random' }
  | { kind: 'ca'; part: 'key' | 'cert' }
  /** one half of a pair the cluster CA issues; `pair` names the pair, the same for both halves */
  | { kind: 'leaf'; part: 'key' | 'cert'; pair: string; commonName: string; names: string[]; usage: 'client' | 'both' }
  /** a parameter the nodes read that nothing here knows how to make: `up` refuses to guess */
  | { kind: 'unknown' };

export interface ParameterSpec {
  name: string;
  readBy: ParameterReader;
  holds: string;
  recipe: ParameterRecipe;
}

/** Passwords, tokens and keys: SecureString; certificates and ids: String. */
export const secure = (name: string): boolean => /(password|token|key)$/.test(name);

/** The node's own parameters, by the names its user data reads (aws-userdata.ts). */
export function nodeParameterNames(d: AwsDeployment, node: string): { clusterWide: string[]; own: string[] } {
  // secretParameters reads only the prefix, cluster, name and router of the options
  const byKey = secretParameters({ parameterPrefix: parameterPrefixOf(d), cluster: d.cluster, name: node } as AwsNodeOptions);
  const all = Object.values(byKey);
  const own = `${parameterPrefixOf(d)}/nodes/${node}/`;
  return { clusterWide: all.filter((n) => !n.startsWith(own)), own: all.filter((n) => n.startsWith(own)) };
}

/** The recipe of a cluster-wide parameter the nodes read, by the last part of its name. */
function nodeRecipe(name: string): ParameterRecipe {
  if (name.endsWith('/tls/ca.crt')) return { kind: 'ca', part: 'cert' };
  if (name.endsWith('-password')) return { kind: 'random' };
  return { kind: 'unknown' };
}

function pair(base: string, readBy: ParameterReader, pairName: string, request: Omit<Extract<ParameterRecipe, { kind: 'leaf' }>, 'kind' | 'part' | 'pair'>, holds: { key: string; cert: string }): ParameterSpec[] {
  // every key before its certificate: a run cut between the two leaves a key, for which a certificate can still be
  // issued, never a certificate whose key is lost (parameters are written once, never overwritten)
  return [
    { name: `${base}.key`, readBy, holds: holds.key, recipe: { kind: 'leaf', part: 'key', pair: pairName, ...request } },
    { name: `${base}.crt`, readBy, holds: holds.cert, recipe: { kind: 'leaf', part: 'cert', pair: pairName, ...request } },
  ];
}

/**
 * Parameters of the whole cluster: what the nodes read, what etcd reads, and what the controller reads to give a
 * node it launches its certificate (the CA's key) and its API token (the key tokens derive from). No node reads those.
 * The CA's key comes first, for the reason a pair's key comes before its certificate.
 */
export function clusterParameters(d: AwsDeployment): ParameterSpec[] {
  const prefix = parameterPrefixOf(d);
  const users = etcdUsers(d.cluster);
  const forNodes = nodeParameterNames(d, 'node1').clusterWide.map((name): ParameterSpec => ({ name, readBy: 'nodes', holds: holdsOf(name), recipe: nodeRecipe(name) }));
  return [
    { name: `${prefix}/tls/ca.key`, readBy: 'controller', holds: "the cluster CA's key: issues every certificate", recipe: { kind: 'ca', part: 'key' } },
    ...forNodes,
    ...pair(`${prefix}/router/tls/router`, 'nodes', 'router', { commonName: users.router, names: [], usage: 'client' }, {
      key: "the router's etcd client key (a node or host that runs `keel router`)",
      cert: "the router's etcd client certificate",
    }),
    { name: `${prefix}/etcd-root-password`, readBy: 'etcd', holds: "etcd's root user (the auth set-up)", recipe: { kind: 'random' } },
    ...pair(`${prefix}/controller/tls/controller`, 'etcd', 'controller', { commonName: users.controller, names: [], usage: 'client' }, {
      key: "the controller's etcd client key",
      cert: "the controller's etcd client certificate",
    }),
    ...d.etcd.members.flatMap((m) =>
      // server and peer: etcd presents it to clients and to the other members, and shows it as a client to them
      pair(`${prefix}/etcd/${m.name}/tls/server`, 'etcd', m.name, { commonName: `${d.cluster}-${m.name}`, names: [m.address, '127.0.0.1', 'localhost'], usage: 'both' }, {
        key: `${m.name}'s key`,
        cert: `${m.name}'s server and peer certificate (names ${m.address})`,
      }),
    ),
    { name: `${prefix}/api-key`, readBy: 'controller', holds: "the key each node's API token is derived from", recipe: { kind: 'random' } },
  ];
}

export function holdsOf(name: string): string {
  const last = name.slice(name.lastIndexOf('/') + 1);
  const known: Record<string, string> = {
    'superuser-password': "the postgres superuser's password",
    'rewind-password': "pg_rewind's role's password",
    'app-password': "the application role's password",
    'ca.crt': "the cluster CA's certificate",
    'api-token': "the node's REST API token",
    'node.crt': "the node's certificate (its address and the NLB's name)",
    'node.key': "the node's key",
    'replication.crt': 'the replication client certificate (replication logs in by certificate, no password)',
    'replication.key': 'the replication client key',
  };
  return known[last] ?? last;
}
