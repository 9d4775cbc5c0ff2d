import diagnosticsChannel from 'node:diagnostics_channel';
import { once } from 'node:events';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { type FakeVllm, startFakeVllm } from 'fake-vllm';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { REQUEST_CHANNEL, RemoteInferenceClient, type RequestStats } from '../src/index.js';
import { eventually } from './helpers.js';

let fake: FakeVllm;
beforeAll(async () => {
  // Engine 1 reports 503 on /health for its first 60 s, like an engine still loading weights.
  fake = await startFakeVllm({ engines: 1, ttftMs: 1, itlMs: 1 });
});
afterAll(() => fake.close());

it('active health checks put an engine that fails GET /health in cooldown, and traffic avoids it', async () => {
  const loading = await startFakeVllm({ engines: 1, readyAfterMs: 60_000, control: false });
  const client = new RemoteInferenceClient({
    engines: [fake.url, loading.url],
    health: { activeCheckIntervalMs: 50, failureThreshold: 2, cooldownMs: 10_000 },
    transport: { shared: false },
  });
  await eventually(() => client.stats().engines[1]!.state === 'cooldown');
  expect(client.stats().engines[0]!.state).toBe('healthy');
  for (let index = 0; index < 10; index++) await client.completions.create({ prompt: 'x', max_tokens: 1 });
  expect(client.stats().engines.map((engine) => engine.requests)).toEqual([10, 0]);
  await client.close();
  await loading.close();
});

it('a passing active health check wakes the queue: a request waiting for the engine goes at once, not at the cooldown end', async () => {
  const loading = await startFakeVllm({ engines: 1, readyAfterMs: 1500, ttftMs: 1, itlMs: 1, control: false });
  const client = new RemoteInferenceClient({
    engines: [loading.url],
    // A cooldown far longer than the test: only a health check can bring the engine back.
    health: { activeCheckIntervalMs: 50, failureThreshold: 1, cooldownMs: 600_000 },
    transport: { shared: false },
  });
  try {
    await eventually(() => client.stats().engines[0]!.state === 'cooldown');
    // Queued (the only engine is in cooldown) until a check passes once the engine is ready. Before, the check
    // healed it but nobody woke the queue: the request waited for the 600 s cooldown (here, its 10 s deadline).
    const result = await client.generate({ token_ids: [1], sampling_params: { max_tokens: 2 } }, { timeoutMs: 10_000 });
    expect(result.choices[0]!.token_ids).toHaveLength(2);
  } finally {
    await client.close();
    await loading.close();
  }
});

it('publishes every request on diagnostics_channel with its timing', async () => {
  const seen: RequestStats[] = [];
  const listener = (message: unknown) => seen.push(message as RequestStats);
  diagnosticsChannel.subscribe(REQUEST_CHANNEL, listener);
  const client = new RemoteInferenceClient({ engines: [fake.url], transport: { shared: false } });
  const stream = await client.completions.create({ prompt: 'x', max_tokens: 5, stream: true }, { tag: 'rollout-1' });
  for await (const _chunk of stream) {
  }
  diagnosticsChannel.unsubscribe(REQUEST_CHANNEL, listener);
  await client.close();
  expect(seen).toHaveLength(1);
  const stats = seen[0]!;
  expect(stats).toMatchObject({
    ok: true,
    path: '/v1/completions',
    engine: fake.url,
    attempts: 1,
    tag: 'rollout-1',
    events: 5,
  });
  expect(stats.ttftMs).toBeGreaterThan(0);
  expect(stats.interTokenGapsMs).toHaveLength(4);
  expect(stats.serverTtftMs).toBeGreaterThan(0);
  expect(stats.connectMs).toBeGreaterThanOrEqual(0);
});

// The server's own queue wait and TTFT come from the standard Server-Timing header or trailer only. A server that
// sends nothing else (no fake-vllm private `x-fake-queue-ms` / `x-fake-ttft-ms`) must give exactly its values: a
// client that went back to reading the private headers would report undefined here.
it('request stats take serverQueueMs and serverTtftMs from Server-Timing alone, as a header and as a trailer', async () => {
  const server = createServer((request: IncomingMessage, response: ServerResponse) => {
    request.resume();
    request.on('end', () => {
      if (request.headers['x-want'] === 'stream') {
        response.writeHead(200, { 'content-type': 'text/event-stream', trailer: 'Server-Timing' });
        response.write('data: {"request_id":"s","choices":[{"index":0,"token_ids":[7],"finish_reason":null}]}\n\n');
        response.write('data: {"request_id":"s","choices":[{"index":0,"token_ids":[8],"finish_reason":"length"}]}\n\n');
        response.write('data: [DONE]\n\n');
        response.addTrailers({ 'server-timing': 'queue;dur=3.25, ttft;dur=77;desc="first token", e2e;dur=90' });
        response.end();
        return;
      }
      response.writeHead(200, {
        'content-type': 'application/json',
        'server-timing': 'queue;dur=12.5, ttft;dur=480',
      });
      response.end('{"request_id":"w","choices":[{"index":0,"token_ids":[7,8],"finish_reason":"length"}]}');
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const seen: RequestStats[] = [];
  const client = new RemoteInferenceClient({
    engines: [`http://127.0.0.1:${(server.address() as AddressInfo).port}`],
    transport: { shared: false },
    retry: { maxAttempts: 1 },
    onRequestEnd: (stats) => seen.push(stats),
  });
  try {
    const whole = await client.generate({ token_ids: [1], sampling_params: { max_tokens: 2 } });
    expect(whole.choices[0]!.token_ids).toEqual([7, 8]);
    const stream = await client.generate(
      { token_ids: [1], sampling_params: { max_tokens: 2 }, stream: true },
      { headers: { 'x-want': 'stream' } },
    );
    const tokens: number[] = [];
    for await (const chunk of stream) tokens.push(...(chunk.choices[0]!.token_ids as number[]));
    expect(tokens).toEqual([7, 8]);
    expect(seen.map((stats) => [stats.ok, stats.serverQueueMs, stats.serverTtftMs])).toEqual([
      [true, 12.5, 480],
      [true, 3.25, 77],
    ]);
  } finally {
    await client.close();
    server.closeAllConnections();
    server.close();
  }
});

it('rejects an explicit connection ceiling above the port budget, naming the budget', () => {
  expect(() => new RemoteInferenceClient({ engines: [fake.url], transport: { maxConnections: 10_000_000 } })).toThrow(
    /`transport.maxConnections` to be at most the port budget \d+ \(\d+ ephemeral ports/,
  );
});

// Regression (half-open never re-armed): with one engine resetting every connection, the breaker must keep it in
// cooldown with a doubling backoff after each failed probe. Before the fix the engine stayed half-open after its
// first cooldown and every request went to it (2,741 connections in 8 s in the report). Counted on the server.
it('an engine that resets every connection gets only doubling-backoff probes; every request succeeds elsewhere', async () => {
  const pair = await startFakeVllm({ engines: 2, ttftMs: 1, itlMs: 1, jitter: 0 });
  try {
    await pair.control.setFaultProfile({ 'reset-before-response': 1 }, 0);
    const client = new RemoteInferenceClient({
      engines: pair.engines.map((engine) => engine.url),
      health: { failureThreshold: 3, cooldownMs: 50, maxCooldownMs: 60_000 },
      retry: { baseBackoffMs: 1, maxBackoffMs: 5 },
      transport: { shared: false },
    });
    const outcomes = await Promise.all(
      Array.from({ length: 20 }, async () => {
        let failed = 0;
        for (let index = 0; index < 100; index++) {
          await client.generate({ token_ids: [index + 1], sampling_params: { max_tokens: 2 } }).catch(() => failed++);
        }
        return failed;
      }),
    );
    await client.close();
    const [broken, healthy] = (await pair.control.stats()).engines;
    const resets = broken!.faults['reset-before-response'];
    console.log(
      `half-open: ${resets} requests reached the resetting engine, ${healthy!.completed} completed on the healthy one`,
    );
    expect(outcomes.reduce((sum, failed) => sum + failed, 0)).toBe(0);
    expect(healthy!.completed).toBe(2000);
    // The threshold's worth of concurrent failures, then one probe per doubled cooldown: a handful, not hundreds.
    expect(resets).toBeLessThanOrEqual(3 + 20 + 12);
  } finally {
    await pair.close();
  }
});

// A restarted engine refuses connections while it is down (vLLM's server listens only once its engine is ready:
// `vllm/entrypoints/openai/api_server.py` builds the engine before `serve_http`). The breaker probes it with
// GET /health, not with a rollout, and uses it again once it listens. The cooldown here is longer than the test:
// without the probe the engine would stay out.
it('an engine that refused connections while restarting takes requests again once it listens', async () => {
  const pair = await startFakeVllm({ engines: 2, ttftMs: 1, itlMs: 1, jitter: 0 });
  try {
    const client = new RemoteInferenceClient({
      engines: pair.engines.map((engine) => engine.url),
      routing: 'round-robin',
      health: { failureThreshold: 1, cooldownMs: 600_000, probeIntervalMs: 20 },
      retry: { baseBackoffMs: 1, maxBackoffMs: 5 },
      transport: { shared: false },
    });
    const call = (index: number) => client.generate({ token_ids: [index + 1], sampling_params: { max_tokens: 2 } });
    for (let index = 0; index < 10; index++) await call(index);
    await pair.control.restartEngine({ downMs: 400 }, 1);
    let index = 10;
    while (client.stats().engines[1]!.state !== 'cooldown') await call(index++);
    const before = (await pair.control.stats()).engines[1]!.completed;
    await eventually(() => client.stats().engines[1]!.state === 'healthy', 10_000);
    for (let more = 0; more < 10; more++) await call(index++);
    const after = (await pair.control.stats()).engines[1]!.completed;
    expect(client.stats().failed).toBe(0);
    expect(after - before).toBeGreaterThanOrEqual(4); // round robin: about half of the 10 after it came back
    await client.close();
  } finally {
    await pair.close();
  }
});
