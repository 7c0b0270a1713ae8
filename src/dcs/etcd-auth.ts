/**
 * Sets up etcd's users and roles for one cluster (etcd-auth-plan.ts says
 * which) and switches auth on. Runs any number of times: once auth is on it
 * logs in as root (password from the cluster's secrets); with auth still off
 * anyone may, so it connects with the certificate it is given.
 */
import { EtcdAuthenticationFailedError, EtcdPermissionDeniedError, type Etcd3 } from 'etcd3';
import { describeError, KeelError } from '../errors.js';
import type { Logger } from '../util/log.js';
import { createEtcdClient, type EtcdCredentials } from './etcd-client.js';
import { describeStep, etcdAuthPlan, etcdAuthSteps, rootUser, type EtcdAuthState, type EtcdAuthStep, type EtcdUsers, type KeyPermission } from './etcd-auth-plan.js';

export interface EtcdAuthSetupOptions {
  endpoints: string[];
  cluster: string;
  users: EtcdUsers;
  /** the password of etcd's root user */
  rootPassword: string;
  /** a client pair of etcd's CA (any user's: root logs in by password once auth is on) */
  tls?: EtcdCredentials['tls'];
  requestTimeoutMs?: number;
  logger: Logger;
}

const notEnabled = (err: unknown): boolean => err instanceof Error && /authentication is not enabled/.test(err.message);

function failure(err: unknown, what: string, hint: string): KeelError {
  if (err instanceof KeelError) return err;
  const refused = err instanceof EtcdPermissionDeniedError || err instanceof EtcdAuthenticationFailedError;
  return new KeelError(refused ? 'KEEL_ETCD_FORBIDDEN' : 'KEEL_ETCD_UNREACHABLE', `${what}: ${describeError(err)}`, { ...(refused ? { hint } : {}), cause: err });
}

async function readState(client: Etcd3, enabled: boolean): Promise<EtcdAuthState> {
  const roles = new Map<string, KeyPermission[]>();
  for (const role of (await client.auth.roleList()).roles ?? []) {
    const perm = (await client.auth.roleGet({ role })).perm ?? [];
    roles.set(
      role,
      perm.map((p) => ({
        // proto3 leaves out the default: Read is 0
        permission: p.permType ?? 'Read',
        key: Buffer.from(p.key ?? '').toString('utf8'),
        end: Buffer.from(p.range_end ?? '').toString('utf8'),
      })),
    );
  }
  const users = new Map<string, string[]>();
  for (const user of (await client.auth.userList()).users ?? []) {
    users.set(user, (await client.auth.userGet({ name: user })).roles ?? []);
  }
  return { roles, users, enabled };
}

async function apply(client: Etcd3, step: EtcdAuthStep, rootPassword: string): Promise<void> {
  const auth = client.auth;
  switch (step.kind) {
    case 'add-role':
      await auth.roleAdd({ name: step.role });
      return;
    case 'grant':
      await auth.roleGrantPermission({
        name: step.role,
        perm: { permType: step.permission.permission, key: Buffer.from(step.permission.key), range_end: Buffer.from(step.permission.end) },
      });
      return;
    case 'revoke':
      await auth.roleRevokePermission({ role: step.role, key: Buffer.from(step.permission.key), range_end: Buffer.from(step.permission.end) });
      return;
    case 'add-user':
      // a component's user has no password: only a certificate with its CN makes it
      await auth.userAdd(step.password === 'root' ? { name: step.user, password: rootPassword } : { name: step.user, options: { no_password: true } });
      return;
    case 'set-root-password':
      await auth.userChangePassword({ name: rootUser, password: rootPassword });
      return;
    case 'grant-role':
      await auth.userGrantRole({ user: step.user, role: step.role });
      return;
    case 'enable':
      await auth.authEnable();
      return;
  }
}

/** Logs in as root when auth is on, else connects as whoever the certificate says (auth off: anyone may). */
async function connect(options: EtcdAuthSetupOptions): Promise<{ client: Etcd3; enabled: boolean }> {
  const timeoutMs = options.requestTimeoutMs ?? 5000;
  const asRoot = createEtcdClient(options.endpoints, timeoutMs, { tls: options.tls, user: rootUser, password: options.rootPassword });
  try {
    await asRoot.auth.roleList();
    return { client: asRoot, enabled: true };
  } catch (err) {
    asRoot.close();
    if (!notEnabled(err)) throw err;
  }
  return { client: createEtcdClient(options.endpoints, timeoutMs, { tls: options.tls }), enabled: false };
}

/** Brings etcd's users and roles to the plan and enables auth; returns the steps taken (none when all was in place). */
export async function setUpEtcdAuth(options: EtcdAuthSetupOptions): Promise<EtcdAuthStep[]> {
  const plan = etcdAuthPlan(options.cluster, options.users);
  const where = options.endpoints.join(', ');
  const { client, enabled } = await connect(options).catch((err: unknown) => {
    throw failure(err, `could not log in to etcd at ${where} as ${rootUser}`, "etcd has auth on with another root password: the cluster's secrets must hold etcd's");
  });
  try {
    const steps = etcdAuthSteps(plan, await readState(client, enabled));
    for (const step of steps) {
      options.logger.info({ step: step.kind }, `etcd auth: ${describeStep(step)}`);
      await apply(client, step, options.rootPassword);
    }
    return steps;
  } catch (err) {
    throw failure(err, `setting up etcd's users and roles for ${options.cluster} at ${where} failed`, 'the root user must hold the root role');
  } finally {
    client.close();
  }
}
