/**
 * The endpoints that change something: leader changes (recorded in etcd for
 * the agents to carry out, answered 202) and restart / reinitialize of this
 * node's PostgreSQL. All need the bearer token (checked before the body is
 * read, in auth.ts).
 */
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { requestLeaderChange } from '../dcs/requests.js';
import { nameSchema } from '../model/names.js';
import type { ClusterView, SwitchoverValue } from '../model/values.js';
import { KeelError } from '../errors.js';
import type { AgentHandle, ApiOptions } from './handle.js';
import type { SharedRead } from './read-cache.js';

// Strict: a Patroni option Keel does not implement (scheduled_at...) must be refused, not silently ignored.
const switchoverBody = z.object({ leader: nameSchema.optional(), candidate: nameSchema.optional() }).strict();
const failoverBody = z.object({ leader: nameSchema.optional(), candidate: nameSchema }).strict();
const emptyBody = z.object({}).strict();

function parseBody<T>(schema: z.ZodType<T>, body: unknown): T {
  const checked = schema.safeParse(body ?? {});
  if (checked.success) return checked.data;
  const why = checked.error.issues.map((i) => `${i.path.length > 0 ? i.path.join('.') : '(body)'}: ${i.message}`).join('; ');
  throw new KeelError('KEEL_USAGE', `invalid request body: ${why}`, { hint: 'send JSON such as {"candidate": "node2"}' });
}

function accepted(what: string, value: SwitchoverValue) {
  return {
    message: `${what} requested: ${value.from ?? '(no leader)'} -> ${value.to ?? 'the healthiest replica'}`,
    from: value.from,
    to: value.to,
    failover: value.failover,
    requested_at: new Date(value.requestedAtMs).toISOString(),
  };
}

export function registerActions(app: FastifyInstance, handle: AgentHandle, clusterReads: SharedRead<ClusterView>, options: ApiOptions): void {
  app.post('/switchover', async (request, reply) => {
    const body = parseBody(switchoverBody, request.body);
    const value = await requestLeaderChange(
      options.dcs,
      { failover: false, to: body.candidate ?? null, ...(body.leader !== undefined ? { expectLeader: body.leader } : {}) },
      options.clock.now(),
    );
    clusterReads.invalidate();
    options.logger.info({ from: value.from, to: value.to }, 'switchover requested through the API');
    return reply.code(202).send(accepted('switchover', value));
  });

  app.post('/failover', async (request, reply) => {
    const body = parseBody(failoverBody, request.body);
    const value = await requestLeaderChange(
      options.dcs,
      { failover: true, to: body.candidate, ...(body.leader !== undefined ? { expectLeader: body.leader } : {}) },
      options.clock.now(),
    );
    clusterReads.invalidate();
    options.logger.info({ from: value.from, to: value.to }, 'failover requested through the API');
    return reply.code(202).send(accepted('failover', value));
  });

  const manual = {
    restart: 'PostgreSQL stopped; the agent starts it again in its role on its next loop',
    reinitialize: 'PostgreSQL stopped and its data removed; the agent clones it again from the leader',
  } as const;
  for (const kind of ['restart', 'reinitialize'] as const) {
    app.post(`/${kind}`, async (request, reply) => {
      parseBody(emptyBody, request.body);
      options.logger.info(`${kind} requested through the API`);
      await handle.runManual(kind);
      return reply.code(202).send({ message: manual[kind] });
    });
  }
}
