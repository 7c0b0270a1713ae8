/**
 * synchronous_standby_names as Keel writes it: `ANY k ("a","b")` (quorum
 * commit: a commit waits for k of the listed standbys), '' for none. Pure.
 */

export interface SyncSet {
  members: string[];
  quorum: number;
}

export const noSyncSet: SyncSet = { members: [], quorum: 0 };

/** Reads the value Keel writes; '' is no synchronous standby. Anything else: null. */
export function parseSynchronousStandbyNames(value: string): SyncSet | null {
  const text = value.trim();
  if (text === '') return noSyncSet;
  const match = /^ANY\s+(\d+)\s*\((.*)\)$/i.exec(text);
  if (match === null) return null;
  const members = match[2]!
    .split(',')
    .map((name) => name.trim().replace(/^"|"$/g, ''))
    .filter((name) => name !== '');
  return { members: [...members].sort(), quorum: Number(match[1]) };
}

export function formatSynchronousStandbyNames(set: SyncSet): string {
  if (set.members.length === 0) return '';
  return `ANY ${set.quorum} (${[...set.members].sort().map((m) => `"${m}"`).join(',')})`;
}
