/**
 * The page's files, served by the dashboard itself so that it works without
 * internet: the page, its script and style from static/dashboard/ (two
 * folders above this file, in src/ and dist/ alike, so no build step copies
 * them), and uPlot from its npm package. A fixed list: no path from a request
 * ever reaches the file system.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { KeelError } from '../errors.js';

export interface Asset {
  type: string;
  body: Buffer;
}

const staticDir = fileURLToPath(new URL('../../static/dashboard/', import.meta.url));

function uplotDir(): string {
  const require = createRequire(import.meta.url);
  return join(dirname(require.resolve('uplot/package.json')), 'dist');
}

/** URL path -> file, read once at start (a missing file stops the dashboard before it listens). */
export function loadAssets(): Map<string, Asset> {
  const files: Array<[string, string, string]> = [
    ['/', join(staticDir, 'index.html'), 'text/html; charset=utf-8'],
    ['/assets/app.js', join(staticDir, 'app.js'), 'text/javascript; charset=utf-8'],
    ['/assets/charts.js', join(staticDir, 'charts.js'), 'text/javascript; charset=utf-8'],
    ['/assets/style.css', join(staticDir, 'style.css'), 'text/css; charset=utf-8'],
    ['/assets/uplot.js', join(uplotDir(), 'uPlot.iife.min.js'), 'text/javascript; charset=utf-8'],
    ['/assets/uplot.css', join(uplotDir(), 'uPlot.min.css'), 'text/css; charset=utf-8'],
  ];
  const assets = new Map<string, Asset>();
  for (const [path, file, type] of files) {
    try {
      assets.set(path, { type, body: readFileSync(file) });
    } catch (err) {
      throw new KeelError('KEEL_BINARY_MISSING', `the dashboard's file ${file} cannot be read: ${(err as Error).message}`, { hint: 'run `npm ci` (uPlot) in a complete checkout of Keel' });
    }
  }
  return assets;
}
