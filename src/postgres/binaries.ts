import { accessSync, constants } from 'node:fs';
import { join } from 'node:path';
import { KeelError } from '../errors.js';

const programs = ['postgres', 'initdb', 'pg_ctl', 'pg_basebackup', 'pg_rewind', 'pg_controldata'];

/** Fails with KEEL_BINARY_MISSING unless every PostgreSQL program Keel runs is there. */
export function checkPostgresBinaries(binDir: string): void {
  const missing = programs.filter((name) => {
    try {
      accessSync(join(binDir, name), constants.X_OK);
      return false;
    } catch {
      return true;
    }
  });
  if (missing.length > 0) {
    throw new KeelError('KEEL_BINARY_MISSING', `PostgreSQL programs missing in ${binDir}: ${missing.join(', ')}`);
  }
  try {
    accessSync('/usr/share/postgresql/15/extension/postgis.control', constants.R_OK);
  } catch {
    throw new KeelError('KEEL_BINARY_MISSING', 'PostGIS for PostgreSQL 15 is not installed', {
      hint: 'apt-get install -y postgresql-15-postgis-3 (or run `make setup`)',
    });
  }
}
