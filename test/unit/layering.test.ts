/**
 * The map of src/ in the README, checked: which folder may import which.
 * Pure modules (decide, plan, route, the model) also import no I/O.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';

const root = join(import.meta.dirname, '../../src');

/** Each folder and the folders it may import (errors.ts is everyone's). */
const mayImport: Record<string, string[]> = {
  model: ['config'],
  config: ['model'],
  util: [],
  tls: ['util'],
  dcs: ['model', 'config', 'util'],
  postgres: ['model', 'config', 'util'],
  guard: ['config', 'postgres', 'util'],
  backup: ['dcs', 'postgres', 'model', 'config', 'util'],
  providers: ['dcs', 'postgres', 'tls', 'model', 'config', 'util'],
  agent: ['dcs', 'postgres', 'guard', 'model', 'config', 'util'],
  api: ['agent', 'dcs', 'tls', 'model', 'config', 'util'],
  router: ['dcs', 'postgres', 'model', 'config', 'util'],
  controller: ['dcs', 'providers', 'backup', 'model', 'config', 'util'],
  supervisor: ['providers', 'dcs', 'postgres', 'model', 'config', 'util'],
  workload: ['dcs', 'postgres', 'model', 'config', 'util'],
  demo: ['supervisor', 'providers', 'workload', 'dcs', 'postgres', 'model', 'config', 'util'],
  dashboard: ['api', 'controller', 'router', 'dcs', 'model', 'config', 'util'],
  cli: ['*'],
};

/** Files that decide and must stay free of I/O. */
const pure = /^(agent\/decide[^/]*|agent\/memory|agent\/divergence|agent\/sync|controller\/plan|controller\/autoscale|controller\/backup-plan|router\/route|dashboard\/(model|series)|workload\/(records|acks|split-brain|shape)|backup\/(conf|info|archive-status|restore-target)|postgres\/archiving|model\/[^/]+)\.ts$/;
const io = /^(node:)?(child_process|fs|fs\/promises|net|http|https|dgram)$|^(etcd3|pg|fastify)$/;

function files(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? files(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : []));
}

const sources = files(root).map((path) => {
  const rel = relative(root, path);
  const specifiers = [...readFileSync(path, 'utf8').matchAll(/^(?:import|export)[^'"]*?from\s+'([^']+)'/gm)].map((m) => m[1]!);
  return { rel, folder: rel.includes('/') ? rel.split('/')[0]! : '', specifiers };
});

describe('the layout of src/', () => {
  it('knows every folder', () => {
    const folders = new Set(sources.map((s) => s.folder).filter((f) => f !== ''));
    expect([...folders].sort()).toEqual(Object.keys(mayImport).sort());
  });

  it('each folder imports only the folders the map allows', () => {
    const wrong: string[] = [];
    for (const s of sources) {
      const allowed = mayImport[s.folder];
      if (allowed === undefined || allowed.includes('*')) continue;
      for (const spec of s.specifiers.filter((x) => x.startsWith('.'))) {
        const target = relative(root, join(root, s.rel, '..', spec));
        const folder = target.includes('/') ? target.split('/')[0]! : '';
        if (folder === '' || folder === s.folder || allowed.includes(folder)) continue;
        wrong.push(`${s.rel} imports ${target}`);
      }
    }
    expect(wrong).toEqual([]);
  });

  it('pure modules import no I/O', () => {
    const wrong = sources.filter((s) => pure.test(s.rel)).flatMap((s) => s.specifiers.filter((x) => io.test(x)).map((x) => `${s.rel} imports ${x}`));
    expect(wrong).toEqual([]);
    expect(sources.filter((s) => pure.test(s.rel)).length).toBeGreaterThan(8);
  });
});
