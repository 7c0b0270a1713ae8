/**
 * SIGSTOP that returns once the process has stopped. kill() only queues the
 * signal: one thread takes it when it is next scheduled and only then stops
 * the others, so on a busy machine a multi-threaded server (etcd) may answer a
 * request sent right after kill() returned. Waits until every thread of the
 * process is in state T (stopped) or t (traced); past the limit it lets the
 * process go on again and throws.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

function threadStates(pid: number): string[] {
  return readdirSync(`/proc/${pid}/task`).map((tid) => {
    const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
    // the state follows the command name, which is in parentheses and may hold spaces
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  });
}

export async function freeze(pid: number, timeoutMs = 5000): Promise<void> {
  process.kill(pid, 'SIGSTOP');
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const states = threadStates(pid);
    if (states.every((s) => s === 'T' || s === 't')) return;
    if (Date.now() > deadline) {
      process.kill(pid, 'SIGCONT');
      throw new Error(`process ${pid} did not stop within ${timeoutMs} ms (thread states ${states.join('')})`);
    }
    await sleep(2);
  }
}
