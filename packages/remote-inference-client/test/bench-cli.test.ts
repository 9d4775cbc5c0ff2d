import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

// The benchmark scripts are CLIs users run (`pnpm bench`): a usage mistake prints one line naming it and exits 2,
// before anything starts and without writing a result (an unknown flag used to throw a stack trace; `--rounds abc`
// ran zero rounds and wrote NaN over the committed results).

const bench = (name: string) => fileURLToPath(new URL(`../bench/${name}.mjs`, import.meta.url));
const scratch = mkdtempSync(join(tmpdir(), 'bench-cli-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

function run(name: string, args: string[]) {
  const out = join(scratch, `${name}.json`);
  const result = spawnSync(process.execPath, [bench(name), ...args, '--out', out], {
    encoding: 'utf8',
    timeout: 20_000,
  });
  return { ...result, wrote: existsSync(out) };
}

const mistakes: [string, string[], RegExp][] = [
  ['client-bench', ['--nope'], /^client-bench: Unknown option '--nope'/],
  ['client-bench', ['--rounds', 'abc'], /^client-bench: --rounds must be an integer in 1\.\.20, got "abc"$/],
  ['client-bench', ['--burst', '0'], /^client-bench: --burst must be an integer/],
  ['limits-bench', ['--window-ms', '1e3'], /^limits-bench: --window-ms must be an integer/],
  ['keep-alive-soak', ['--race-rate', '2'], /^keep-alive-soak: --race-rate must be in \(0, 1\]/],
  ['hold-bench', ['--total=-5'], /^hold-bench: --total must be an integer in 1\.\.100000, got "-5"$/],
  ['hold-bench', ['--total', '-5'], /^hold-bench: Option '--total' argument is ambiguous \(--help lists the flags\)$/],
  ['hold-bench', ['--source-ips', '10.0.0.1'], /^hold-bench: --source-ips takes loopback addresses/],
  ['cluster-fairness', ['--budget', '0'], /^cluster-fairness: --budget must be an integer/],
  ['rl-burst', ['stray'], /^rl-burst: Unexpected argument 'stray'/],
  ['rl-burst', ['--steps', '1.5'], /^rl-burst: --steps must be an integer/],
  ['rollouts', ['--scenarios', 'nope'], /^rollouts: --scenarios takes uniform, slow, restart, multi-turn; got nope$/],
];

describe('benchmark CLIs', () => {
  it.each(mistakes)('%s %j: one line, exit 2, nothing written', (name, args, message) => {
    const result = run(name, args);
    expect(result.status).toBe(2);
    const lines = result.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(message);
    expect(result.stdout).toBe('');
    expect(result.wrote).toBe(false);
  });

  it('--help prints the header comment and exits 0', () => {
    const result = run('rl-burst', ['--help']);
    expect(result.status).toBe(0);
    expect(result.stdout).toMatch(/^Benchmark \(not a test\): client CPU per request on the traffic RL trainers send/);
    expect(result.stdout).toContain('--rounds');
  });
});
