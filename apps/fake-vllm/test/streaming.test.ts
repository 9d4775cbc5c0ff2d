import { connect } from 'node:net';
import { Client, request } from 'undici';
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import { type FakeVllm, type FaultName, startFakeVllm } from '../src/index.js';
import { post, sseChunks, sseData } from './helpers.js';

// When a response's bytes go out, as vLLM sends them. vLLM returns a Starlette `StreamingResponse` for streams
// (vllm/entrypoints/openai/completion/api_router.py and chat_completion/api_router.py return
// `StreamingResponse(content=generator, media_type="text/event-stream")`); Starlette sends `http.response.start`
// before it iterates the generator, and uvicorn writes the status line and headers at once — while the request is
// still queued, paused or in prefill. Non-streamed responses are a `JSONResponse` built after generation ends.
let server: FakeVllm;
beforeAll(async () => {
  server = await startFakeVllm({ ttftMs: 2, itlMs: 2, jitter: 0 });
});
afterAll(() => server.close());
afterEach(async () => {
  await post(`${server.url}/resume`, {});
  await server.control.setFaultProfile('none');
});

const engineStats = async () => (await server.control.stats()).engines[0]!;
const injected = async (name: FaultName) => (await server.control.stats()).total.faults[name];

async function until(check: () => Promise<boolean>): Promise<void> {
  for (let polls = 0; !(await check()); polls++) {
    if (polls > 250) throw new Error('condition not reached after 250 polls');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

it('a stream gets 200 and its headers while the engine has produced nothing; tokens follow when it runs', async () => {
  await post(`${server.url}/pause?mode=keep`, {});
  const before = await engineStats();
  const response = await request(`${server.url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ prompt: [1, 2], max_tokens: 5, stream: true }),
  });
  // Headers are here, and fake-vllm's own counters say no token was generated yet.
  expect(response.statusCode).toBe(200);
  expect(response.headers['content-type']).toBe('text/event-stream; charset=utf-8');
  const during = await engineStats();
  expect(during.generationTokens).toBe(before.generationTokens);
  expect(during.running + during.waiting).toBe(1);
  await post(`${server.url}/resume`, {});
  const text = await response.body.text();
  expect(sseChunks(text)).toHaveLength(5);
  // The server's own timings follow the body as a standard Server-Timing trailer.
  expect(response.trailers['server-timing']).toMatch(
    /^queue;dur=[\d.]+, ttft;dur=[\d.]+, e2e;dur=[\d.]+, prefill;dur=[\d.]+;desc="\d+"$/,
  );
});

it('a non-streamed response sends no byte until generation ends', async () => {
  await post(`${server.url}/pause?mode=keep`, {});
  let answered = false;
  const pending = post(`${server.url}/v1/completions`, { prompt: [1, 2], max_tokens: 3 }).then((result) => {
    answered = true;
    return result;
  });
  await until(async () => {
    const stats = await engineStats();
    return stats.running + stats.waiting === 1;
  });
  expect(answered).toBe(false);
  await post(`${server.url}/resume`, {});
  const response = await pending;
  expect(response.status).toBe(200);
  expect(response.headers['server-timing']).toMatch(
    /^queue;dur=[\d.]+, ttft;dur=[\d.]+, e2e;dur=[\d.]+, prefill;dur=[\d.]+;desc="\d+"$/,
  );
});

it('reset-mid-stream; after_tokens=N: the client receives exactly N tokens, then the reset', async () => {
  for (const tokens of [1, 3]) {
    const client = new Client(server.url);
    const response = await client.request({
      path: '/v1/completions',
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-fake-fault': `reset-mid-stream; after_tokens=${tokens}` },
      body: JSON.stringify({ prompt: [1], max_tokens: 20, stream: true }),
    });
    let text = '';
    const error = await (async () => {
      for await (const chunk of response.body) text += chunk;
    })().catch((caught: Error & { code?: string }) => caught);
    await client.destroy();
    expect(response.statusCode).toBe(200);
    expect((error as { code?: string } | undefined)?.code).toMatch(/ECONNRESET|UND_ERR_SOCKET/);
    expect(sseData(text)).toHaveLength(tokens);
  }
});

it('a body-level fault on a non-streamed request is injected and counted once, not once per engine step', async () => {
  const before = await injected('error-mid-stream');
  const response = await post(
    `${server.url}/v1/completions`,
    { prompt: [1], max_tokens: 10 },
    { 'x-fake-fault': 'error-mid-stream' },
  );
  expect(response.status).toBe(500);
  expect(await injected('error-mid-stream')).toBe(before + 1);
});

it('idle-close-race given as a header closes that socket once idle, and counts it', async () => {
  const before = await injected('idle-close-race');
  const port = Number(new URL(server.url).port);
  const socket = connect(port, '127.0.0.1');
  await new Promise((resolve) => socket.once('connect', resolve));
  const ended = new Promise((resolve) => socket.once('end', resolve));
  let text = '';
  socket.on('data', (chunk: Buffer) => {
    text += chunk.toString();
  });
  const body = JSON.stringify({ prompt: [1], max_tokens: 1 });
  socket.write(
    `POST /v1/completions HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\nx-fake-fault: idle-close-race; delay_ms=0\r\n\r\n${body}`,
  );
  await ended;
  socket.destroy();
  expect(text).toMatch(/^HTTP\/1\.1 200/);
  expect(await injected('idle-close-race')).toBe(before + 1);
});
