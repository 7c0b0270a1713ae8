/**
 * Debian's Chromium, driven by playwright-core through its path: never a
 * browser Playwright downloads. Screenshots go to test/artifacts/ (kept out
 * of git), one file per name.
 */
import { accessSync, constants, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';

export const chromiumPath = '/usr/bin/chromium';
export const artifactsDir = join(import.meta.dirname, '..', 'artifacts');

export async function launchChromium(): Promise<Browser> {
  try {
    accessSync(chromiumPath, constants.X_OK);
  } catch {
    throw new Error(`${chromiumPath} is missing: Debian's chromium package is needed (scripts/setup.sh installs it)`);
  }
  // root has no user namespaces for Chromium's sandbox here; the pages it opens are the test's own
  return chromium.launch({ executablePath: chromiumPath, args: ['--no-sandbox', '--disable-dev-shm-usage'], timeout: 30_000 });
}

/** Saves a full-page screenshot as test/artifacts/<name>.png and returns its path. */
export async function screenshot(page: Page, name: string): Promise<string> {
  mkdirSync(artifactsDir, { recursive: true });
  const path = join(artifactsDir, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}
