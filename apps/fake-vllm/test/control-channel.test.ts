import { afterAll, beforeAll, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { ControlClient, type FakeVllm, type FakeVllmStats, startFakeVllm } from '../src/index.js';
import { post } from './helpers.js';

let server: FakeVllm;
beforeAll(async () => {
  server = await startFakeVllm({ engines: 2, ttftMs: 1, itlMs: 1, control: { token: 'secret', statsIntervalMs: 100 } });
});
afterAll(() => server.close());

it('pushes stats periodically and answers requests', async () => {
  const control = await ControlClient.connect(server.control.url!, 'secret');
  const pushed = await new Promise<FakeVllmStats>((resolve) => control.onStats(resolve));
  expect(pushed.engines.map((engine) => engine.url)).toEqual(server.engines.map((engine) => engine.url));
  await post(`${server.engines[1]!.url}/v1/completions`, { prompt: 'x', max_tokens: 3 });
  const stats = await control.stats();
  expect(stats.engines[1]!.completed).toBe(1);
  expect(stats.engines[1]!.generationTokens).toBe(3);
  expect(stats.total.completed).toBe(1);
  await control.close();
});

it('sets a fault profile live, on one engine', async () => {
  const control = await ControlClient.connect(server.control.url!, 'secret');
  await control.setFaultProfile({ 'status-429': 1 }, 0);
  expect((await post(`${server.engines[0]!.url}/v1/completions`, { prompt: 'x', max_tokens: 1 })).status).toBe(429);
  expect((await post(`${server.engines[1]!.url}/v1/completions`, { prompt: 'x', max_tokens: 1 })).status).toBe(200);
  await control.setFaultProfile('none');
  expect((await post(`${server.engines[0]!.url}/v1/completions`, { prompt: 'x', max_tokens: 1 })).status).toBe(200);
  await control.close();
});

it('sets the latency model live and rejects bad values with the field name', async () => {
  const control = await ControlClient.connect(server.control.url!, 'secret');
  await control.setLatency({ ttftMs: 200, jitter: 0 });
  // The server's own TTFT figure for the request (its timing header), not the test's clock.
  const slow = await post(`${server.url}/v1/completions`, { prompt: 'x', max_tokens: 1 });
  expect(Number(slow.headers['x-fake-ttft-ms'])).toBeGreaterThanOrEqual(200);
  await control.setLatency({ ttftMs: 1 });
  await expect(control.setLatency({ itlMs: -1 })).rejects.toThrow(/itlMs/);
  await expect(control.setFaultProfile({ bogus: 1 } as never)).rejects.toThrow(/Unknown fault `bogus`/);
  await control.close();
});

it('refuses clients without the token', async () => {
  await expect(ControlClient.connect(server.control.url!)).rejects.toThrow(/401/);
  const socket = new WebSocket(`${server.control.url}?token=secret`);
  await new Promise((resolve, reject) => {
    socket.once('open', resolve);
    socket.once('error', reject);
  });
  socket.close();
});
