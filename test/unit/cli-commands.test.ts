/**
 * `keel <command>` loads only that command's module (a daemon keeps only its
 * own code in memory): every command the full program knows must be found
 * that way too, with the same options.
 */
import { describe, expect, it } from 'vitest';
import { buildProgram } from '../../src/cli/main.js';

describe('commands loaded on demand', () => {
  it('each top-level command is registered when named alone, with the same options and subcommands', async () => {
    const full = await buildProgram();
    const names = full.commands.map((c) => c.name());
    expect(names.length).toBeGreaterThan(15);
    // hidden only while the commands' modules load (node-postgres's probe), then back
    expect(typeof globalThis.Response).toBe('function');
    for (const command of full.commands) {
      const alone = (await buildProgram(command.name())).commands.find((c) => c.name() === command.name());
      expect(alone, command.name()).toBeDefined();
      expect(alone!.options.map((o) => o.long)).toEqual(command.options.map((o) => o.long));
      expect(alone!.commands.map((c) => c.name())).toEqual(command.commands.map((c) => c.name()));
    }
  });
});
