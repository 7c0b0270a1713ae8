/**
 * The agent's states and the only transitions allowed between them. A state
 * changes only when the actions of its transition succeeded; a pair missing
 * from the table is an error, logged and refused by the loop.
 */

export const states = [
  'starting',
  'bootstrapping',
  'cloning',
  'rewinding',
  'stopped',
  'replica',
  'primary',
  'failed',
] as const;

export type State = (typeof states)[number];

export interface Transition {
  from: State;
  to: State;
  comment: string;
}

export const transitions: readonly Transition[] = [
  { from: 'starting', to: 'bootstrapping', comment: 'won the initialize race and the leader key: initdb' },
  { from: 'starting', to: 'cloning', comment: 'empty data directory and a leader to copy from' },
  { from: 'starting', to: 'rewinding', comment: 'found a data directory whose WAL diverged from the leader' },
  { from: 'starting', to: 'replica', comment: 'found a data directory: started it as a replica (safety rule 5)' },
  { from: 'starting', to: 'primary', comment: 'holds the leader key: runs or resumes the primary' },
  { from: 'starting', to: 'stopped', comment: 'stopped a primary it found running without the leader key' },
  { from: 'starting', to: 'failed', comment: 'the data directory belongs to another cluster' },
  { from: 'bootstrapping', to: 'primary', comment: 'initdb, first start and cluster objects done' },
  { from: 'bootstrapping', to: 'stopped', comment: 'bootstrap failed: removed the data and gave the race back' },
  { from: 'cloning', to: 'replica', comment: 'base backup done: started streaming from the leader' },
  { from: 'cloning', to: 'stopped', comment: 'base backup failed: removed the partial copy' },
  { from: 'rewinding', to: 'replica', comment: 'pg_rewind done: started streaming from the leader' },
  { from: 'rewinding', to: 'stopped', comment: 'pg_rewind failed: removed the data to clone again' },
  { from: 'stopped', to: 'bootstrapping', comment: 'won the initialize race after a failed bootstrap' },
  { from: 'stopped', to: 'cloning', comment: 'empty data directory and a leader to copy from' },
  { from: 'stopped', to: 'rewinding', comment: 'WAL diverged from the new leader' },
  { from: 'stopped', to: 'replica', comment: 'started PostgreSQL as a replica' },
  { from: 'stopped', to: 'primary', comment: 'holds the leader key: started as primary' },
  { from: 'stopped', to: 'failed', comment: 'the data directory belongs to another cluster' },
  { from: 'replica', to: 'primary', comment: 'took the leader key and promoted' },
  { from: 'replica', to: 'rewinding', comment: 'WAL diverged from the new leader: stopped to rewind' },
  { from: 'replica', to: 'stopped', comment: 'PostgreSQL stopped' },
  { from: 'replica', to: 'failed', comment: 'the data directory belongs to another cluster' },
  { from: 'primary', to: 'stopped', comment: 'stepped down: lost the leader key, lease about to expire, or switchover' },
  { from: 'primary', to: 'replica', comment: 'demoted: restarted as a read-only replica' },
  { from: 'primary', to: 'rewinding', comment: 'lost the leader key while down; its WAL diverged from the new leader' },
  { from: 'primary', to: 'failed', comment: 'the data directory belongs to another cluster' },
];

/** Whether the loop may move from one state to another. Staying is always allowed. */
export function isAllowed(from: State, to: State): boolean {
  return from === to || transitions.some((t) => t.from === from && t.to === to);
}
