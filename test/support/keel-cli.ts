/** `keel` as a person runs it (dist/, so build first), with its output and exit status. */
import { spawnSync } from 'node:child_process';

export function keelCli(args: string[], timeoutMs = 120_000): { status: number | null; stdout: string; stderr: string } {
  const result = spawnSync(process.execPath, ['bin/keel.js', ...args], { encoding: 'utf8', timeout: timeoutMs });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}
