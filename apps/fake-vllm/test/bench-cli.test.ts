import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, expect, it } from 'vitest';

// bench/connections.mjs is a CLI users run: a usage mistake prints one line naming it and exits 2, before any
// server starts or a result is written (an unknown flag used to throw a stack trace; `--connections abc` ran on
// NaN).

const script = fileURLToPath(new URL('../bench/connections.mjs', import.meta.url));
const scratch = mkdtempSync(join(tmpdir(), 'connections-cli-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

it.each([
  [['--nope'], /^connections: Unknown option '--nope'/],
  [['--connections', 'abc'], /^connections: --connections must be an integer in 1\.\.15000, got "abc"$/],
  [['--window-ms', '5'], /^connections: --window-ms must be an integer/],
  [['--itl-ms', '100,x'], /^connections: --itl-ms takes whole milliseconds/],
])('connections %j: one line, exit 2, nothing written', (args, message) => {
  const out = join(scratch, 'connections.json');
  const result = spawnSync(process.execPath, [script, ...args, '--out', out], { encoding: 'utf8', timeout: 20_000 });
  expect(result.status).toBe(2);
  const lines = result.stderr.trim().split('\n');
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(message);
  expect(existsSync(out)).toBe(false);
});
