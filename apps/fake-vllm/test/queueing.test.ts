import { Agent, request } from 'undici';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { type FakeVllm, startFakeVllm } from '../src/index.js';
import { post } from './helpers.js';

let server: FakeVllm;
beforeAll(async () => {
  server = await startFakeVllm({ maxNumSeqs: 10, ttftMs: 5, itlMs: 5, jitter: 0 });
});
afterAll(() => server.close());

it('runs at most max_num_seqs at once; waiting requests get headers but no token until admitted', async () => {
  const agent = new Agent({ connections: 100 });
  let streaming = 0;
  let maxStreaming = 0;
  // Held (pause mode keep) until all 30 are in the engine, so the waves do not depend on how fast they arrive.
  await post(`${server.url}/pause?mode=keep`, {});
  const released = (async () => {
    for (let polls = 0; polls < 500; polls++) {
      const engine = (await server.control.stats()).engines[0]!;
      if (engine.running + engine.waiting === 30) break;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    await post(`${server.url}/resume`, {});
  })();
  await Promise.all(
    Array.from({ length: 30 }, async () => {
      const response = await request(`${server.url}/v1/completions`, {
        method: 'POST',
        dispatcher: agent,
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ prompt: [1], max_tokens: 20, stream: true }),
      });
      // Headers arrive at once, as vLLM's StreamingResponse sends them; tokens only once the engine runs it.
      expect(response.statusCode).toBe(200);
      let first = true;
      for await (const _chunk of response.body) {
        if (!first) continue;
        first = false;
        streaming++;
        maxStreaming = Math.max(maxStreaming, streaming);
      }
      streaming--;
    }),
  );
  await released;
  await agent.close();
  const stats = (await server.control.stats()).engines[0]!;
  expect(maxStreaming).toBe(10);
  expect(stats.maxRunning).toBe(10);
  // The server's own high-water marks: 10 running, all 30 admitted to the engine (20 of them waiting).
  expect(stats.maxConcurrent).toBe(30);
  expect(stats.completed).toBe(30);
});

it('frees the slot of a client that disconnects while generating', async () => {
  const controller = new AbortController();
  const response = await request(`${server.url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ prompt: [1], max_tokens: 10_000, stream: true }),
    signal: controller.signal,
  });
  const before = (await server.control.stats()).total.cancelled;
  controller.abort();
  await response.body.text().catch(() => undefined);
  for (let attempt = 0; attempt < 50 && (await server.control.stats()).total.running > 0; attempt++) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  const stats = await server.control.stats();
  expect(stats.total.running).toBe(0);
  expect(stats.total.cancelled).toBe(before + 1);
});

it("reports the serving process's event-loop lag since the last high-water reset", async () => {
  // The engines serve from this process (processes: 0): stall its loop for 40 ms at a time, ten times.
  await server.control.resetHighWaterMarks();
  for (let stall = 0; stall < 10; stall++) {
    const until = performance.now() + 40;
    while (performance.now() < until);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  const stalled = (await server.control.stats()).total.eventLoopLagP99Ms;
  expect(stalled).toBeGreaterThanOrEqual(30);
  await server.control.resetHighWaterMarks();
  await new Promise((resolve) => setTimeout(resolve, 300));
  expect((await server.control.stats()).total.eventLoopLagP99Ms).toBeLessThan(stalled / 2);
});
