/**
 * What etcd's auth should hold for one cluster, and the steps that get it
 * there from what it holds now: pure (no etcd here), so every case is a row
 * in test/unit/etcd-auth.test.ts. Each component has a user (the CN of its
 * client certificate) holding a role of the same name that reaches the
 * cluster's own prefix (`/keel/<cluster>/`) and nothing else: the router
 * reads (and writes only under `routers/`, its own key), the others read and
 * write. The root user holds the root role, which
 * etcd requires before it enables auth.
 */
import { KeelError } from '../errors.js';
import { keys, rangeEndOf } from './codec.js';

export type EtcdComponent = 'agent' | 'router' | 'controller' | 'operator';
/** The etcd user (and role) of each component, e.g. `main-router`. */
export type EtcdUsers = Record<EtcdComponent, string>;
export type EtcdPermission = 'Read' | 'Write' | 'Readwrite';

/** What each component does with its cluster's keys: the router only follows them. */
export const componentAccess: Record<EtcdComponent, EtcdPermission> = { agent: 'Readwrite', router: 'Read', controller: 'Readwrite', operator: 'Readwrite' };

export const rootUser = 'root';
export const rootRole = 'root';

export interface KeyPermission {
  permission: EtcdPermission;
  /** the range [key, end) */
  key: string;
  end: string;
}

export interface EtcdAuthPlan {
  /** role name -> exactly the permissions it should hold */
  roles: Map<string, KeyPermission[]>;
  /** user name -> the roles it should hold (others it has are left alone) */
  users: Map<string, string[]>;
}

/** What etcd has now: roles with their permissions, users with their roles, whether auth is on. */
export interface EtcdAuthState {
  roles: Map<string, KeyPermission[]>;
  users: Map<string, string[]>;
  enabled: boolean;
}

export type EtcdAuthStep =
  | { kind: 'add-role'; role: string }
  | { kind: 'grant'; role: string; permission: KeyPermission }
  | { kind: 'revoke'; role: string; permission: KeyPermission }
  | { kind: 'add-user'; user: string; password: 'root' | 'none' }
  | { kind: 'set-root-password' }
  | { kind: 'grant-role'; user: string; role: string }
  | { kind: 'enable' };

export function etcdAuthPlan(cluster: string, users: EtcdUsers): EtcdAuthPlan {
  const k = keys(cluster);
  const roles = new Map<string, KeyPermission[]>([[rootRole, []]]);
  const holders = new Map<string, string[]>([[rootUser, [rootRole]]]);
  for (const component of Object.keys(componentAccess) as EtcdComponent[]) {
    const name = users[component];
    if (name === rootUser) throw new KeelError('KEEL_CONFIG_INVALID', `the etcd user of the ${component} cannot be ${rootUser}`);
    const permissions: KeyPermission[] = [{ permission: componentAccess[component], key: k.prefix, end: k.prefixEnd }];
    // a router writes one key of its own: which switchover it already holds for (router/presence.ts)
    if (component === 'router') permissions.push({ permission: 'Readwrite', key: k.routersPrefix, end: rangeEndOf(k.routersPrefix) });
    roles.set(name, permissions);
    holders.set(name, [name]);
  }
  return { roles, users: holders };
}

const samePermission = (a: KeyPermission, b: KeyPermission): boolean => a.permission === b.permission && a.key === b.key && a.end === b.end;

export function describeStep(step: EtcdAuthStep): string {
  switch (step.kind) {
    case 'add-role':
      return `add role ${step.role}`;
    case 'grant':
      return `grant ${step.permission.permission} on [${step.permission.key}, ${step.permission.end}) to role ${step.role}`;
    case 'revoke':
      return `revoke ${step.permission.permission} on [${step.permission.key}, ${step.permission.end}) from role ${step.role}`;
    case 'add-user':
      return step.password === 'root' ? `add user ${step.user} with the root password` : `add user ${step.user} (certificate only, no password)`;
    case 'set-root-password':
      return `set the password of ${rootUser} before auth goes on`;
    case 'grant-role':
      return `grant role ${step.role} to user ${step.user}`;
    case 'enable':
      return 'enable auth';
  }
}

/**
 * The steps from `state` to `plan`, in an order etcd accepts: roles before
 * the users that hold them, the root user before auth goes on. A role's
 * permissions become exactly the planned ones; other roles and users are
 * left alone. Nothing to do: no steps.
 */
export function etcdAuthSteps(plan: EtcdAuthPlan, state: EtcdAuthState): EtcdAuthStep[] {
  const steps: EtcdAuthStep[] = [];
  for (const [role, wanted] of plan.roles) {
    const held = state.roles.get(role);
    if (held === undefined) steps.push({ kind: 'add-role', role });
    const current = held ?? [];
    for (const permission of current) {
      if (!wanted.some((w) => samePermission(w, permission))) steps.push({ kind: 'revoke', role, permission });
    }
    for (const permission of wanted) {
      if (!current.some((c) => samePermission(c, permission))) steps.push({ kind: 'grant', role, permission });
    }
  }
  for (const [user, roles] of plan.users) {
    const held = state.users.get(user);
    if (held === undefined) steps.push({ kind: 'add-user', user, password: user === rootUser ? 'root' : 'none' });
    // with auth off nobody has proved the root password yet: make it the one we hold
    else if (user === rootUser && !state.enabled) steps.push({ kind: 'set-root-password' });
    for (const role of roles) {
      if (!(held ?? []).includes(role)) steps.push({ kind: 'grant-role', user, role });
    }
  }
  if (!state.enabled) steps.push({ kind: 'enable' });
  return steps;
}
