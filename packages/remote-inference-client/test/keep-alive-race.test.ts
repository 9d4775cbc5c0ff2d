import { type FakeVllm, startFakeVllm } from 'fake-vllm';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { RemoteInferenceClient } from '../src/index.js';
import { expectedTokens } from './helpers.js';

// Regression: uvicorn closes idle keep-alive sockets without a hint, so a reused socket sometimes dies before any
// response byte. fake-vllm's idle-close-race closes idle sockets at random moments, including the instant a
// request arrives on a reused one. The client must absorb every such race. This is the smoke version, bounded by
// counts (races the server injected, requests done); the 20 s soak is bench/keep-alive-soak.mjs.
let fake: FakeVllm;
beforeAll(async () => {
  fake = await startFakeVllm({
    processes: 1,
    ttftMs: 1,
    itlMs: 1,
    jitter: 0,
    keepAliveTimeoutMs: 5000,
    faultProfile: { 'idle-close-race': 0.2 },
  });
});
afterAll(() => fake.close());

it('200 concurrent loops under idle-close races surface zero errors until 50 races were injected, every token verified', async () => {
  const client = new RemoteInferenceClient({ engines: [fake.url], transport: { shared: false } });
  const racesWanted = 50;
  const maxRequests = 50_000; // a bound that ends the test if the server stopped injecting
  let completed = 0;
  let mismatched = 0;
  let races = 0;
  const failures: unknown[] = [];
  const enough = () => (races >= racesWanted && completed >= 2000) || completed + failures.length >= maxRequests;
  const watcher = (async () => {
    while (!enough()) {
      races = (await fake.control.stats()).total.faults['idle-close-race'];
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  })();
  await Promise.all(
    Array.from({ length: 200 }, async (_, loop) => {
      while (!enough()) {
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
  await watcher;
  const stats = client.stats();
  const injected = (await fake.control.stats()).total.faults['idle-close-race'];
  console.log(
    `keep-alive race smoke: ${completed} requests, ${injected} races injected, ${stats.staleRetries} stale-socket re-sends, ${stats.retries} retries`,
  );
  await client.close();
  expect(failures).toEqual([]);
  expect(mismatched).toBe(0);
  expect(injected).toBeGreaterThanOrEqual(racesWanted);
  expect(stats.staleRetries + stats.retries).toBeGreaterThan(0);
});
