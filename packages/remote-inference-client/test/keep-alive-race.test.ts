import { type FakeVllm, startFakeVllm } from 'fake-vllm';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { RemoteInferenceClient } from '../src/index.js';
import { expectedTokens } from './helpers.js';

// Regression: uvicorn closes idle keep-alive sockets without a hint, so a reused socket sometimes dies before any
// response byte. fake-vllm's idle-close-race closes idle sockets at random moments, including the instant a
// request arrives on a reused one. The client must absorb every such race.
let fake: FakeVllm;
beforeAll(async () => {
  fake = await startFakeVllm({
    processes: 1,
    ttftMs: 1,
    itlMs: 1,
    jitter: 0,
    keepAliveTimeoutMs: 5000,
    faultProfile: { 'idle-close-race': 0.05 },
  });
});
afterAll(() => fake.close());

it('2,000 concurrent loops for 20 s under idle-close races surface zero errors, every token verified', async () => {
  const client = new RemoteInferenceClient({ engines: [fake.url], transport: { shared: false } });
  const deadline = performance.now() + 20_000;
  let completed = 0;
  let mismatched = 0;
  const failures: unknown[] = [];
  await Promise.all(
    Array.from({ length: 2000 }, async (_, loop) => {
      while (performance.now() < deadline) {
        const prompt = [loop + 1, completed % 97];
        try {
          const result = await client.generate({ token_ids: prompt, sampling_params: { max_tokens: 4, seed: 7 } });
          if (result.choices[0]!.token_ids.join() !== expectedTokens(prompt, 7, 4).join()) mismatched++;
          completed++;
        } catch (error) {
          failures.push(error);
        }
        // Idle gaps of up to ~50 ms leave sockets idle long enough to be raced.
        await new Promise((resolve) => setTimeout(resolve, (loop * 7) % 50));
      }
    }),
  );
  const stats = client.stats();
  const injected = (await fake.control.stats()).total.faults['idle-close-race'];
  console.log(
    `keep-alive race: ${completed} requests, ${injected} races injected, ${stats.staleRetries} stale-socket re-sends, ${stats.retries} retries`,
  );
  await client.close();
  expect(failures).toEqual([]);
  expect(mismatched).toBe(0);
  expect(completed).toBeGreaterThan(10_000);
  expect(injected).toBeGreaterThan(100);
  expect(stats.staleRetries + stats.retries).toBeGreaterThan(0);
});
