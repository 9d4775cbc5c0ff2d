import { request } from 'undici';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ControlClient, type FakeVllm, startFakeVllm } from '../src/index.js';
import { post } from './helpers.js';

// An engine restarting mid-step, as a crashed vLLM: in-flight streams (running and queued) end with a connection
// reset, connects are refused while it is down, and it comes back with an empty prefix cache. Its neighbour is
// untouched.

let server: FakeVllm;
beforeAll(async () => {
  server = await startFakeVllm({ engines: 2, maxNumSeqs: 1, ttftMs: 1, itlMs: 2, jitter: 0 });
});
afterAll(() => server.close());

const prompt = Array.from({ length: 48 }, (_, index) => 700 + index);
const cachedTokens = async (url: string) =>
  Number(
    (await post(`${url}/inference/v1/generate`, { token_ids: prompt, sampling_params: { max_tokens: 1 } })).headers[
      'x-fake-cached-tokens'
    ],
  );

async function openStream(url: string) {
  const response = await request(`${url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ prompt: [1, 2, 3], max_tokens: 30_000, stream: true }),
  });
  let text = '';
  const ended = (async () => {
    try {
      for await (const chunk of response.body) text += String(chunk);
      return { error: undefined, text };
    } catch (error) {
      return { error: error as Error & { code?: string }, text };
    }
  })();
  return { response, ended, received: () => text };
}

async function connectError(url: string): Promise<string | undefined> {
  try {
    await request(`${url}/health`);
    return undefined;
  } catch (error) {
    const cause = (error as { cause?: { code?: string }; code?: string }).code;
    return cause;
  }
}

it('resets in-flight streams, refuses while down, and comes back with an empty prefix cache', async () => {
  const [restarting, neighbour] = server.engines.map((engine) => engine.url) as [string, string];
  // Both engines cache the prompt.
  for (const url of [restarting, neighbour]) {
    await cachedTokens(url);
    expect(await cachedTokens(url)).toBe(32);
  }
  // One stream running (it has sent tokens), one queued behind it (maxNumSeqs 1): both in flight.
  const running = await openStream(restarting);
  const queued = await openStream(restarting);
  for (let polls = 0; !running.received().includes('data: '); polls++) {
    if (polls > 500) throw new Error('no token arrived');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  expect((await server.control.stats()).engines[0]).toMatchObject({ running: 1, waiting: 1 });

  // Over the WebSocket control channel, as a benchmark in another process does it.
  const control = await ControlClient.connect(server.control.url!);
  await control.restartEngine({ downMs: 60_000 }, 0);
  await control.close();
  // A stream the restart failed to cut would hang: give up after 10 s with a message instead.
  let guard: NodeJS.Timeout | undefined;
  const [runningEnd, queuedEnd] = await Promise.race([
    Promise.all([running.ended, queued.ended]),
    new Promise<never>((_, reject) => {
      guard = setTimeout(() => reject(new Error('the restart did not end the in-flight streams')), 10_000);
    }),
  ]);
  clearTimeout(guard);
  for (const end of [runningEnd, queuedEnd]) {
    expect(end.error?.code).toBe('ECONNRESET');
    expect(end.text).not.toContain('[DONE]');
  }
  expect(await connectError(restarting)).toBe('ECONNREFUSED');
  expect(await connectError(neighbour)).toBeUndefined();
  const down = (await server.control.stats()).engines[0]!;
  expect(down).toMatchObject({
    restarting: true,
    restarts: 1,
    droppedByRestart: 2,
    running: 0,
    waiting: 0,
    cachedBlocks: 0,
  });

  // Restarting again, briefly, cuts the long window short; the engine then serves on the same port.
  await server.control.restartEngine({ downMs: 50 }, 0);
  for (let polls = 0; (await connectError(restarting)) !== undefined; polls++) {
    if (polls > 500) throw new Error('the engine never came back');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  expect((await server.control.stats()).engines[0]).toMatchObject({ restarting: false, restarts: 2 });
  expect(await cachedTokens(restarting)).toBe(0);
  expect(await cachedTokens(neighbour)).toBe(32);
  expect((await server.control.stats()).engines[1]!.restarts).toBe(0);
});

it('rejects bad restart and capacity options with the field named, in-process and over the channel', async () => {
  await expect(server.control.restartEngine({ downMs: -1 }, 1)).rejects.toThrow('downMs');
  await expect(server.control.restartEngine({}, 9)).rejects.toThrow('engine');
  const control = await ControlClient.connect(server.control.url!);
  try {
    await expect(control.restartEngine({ downMs: -1 }, 1)).rejects.toThrow('downMs');
    await expect(control.setCapacity({ kvCacheBlocks: 0 }, 1)).rejects.toThrow('kvCacheBlocks');
    await control.setCapacity({ maxNumSeqs: 3, kvCacheBlocks: 100 }, 1);
    expect((await control.stats()).engines[1]).toMatchObject({ maxNumSeqs: 3, kvCacheBlocks: 100, restarts: 0 });
  } finally {
    await control.close();
  }
});
