import { fileURLToPath } from 'node:url';
import { ensureBuilt } from '@rig/test-support';

// Tests start dist/cli.js and dist/child.js in child processes: rebuild them when src/ is newer, so `vitest` alone
// never exercises stale code.
export function setup(): void {
  ensureBuilt([fileURLToPath(new URL('..', import.meta.url))]);
}
