/**
 * Whether a module runs as a program (`node dist/x.js`, possibly through a
 * link such as /opt/keel) rather than being imported.
 */
import { realpathSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

/** `moduleUrl` is the caller's import.meta.url. */
export function isMainModule(moduleUrl: string): boolean {
  const script = process.argv[1];
  if (script === undefined) return false;
  try {
    return moduleUrl === pathToFileURL(realpathSync(script)).href;
  } catch {
    return false;
  }
}
