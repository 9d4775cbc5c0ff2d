// Every benchmark of the workspace, for `npm run bench` (scripts/bootstrap.mjs): each package's `bench:<name>`
// scripts, in packages/*, apps/* and scripts/*, in that order and in the order of each package.json.
//
// It also checks the wiring: every entry script in a package's bench/ folder (a bench/*.mjs that no other bench
// file starts as its helper) must be the command of one `bench:<name>` script and must write its JSON result
// (writeFileSync); otherwise `npm run bench` fails naming the file, so a new benchmark cannot be left out.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';

/**
 * @param {string} root the repository root
 * @returns {{ benchmarks: Array<{ name: string, packageName: string, dir: string, command: string }>, problems: string[] }}
 */
export function listBenchmarks(root) {
  const benchmarks = [];
  const problems = [];
  for (const group of ['packages', 'apps', 'scripts']) {
    const groupDir = join(root, group);
    if (!existsSync(groupDir)) continue;
    for (const entry of readdirSync(groupDir, { withFileTypes: true })) {
      if (!entry.isDirectory()) continue;
      const dir = join(groupDir, entry.name);
      const manifestPath = join(dir, 'package.json');
      if (!existsSync(manifestPath)) continue;
      const manifest = JSON.parse(readFileSync(manifestPath, 'utf8'));
      const scripts = manifest.scripts ?? {};
      const own = Object.entries(scripts)
        .filter(([script]) => script.startsWith('bench:'))
        .map(([script, command]) => ({
          name: script.slice('bench:'.length),
          packageName: manifest.name,
          dir,
          command,
        }));
      benchmarks.push(...own);
      const benchDir = join(dir, 'bench');
      if (!existsSync(benchDir)) continue;
      const files = readdirSync(benchDir).filter((file) => file.endsWith('.mjs'));
      const sources = new Map(files.map((file) => [file, readFileSync(join(benchDir, file), 'utf8')]));
      for (const file of files) {
        const helper = files.some((other) => other !== file && sources.get(other).includes(`./${file}`));
        if (helper) continue;
        const where = relative(root, join(benchDir, file));
        if (!own.some((benchmark) => benchmark.command.split(/\s+/).includes(`bench/${file}`)))
          problems.push(`${where} is not run by any "bench:<name>" script of ${relative(root, manifestPath)}`);
        if (!sources.get(file).includes('writeFileSync'))
          problems.push(`${where} writes no JSON result (every benchmark writes one)`);
      }
    }
  }
  return { benchmarks, problems };
}
