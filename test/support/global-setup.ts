import { execFileSync } from 'node:child_process';

/** Integration tests run `bin/keel.js`, which runs the compiled code: compile once first. */
export default function setup(): void {
  execFileSync('npx', ['tsc', '-p', 'tsconfig.json'], { stdio: 'inherit' });
}
