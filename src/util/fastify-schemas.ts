import type { FastifyServerOptions } from 'fastify';

function refuseSchema(): never {
  throw new Error('Keel routes declare no JSON schema: request bodies are checked with zod in the handler');
}

/**
 * fastify's `schemaController` option for Keel's HTTP servers. Every body is
 * checked with zod in its handler (api/actions.ts, dashboard/actions.ts) and no
 * route declares a JSON schema, so fastify's own schema compilers, ajv and
 * fast-json-stringify with some 250 modules, would load for nothing: about 1 MB
 * of each agent's heap (README, Agent memory). A route that declares a schema
 * fails when it is registered, saying why.
 */
export const zodOnlySchemaController: NonNullable<FastifyServerOptions['schemaController']> = {
  compilersFactory: {
    buildValidator: () => refuseSchema,
    buildSerializer: () => refuseSchema,
  },
};
