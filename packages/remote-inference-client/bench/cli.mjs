// Flags of the benchmark scripts, parsed one way: `--help` prints the script's header comment; an unknown flag, a
// stray argument or a value out of range prints one line naming it and exits 2, before anything starts and before
// any result file is written (a `--rounds abc` used to run zero rounds and write NaN over the committed results).
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

/** A usage mistake: one line on stderr, exit code 2. */
export function usageError(script, message) {
  process.stderr.write(`${script}: ${message}\n`);
  process.exit(2);
}

/**
 * `parseArgs` for the script at `scriptUrl` (its `import.meta.url`), strict. Returns the values and the script's
 * name (for {@link usageError} and {@link integerFlag}).
 */
export function benchArgs(scriptUrl, options) {
  const path = fileURLToPath(scriptUrl);
  const script = basename(path, '.mjs');
  if (process.argv.slice(2).includes('--help')) {
    const header = readFileSync(path, 'utf8')
      .split('\n')
      .filter((line) => !line.startsWith('#!'))
      .join('\n')
      .match(/^(?:\/\/.*\n)+/);
    process.stdout.write(`${(header?.[0] ?? '').replace(/^\/\/ ?/gm, '')}`);
    process.exit(0);
  }
  try {
    return { values: parseArgs({ options }).values, script };
  } catch (error) {
    return usageError(script, `${error.message.split(/\.\s/)[0]} (--help lists the flags)`);
  }
}

/** The integer value of `--flag`, in [min, max]; anything else is a usage error. */
export function integerFlag(script, values, flag, min, max) {
  const text = values[flag];
  const value = Number(text);
  if (!/^\d+$/.test(String(text)) || value < min || value > max) {
    usageError(script, `--${flag} must be an integer in ${min}..${max}, got ${JSON.stringify(text)}`);
  }
  return value;
}
