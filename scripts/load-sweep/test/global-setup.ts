import { fileURLToPath } from 'node:url';
import { ensureBuilt } from '@rig/test-support';

// The sweep starts dist/worker-main.js and fake-vllm's dist/ in child processes: rebuild what src/ is newer than,
// dependencies first, so `vitest` alone never exercises stale code.
export function setup(): void {
  ensureBuilt(
    ['../../../apps/fake-vllm', '../../../packages/remote-inference-client', '..'].map((path) =>
      fileURLToPath(new URL(path, import.meta.url)),
    ),
  );
}
