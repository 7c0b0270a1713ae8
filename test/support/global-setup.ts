import { execFileSync } from 'node:child_process';
import { removeOrphanedSegments } from './shm.js';

/**
 * Integration tests run `bin/keel.js`, which runs the compiled code: compile once first. Afterwards, the shared
 * memory segments of the postmasters the run killed go (shm.ts).
 */
export default function setup(): () => void {
  execFileSync('npx', ['tsc', '-p', 'tsconfig.json'], { stdio: 'inherit' });
  const startedMs = Date.now();
  return () => {
    const removed = removeOrphanedSegments(startedMs);
    if (removed.length > 0) console.log(`removed ${removed.length} shared memory segment(s) of postmasters the run killed`);
  };
}
