import { describe, expect, it } from 'vitest';
import { waitsOnlyForArchiver } from '../../src/postgres/archiver-wait.js';

// process titles as PostgreSQL 15 sets them, with Keel's cluster_name (cluster-node) and without one
const archiver = 'postgres: shop-node1: archiver last was 000000010000000000000004';
const logger = 'postgres: shop-node1: logger';
const walsender = 'postgres: shop-node1: walsender replicator 127.0.0.1(41236) streaming 0/5000148';

describe('a postmaster past its shutdown checkpoint that waits only for its archiver', () => {
  it('is one whose children are the archiver, with or without a logger', () => {
    expect(waitsOnlyForArchiver([archiver])).toBe(true);
    expect(waitsOnlyForArchiver([logger, archiver])).toBe(true);
    expect(waitsOnlyForArchiver(['postgres: archiver failed on 000000010000000000000004'])).toBe(true);
  });

  it('is not one that still has a walsender to finish, nor one with no archiver', () => {
    expect(waitsOnlyForArchiver([archiver, walsender])).toBe(false);
    expect(waitsOnlyForArchiver([logger])).toBe(false);
    expect(waitsOnlyForArchiver([])).toBe(false);
    // a child gone between the listing and the read of its title
    expect(waitsOnlyForArchiver([archiver, ''])).toBe(false);
  });

  it('reads the role after the cluster name, which may begin with the same word', () => {
    expect(waitsOnlyForArchiver(['postgres: archiver-node1: checkpointer'])).toBe(false);
    expect(waitsOnlyForArchiver(['postgres: archiver-node1: archiver last was 000000010000000000000004', 'postgres: logger-node1: walsender x'])).toBe(false);
    expect(waitsOnlyForArchiver(['postgres: logger-node1: archiver'])).toBe(true);
  });
});
