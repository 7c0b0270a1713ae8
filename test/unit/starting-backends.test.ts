/** Which children of a postmaster a leader's drain counts as backends still starting (postmaster.ts, startingTitle). */
import { describe, expect, it } from 'vitest';
import { startingTitle } from '../../src/postgres/postmaster.js';

const postmaster = '/usr/lib/postgresql/15/bin/postgres -D /var/lib/keel/node1/data -c config_file=/var/lib/keel/node1/data/postgresql.conf';
const backend = (activity: string) => `postgres: node1: app app 127.0.0.1(53422) ${activity}`;

describe('a backend still starting, by its title', () => {
  it('is one that still carries the postmaster\'s command line (its SSL request, TLS handshake and startup packet)', () => {
    expect(startingTitle(postmaster, postmaster)).toBe(true);
  });

  it('is one past its startup packet and not logged in yet: initializing, authentication, startup', () => {
    // "initializing" comes between the startup packet and the login: a connection there was missed, and cut by the shutdown
    expect(startingTitle(backend('initializing'), postmaster)).toBe(true);
    expect(startingTitle(backend('authentication'), postmaster)).toBe(true);
    expect(startingTitle(backend('startup'), postmaster)).toBe(true);
  });

  it('is not a logged-in session, a background process or a walsender at work', () => {
    expect(startingTitle(backend('idle'), postmaster)).toBe(false);
    expect(startingTitle(backend('INSERT'), postmaster)).toBe(false);
    expect(startingTitle(backend('idle in transaction'), postmaster)).toBe(false);
    expect(startingTitle('postgres: node1: checkpointer ', postmaster)).toBe(false);
    expect(startingTitle('postgres: node1: walsender replicator 127.0.0.1(5000) streaming 0/3000000', postmaster)).toBe(false);
  });
});
