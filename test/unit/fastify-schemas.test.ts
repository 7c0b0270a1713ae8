/**
 * Keel's HTTP servers run fastify without its JSON-schema compilers
 * (src/util/fastify-schemas.ts): bodies are checked with zod, and ajv with its
 * modules stays out of every agent's memory.
 */
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import Fastify from 'fastify';
import { describe, expect, it } from 'vitest';
import { zodOnlySchemaController } from '../../src/util/fastify-schemas.js';

const run = promisify(execFile);
const root = fileURLToPath(new URL('../..', import.meta.url));

/** Whether a fresh Node process that serves one request with fastify has loaded ajv. */
async function loadsAjv(withController: boolean): Promise<boolean> {
  const script = `
    import { createRequire } from 'node:module';
    import Fastify from 'fastify';
    import { zodOnlySchemaController } from './dist/util/fastify-schemas.js';
    const app = Fastify(${withController ? '{ schemaController: zodOnlySchemaController }' : '{}'});
    app.post('/', async (request) => ({ got: request.body }));
    const reply = await app.inject({ method: 'POST', url: '/', payload: { a: 1 } });
    if (reply.json().got.a !== 1) throw new Error('the route did not answer');
    const cache = createRequire(import.meta.url).cache;
    console.log(JSON.stringify(Object.keys(cache).some((file) => file.includes('/node_modules/ajv/'))));
    await app.close();`;
  const { stdout } = await run(process.execPath, ['--input-type=module', '-e', script], { cwd: root });
  return JSON.parse(stdout.trim()) as boolean;
}

describe('fastify without schema compilers', () => {
  it('serves routes without schemas and keeps ajv unloaded (fastify loads it by default)', async () => {
    expect(await loadsAjv(false)).toBe(true);
    expect(await loadsAjv(true)).toBe(false);
  });

  it('refuses a route that declares a JSON schema, saying bodies are checked with zod', async () => {
    const app = Fastify({ schemaController: zodOnlySchemaController });
    app.post('/', { schema: { body: { type: 'object' } } }, async () => ({}));
    await expect(app.ready()).rejects.toThrow(/declare no JSON schema.*zod/);
    await app.close().catch(() => undefined);
  });
});
