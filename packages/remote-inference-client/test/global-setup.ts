import { type FakeVllm, startFakeVllm } from 'fake-vllm';
import type { TestProject } from 'vitest/node';

// One fake-vllm deployment (its own process, like a real fleet) shared by the integration tests that only need
// a healthy engine; tests that need faults or their own engine model start their own.
let fake: FakeVllm | undefined;

export async function setup(project: TestProject): Promise<void> {
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
