import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';

// The published types, as a reviewed file: every declaration file reachable from dist/index.d.ts (built with
// stripInternal, so `@internal` members are absent), concatenated. A change to the public surface shows up here as
// a diff to review; accept it with `UPDATE_API_REPORT=1 npx vitest run test/api-report.test.ts` and commit the file.
const dist = fileURLToPath(new URL('../dist', import.meta.url));
const report = fileURLToPath(new URL('../api/public-api.d.ts.txt', import.meta.url));

function reachable(entry: string): string[] {
  const seen = new Set<string>();
  const visit = (file: string) => {
    if (seen.has(file) || !existsSync(file)) return;
    seen.add(file);
    const text = readFileSync(file, 'utf8');
    for (const match of text.matchAll(/(?:from|import\()\s*'(\.[^']+)\.js'/g)) {
      visit(join(dirname(file), `${match[1]}.d.ts`));
    }
  };
  visit(entry);
  return [...seen].sort();
}

function render(): string {
  return reachable(join(dist, 'index.d.ts'))
    .map((file) => {
      const text = readFileSync(file, 'utf8')
        .replace(/^\/\/# sourceMappingURL=.*$/m, '')
        .trimEnd();
      return `// ---- ${relative(dist, file)}\n${text}\n`;
    })
    .join('\n');
}

it('the public API matches api/public-api.d.ts.txt', () => {
  const current = render();
  if (process.env.UPDATE_API_REPORT === '1') writeFileSync(report, current);
  expect(current, 'The public API changed: review the diff, then UPDATE_API_REPORT=1 to accept it').toBe(
    readFileSync(report, 'utf8'),
  );
});

it('internals stay out of the published types', () => {
  const current = render();
  // The stream's producer side and the control plane's wiring are internal.
  expect(current).not.toMatch(/\bpush\(chunk: T\)/);
  expect(current).not.toMatch(/\bfail\(error: InferenceError\)/);
  expect(current).not.toMatch(/ConnectionPool/);
  expect(current).not.toMatch(/RequestExecutor/);
});
