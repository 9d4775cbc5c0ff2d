import { type FakeVllm, startFakeVllm } from 'fake-vllm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QueueFullError, RemoteInferenceClient } from '../src/index.js';
import { eventually, expectedTokens, serverExcessOverRate } from './helpers.js';

let fake: FakeVllm;
let engines: string[];
beforeAll(async () => {
  // In-process engines: fake-vllm's max-concurrent telemetry is then exact across all of them.
  fake = await startFakeVllm({ engines: 3, ttftMs: 2, itlMs: 2, jitter: 0 });
  engines = fake.engines.map((engine) => engine.url);
});
afterAll(() => fake.close());

const load = (client: RemoteInferenceClient, count: number, maxTokens = 10) =>
  Promise.all(
    Array.from({ length: count }, async (_, index) => {
      const result = await client.generate({
        token_ids: [index + 1],
        sampling_params: { max_tokens: maxTokens, seed: 1 },
      });
      expect(result.choices[0]!.token_ids).toEqual(expectedTokens([index + 1], 1, maxTokens));
    }),
  );

describe('admission limits, as seen by fake-vllm', () => {
  it('a binding maxConcurrency is never exceeded in total', async () => {
    await fake.control.resetHighWaterMarks();
    const client = new RemoteInferenceClient({ engines, limits: { maxConcurrency: 40 }, transport: { shared: false } });
    await load(client, 400);
    const stats = await fake.control.stats();
    expect(stats.total.maxConcurrentExact).toBe(true);
    expect(stats.total.maxConcurrent).toBeLessThanOrEqual(40);
    expect(stats.total.maxConcurrent).toBeGreaterThanOrEqual(30); // binding, not idle
    expect(client.stats().limits.maxInFlightSeen).toBe(40);
    await client.close();
  });

  it('per-engine concurrency holds on every engine', async () => {
    await fake.control.resetHighWaterMarks();
    const client = new RemoteInferenceClient({
      engines,
      limits: { perEngine: { maxConcurrency: 8 } },
      transport: { shared: false },
    });
    await load(client, 300);
    const stats = await fake.control.stats();
    for (const engine of stats.engines) expect(engine.maxConcurrent).toBeLessThanOrEqual(8);
    expect(stats.total.maxConcurrent).toBeLessThanOrEqual(24);
    await client.close();
  });

  it('an engine removed and added back while its requests still run keeps one cap, and serves with its connections', async () => {
    await fake.control.resetHighWaterMarks();
    const [engine] = engines as [string];
    const client = new RemoteInferenceClient({
      engines: [engine],
      limits: { perEngine: { maxConcurrency: 4 } },
      transport: { shared: false },
    });
    try {
      // Four long requests (200 tokens at 2 ms) hold the cap.
      const held = load(client, 4, 200);
      await eventually(() => client.stats().inFlight === 4);
      client.setEngines([engines[1]!]); // removed: its four drain
      client.setEngines([engine]); // and back (a service-discovery flap)
      await Promise.all([held, load(client, 12, 5)]);
      // Before, the engine came back as a fresh entry with fresh permits beside the draining one: 8 at once on it.
      const stats = await fake.control.stats();
      expect(stats.engines[0]!.maxConcurrent).toBe(4);
      expect(client.stats().engines.map((entry) => entry.endpoint)).toEqual([engine]);
      // Its pool was not dropped by the drain that no longer applies: it still answers.
      await load(client, 4, 1);
    } finally {
      await client.close();
    }
  });

  it('both caps hold together, whichever binds first', async () => {
    await fake.control.resetHighWaterMarks();
    const client = new RemoteInferenceClient({
      engines,
      limits: { maxConcurrency: 20, perEngine: { maxConcurrency: 5 } },
      transport: { shared: false },
    });
    await load(client, 200);
    const stats = await fake.control.stats();
    expect(stats.total.maxConcurrent).toBeLessThanOrEqual(15); // 3 engines x 5 binds before 20
    for (const engine of stats.engines) expect(engine.maxConcurrent).toBeLessThanOrEqual(5);
    await client.close();
  });

  it('maxQps never lets more requests start than the budget allows', async () => {
    // A fixed per-engine cap: the server counts every request it receives, and a learned cap's /metrics polls
    // (outside the QPS budget: they are not inference requests) would be counted too.
    const client = new RemoteInferenceClient({
      engines,
      limits: { maxQps: 200, perEngine: { adaptive: false } },
      transport: { shared: false },
    });
    const { maxExcess, received } = await serverExcessOverRate(
      () => fake.control.stats(),
      200,
      Date.now(),
      load(client, 300, 1),
    );
    expect(received).toBe(300);
    // fake-vllm's own count never ran ahead of 200/s by more than a lease (10 permits = 50 ms of budget) and the
    // first refill; without the limit all 300 arrive in one burst.
    expect(maxExcess).toBeLessThanOrEqual(20);
    await client.close();
  });

  it('maxQueued rejects with a typed error instead of growing', async () => {
    const client = new RemoteInferenceClient({
      engines,
      limits: { maxConcurrency: 1, maxQueued: 2 },
      transport: { shared: false },
    });
    const requests = Array.from({ length: 4 }, () =>
      client.generate({ token_ids: [1], sampling_params: { max_tokens: 20 } }).then(
        () => 'ok',
        (error: unknown) => error,
      ),
    );
    const results = await Promise.all(requests);
    expect(results.filter((result) => result === 'ok')).toHaveLength(3);
    expect(results.find((result) => result instanceof QueueFullError)).toBeDefined();
    expect(client.stats().limits.rejectedQueueFull).toBe(1);
    await client.close();
  });

  it('a request aborted while queued leaves at once; higher priority goes first', async () => {
    const client = new RemoteInferenceClient({ engines, limits: { maxConcurrency: 1 }, transport: { shared: false } });
    const order: string[] = [];
    const blocker = client.generate({ token_ids: [1], sampling_params: { max_tokens: 30 } });
    const controller = new AbortController();
    const aborted = client
      .generate({ token_ids: [2], sampling_params: { max_tokens: 1 } }, { signal: controller.signal })
      .catch((error: unknown) => error);
    const low = client
      .generate({ token_ids: [3], sampling_params: { max_tokens: 1 } }, { priority: 0 })
      .then(() => order.push('low'));
    const high = client
      .generate({ token_ids: [4], sampling_params: { max_tokens: 1 } }, { priority: 5 })
      .then(() => order.push('high'));
    await eventually(() => client.stats().queued === 3);
    controller.abort();
    expect(await aborted).toMatchObject({ code: 'ERR_ABORTED' });
    expect(client.stats().queued).toBe(2);
    await Promise.all([blocker, low, high]);
    expect(order).toEqual(['high', 'low']);
    await client.close();
  });
});
