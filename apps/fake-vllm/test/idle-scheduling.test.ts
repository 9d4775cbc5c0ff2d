import { readdirSync, readFileSync } from 'node:fs';
import { expect, it } from 'vitest';
import { startFakeVllm } from '../src/index.js';
import { post } from './helpers.js';

/** The scheduling policy of every thread of a process, from /proc (`policy` in sched: 0 normal, 5 SCHED_IDLE). */
function threadPolicies(pid: number): number[] {
  return readdirSync(`/proc/${pid}/task`).map((task) => {
    const line = readFileSync(`/proc/${pid}/task/${task}/sched`, 'utf8')
      .split('\n')
      .find((text) => text.startsWith('policy'));
    return Number(line?.split(':')[1]);
  });
}

function childPids(): number[] {
  return readdirSync(`/proc/${process.pid}/task`).flatMap((task) =>
    readFileSync(`/proc/${process.pid}/task/${task}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number),
  );
}

it.skipIf(process.platform !== 'linux')(
  'idleScheduling puts every thread of the engine processes under SCHED_IDLE, and they still serve',
  async () => {
    const before = new Set(childPids());
    const fake = await startFakeVllm({ engines: 2, processes: 2, ttftMs: 1, itlMs: 1, idleScheduling: true });
    try {
      const children = childPids().filter((pid) => !before.has(pid));
      expect(children).toHaveLength(2);
      for (const pid of children) {
        const policies = threadPolicies(pid);
        // Node starts several threads (V8 platform, libuv); all of them, not only the main one.
        expect(policies.length).toBeGreaterThan(1);
        expect(policies.every((policy) => policy === 5)).toBe(true);
      }
      for (const engine of fake.engines) {
        expect((await post(`${engine.url}/v1/completions`, { prompt: 'x', max_tokens: 2 })).status).toBe(200);
      }
    } finally {
      await fake.close();
    }
  },
);

it('without it the engine processes keep the normal policy', async () => {
  const before = new Set(childPids());
  const fake = await startFakeVllm({ engines: 1, processes: 1 });
  try {
    const [pid] = childPids().filter((child) => !before.has(child));
    expect(threadPolicies(pid!).every((policy) => policy === 0)).toBe(true);
  } finally {
    await fake.close();
  }
});
