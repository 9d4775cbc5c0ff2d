import { fileURLToPath } from 'node:url';
import { ensureBuilt } from '@rig/test-support';
import type { FakeVllm } from 'fake-vllm';
import type { TestProject } from 'vitest/node';

// One fake-vllm deployment (its own process, like a real fleet) shared by the integration tests that only need
// a healthy engine; tests that need faults or their own engine model start their own.
let fake: FakeVllm | undefined;

export async function setup(project: TestProject): Promise<void> {
  // Tests import fake-vllm's dist/ and start it (and this package's dist/) in child processes: rebuild whatever
  // src/ is newer than its dist/ first, so `vitest` alone never exercises stale code.
  ensureBuilt([
    fileURLToPath(new URL('../../../apps/fake-vllm', import.meta.url)),
    fileURLToPath(new URL('..', import.meta.url)),
  ]);
  const { startFakeVllm } = await import('fake-vllm');
  fake = await startFakeVllm({ engines: 2, processes: 1, ttftMs: 2, itlMs: 1, jitter: 0, seed: 11 });
  project.provide(
    'engines',
    fake.engines.map((engine) => engine.url),
  );
  project.provide('control', fake.control.url!);
}

export async function teardown(): Promise<void> {
  await fake?.close();
}

declare module 'vitest' {
  export interface ProvidedContext {
    engines: string[];
    control: string;
  }
}
