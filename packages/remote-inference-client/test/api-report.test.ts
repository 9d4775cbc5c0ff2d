import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { apiRollup } from './api-rollup.js';

// The published types, as a reviewed file: every export of dist/index.d.ts (built with stripInternal, so `@internal`
// members are absent) and what the exports refer to, rolled up by name (test/api-rollup.ts). A change to the
// public surface shows up here as a diff to review; accept it with
// `UPDATE_API_REPORT=1 npx vitest run test/api-report.test.ts` and commit the file.
const entry = fileURLToPath(new URL('../dist/index.d.ts', import.meta.url));
const report = fileURLToPath(new URL('../api/public-api.d.ts.txt', import.meta.url));

it('the public API matches api/public-api.d.ts.txt', () => {
  const current = apiRollup(entry);
  if (process.env.UPDATE_API_REPORT === '1') writeFileSync(report, current);
  expect(current, 'The public API changed: review the diff, then UPDATE_API_REPORT=1 to accept it').toBe(
    readFileSync(report, 'utf8'),
  );
});

it('internals stay out of the published types', () => {
  const current = apiRollup(entry);
  // The stream's producer side and the control plane's wiring are internal.
  expect(current).not.toMatch(/\bpush\(chunk: T\)/);
  expect(current).not.toMatch(/\bfail\(error: InferenceError\)/);
  expect(current).not.toMatch(/ConnectionPool/);
  expect(current).not.toMatch(/RequestExecutor/);
  // Declarations that ship in dist/ but that no export reaches (a concatenation of every reachable .d.ts file
  // listed them all).
  for (const internal of [
    'Scheduler',
    'EngineEntry',
    'resolveLimits',
    'EngineHealth',
    'EngineCapacity',
    'TokenBucket',
  ]) {
    expect(current, internal).not.toMatch(new RegExp(`^// ---- ${internal} \\(`, 'm'));
    expect(current, internal).not.toMatch(new RegExp(`\\b(class|interface|type|function) ${internal}\\b`));
  }
  // Classes that only the client constructs are published as types: no constructor to call.
  expect(current).toMatch(/^\/\/ ---- ControlPlane \(class, exported as a type only/m);
  expect(current).toMatch(/^\/\/ ---- ChunkStream \(class, exported as a type only/m);
});
