// Shared by the packages' tests. See index.d.mts for the documentation of each export.
import { spawnSync } from 'node:child_process';
import { appendFileSync, readdirSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { chromiumPath, DEBIAN_PYTHON, missingComponents, systemComponents } from './components.mjs';

export { chromiumPath, DEBIAN_PYTHON, missingComponents, systemComponents };

export function skipReason(test, names) {
  const missing = systemComponents.filter((component) => names.includes(component.name) && !component.present());
  if (missing.length === 0) return undefined;
  const reason = `${test}: SKIPPED, needs ${missing
    .map((component) => `${component.name} (apt-get install ${component.aptPackage})`)
    .join(', ')}`;
  return reportSkip(reason);
}

export function reportSkip(reason) {
  console.warn(`\n!! ${reason}\n`);
  if (process.env.RIG_SKIP_LOG) appendFileSync(process.env.RIG_SKIP_LOG, `${reason}\n`);
  return reason;
}

function newestMtimeMs(path) {
  const stat = statSync(path, { throwIfNoEntry: false });
  if (!stat) return 0;
  if (!stat.isDirectory()) return stat.mtimeMs;
  let newest = 0;
  for (const entry of readdirSync(path)) {
    if (entry.endsWith('.test.ts')) continue;
    newest = Math.max(newest, newestMtimeMs(join(path, entry)));
  }
  return newest;
}

export function ensureBuilt(packageDirs) {
  if (process.env.RIG_NO_REBUILD === '1') return;
  for (const dir of packageDirs) {
    const sources = Math.max(
      newestMtimeMs(join(dir, 'src')),
      newestMtimeMs(join(dir, 'tsconfig.build.json')),
      newestMtimeMs(join(dir, 'package.json')),
    );
    if (newestMtimeMs(join(dir, 'dist')) >= sources) continue;
    const tscPath = createRequire(join(dir, 'package.json')).resolve('typescript/bin/tsc');
    const tsc = spawnSync(process.execPath, [tscPath, '-p', join(dir, 'tsconfig.build.json')], {
      stdio: 'inherit',
      cwd: dir,
    });
    if (tsc.error || tsc.status !== 0) {
      throw new Error(
        `ensureBuilt: \`tsc -p tsconfig.build.json\` failed in ${dir}${tsc.error ? ` (${tsc.error.message})` : ''}`,
      );
    }
  }
}
