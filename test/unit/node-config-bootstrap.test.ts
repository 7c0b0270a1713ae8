/** node.yml's bootstrap block: the WAL segment size initdb gets. */
import { describe, expect, it } from 'vitest';
import { parseNodeConfig } from '../../src/config/load.js';
import { defaultWalSegmentMb } from '../../src/config/schema.js';
import { isKeelError } from '../../src/errors.js';

const base = `
name: node1
cluster: main
etcd: { endpoints: [http://127.0.0.1:2379] }
api: { listen: 127.0.0.1:8008 }
postgres:
  dataDir: /var/lib/keel/postgres/data
  port: 5432
  superuser: { password: superuser-secret }
  replication: { password: replication-secret }
`;

function refusal(text: string): string {
  try {
    parseNodeConfig(text, 'node.yml');
  } catch (err) {
    if (!isKeelError(err)) throw err;
    expect(err.code).toBe('KEEL_CONFIG_INVALID');
    return err.message;
  }
  throw new Error('the configuration was accepted');
}

describe('bootstrap.walSegmentMb', () => {
  it('is unset unless given: initdb then takes the default, 4 MB', () => {
    expect(parseNodeConfig(base, 'node.yml').bootstrap.walSegmentMb).toBeUndefined();
    expect(defaultWalSegmentMb).toBe(4);
  });

  it('takes any power of 2 from 1 to 1024', () => {
    for (const mb of [1, 2, 4, 16, 64, 1024]) {
      expect(parseNodeConfig(`${base}bootstrap: { walSegmentMb: ${mb} }\n`, 'node.yml').bootstrap.walSegmentMb).toBe(mb);
    }
  });

  it('refuses what initdb would, naming the field', () => {
    for (const bad of ['3', '0', '2048', '2.5', '"4"', '-4']) {
      expect(refusal(`${base}bootstrap: { walSegmentMb: ${bad} }\n`)).toMatch(/bootstrap\.walSegmentMb: /);
    }
    expect(refusal(`${base}bootstrap: { walSegmentMb: 12 }\n`)).toMatch(/a power of 2 from 1 to 1024/);
  });
});
