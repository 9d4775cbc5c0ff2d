import type { ChildProcess } from 'node:child_process';
import { skipReason } from '@rig/test-support';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RemoteInferenceClient, TimeoutError } from '../src/index.js';
import { startUvicorn } from './helpers.js';

// The stream rules checked against REAL uvicorn (Debian's python3-uvicorn), not only against fake-vllm: uvicorn
// writes a stream's 200 and headers as soon as the app sends `http.response.start`, which a Starlette
// StreamingResponse (what vLLM returns for streams) does before its first token. fixtures/uvicorn_stream_app.py
// is a raw ASGI app that streams that way.
const skipped = skipReason('remote-inference-client uvicorn-stream.test.ts', ['uvicorn']);

describe.skipIf(skipped !== undefined)('streams against real uvicorn', () => {
  let uvicorn: ChildProcess;
  let url: string;
  beforeAll(async () => {
    ({ url, child: uvicorn } = await startUvicorn());
  });
  afterAll(() => {
    uvicorn?.kill('SIGKILL');
  });

  const attempts = async (id: string) =>
    ((await (await fetch(`${url}/attempts?id=${id}`)).json()) as { attempts: number }).attempts;
  const tokens = async (stream: AsyncIterable<{ choices: { token_ids: number[] }[] }>) => {
    const received: number[] = [];
    for await (const chunk of stream) received.push(...chunk.choices[0]!.token_ids);
    return received;
  };

  it('headers at once, first token later: the stream waits for it and completes', async () => {
    const client = new RemoteInferenceClient({ engines: [url], transport: { shared: false } });
    try {
      const stream = await client.generate(
        { token_ids: [1], sampling_params: { max_tokens: 3 }, stream: true },
        { headers: { 'x-scenario': 'slow-first', 'x-delay-ms': '300', 'x-request-id': 'slow' } },
      );
      expect(await tokens(stream)).toEqual([11, 12, 13]);
    } finally {
      await client.close();
    }
  });

  // What reached the caller decides: a stream that dies after its 200 headers delivered nothing (an engine restarted
  // while the request sat in its queue) and is re-sent; so is one that dies after bytes that are no event.
  it.each([
    ['die-once', 'nothing but its headers'],
    ['ping-then-die', 'an SSE comment'],
    ['half-then-die', 'half of a data event'],
  ])('a stream that dies (%s) after %s and before any data event is re-sent', async (scenario) => {
    const client = new RemoteInferenceClient({
      engines: [url],
      retry: { baseBackoffMs: 1, maxBackoffMs: 5 },
      transport: { shared: false },
    });
    try {
      const stream = await client.generate(
        { token_ids: [1], sampling_params: { max_tokens: 3 }, stream: true },
        { headers: { 'x-scenario': scenario, 'x-request-id': scenario, 'x-delay-ms': '0' } },
      );
      expect(await tokens(stream)).toEqual([11, 12, 13]);
      // uvicorn's app saw two requests with this id: the one that died, and the re-sent one.
      expect(await attempts(scenario)).toBe(2);
      expect(client.stats().retries).toBe(1);
    } finally {
      await client.close();
    }
  });

  it.each([
    ['never', 'headers alone'],
    ['pings', 'SSE comments (pings)'],
  ])('ttfbMs runs to the first data event (%s): %s do not satisfy it', async (scenario) => {
    const client = new RemoteInferenceClient({
      engines: [url],
      timeouts: { ttfbMs: 300 },
      retry: { maxAttempts: 1 },
      transport: { shared: false },
    });
    try {
      const error = await client
        .generate(
          { token_ids: [1], sampling_params: { max_tokens: 3 }, stream: true },
          { headers: { 'x-scenario': scenario, 'x-request-id': scenario }, timeoutMs: 20_000 },
        )
        .then(tokens)
        .catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(TimeoutError);
      expect((error as TimeoutError).phase).toBe('ttfb');
    } finally {
      await client.close();
    }
  });
});
