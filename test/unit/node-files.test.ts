import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { NodeConfig } from '../../src/config/schema.js';
import { promotionRetryLine, streamOnlyLine, type NodeLayout } from '../../src/postgres/conf.js';
import { NodeFiles } from '../../src/postgres/node-files.js';

describe('NodeFiles: the promotion lines of postgresql.conf', () => {
  const dirs: string[] = [];
  afterEach(() => dirs.splice(0).forEach((d) => rmSync(d, { recursive: true, force: true })));

  const setup = () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'keel-node-files-'));
    dirs.push(dataDir);
    const conf = join(dataDir, 'postgresql.conf');
    writeFileSync(conf, "port = 5432\nsynchronous_standby_names = ''\n", { mode: 0o600 });
    // only the data directory is used by these writes; no OS user to hand the files to
    const files = new NodeFiles({} as NodeConfig, { dataDir } as NodeLayout, null);
    return { conf, files };
  };

  it('writes the lines and the standby names in one go, and leaves an unchanged file alone', async () => {
    const { conf, files } = setup();
    expect(await files.writePromotionRetry(true, true, 'ANY 1 ("node3")')).toBe(true);
    const text = readFileSync(conf, 'utf8');
    expect(text).toContain(promotionRetryLine);
    expect(text).toContain(streamOnlyLine);
    expect(text).toContain(`synchronous_standby_names = 'ANY 1 ("node3")'`);
    const inode = statSync(conf).ino;
    expect(await files.writePromotionRetry(true, true, 'ANY 1 ("node3")')).toBe(false);
    expect(statSync(conf).ino).toBe(inode);
    // other names: written again
    expect(await files.writePromotionRetry(true, true, 'ANY 1 ("node1")')).toBe(true);
    expect(statSync(conf).ino).not.toBe(inode);
  });

  it('rewrites a file with the same text but another mode', async () => {
    const { conf, files } = setup();
    await files.writePromotionRetry(false);
    chmodSync(conf, 0o644);
    expect(await files.writePromotionRetry(false)).toBe(true);
    expect(statSync(conf).mode & 0o777).toBe(0o600);
  });

  it('takes the lines out again for a standby that stays one', async () => {
    const { conf, files } = setup();
    await files.writePromotionRetry(true, true);
    expect(await files.writePromotionRetry(false)).toBe(true);
    const text = readFileSync(conf, 'utf8');
    expect(text).not.toContain(promotionRetryLine);
    expect(text).not.toContain(streamOnlyLine);
  });
});
