import { type FakeVllm, type FakeVllmStats, startFakeVllm } from 'fake-vllm';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  ConnectionError,
  HttpStatusError,
  RemoteInferenceClient,
  RetriesExhaustedError,
  ServerStreamError,
  StreamInterruptedError,
  StreamParseError,
  StreamTruncatedError,
  TimeoutError,
} from '../src/index.js';
import { eventually, expectedText, expectedTokens } from './helpers.js';

let fake: FakeVllm;
let client: RemoteInferenceClient;
beforeAll(async () => {
  fake = await startFakeVllm({ ttftMs: 2, itlMs: 2, jitter: 0, seed: 0 });
  // A high failure threshold keeps the engine out of cooldown between tests that inject resets on purpose.
  client = new RemoteInferenceClient({
    engines: [fake.url],
    retry: { baseBackoffMs: 5, maxBackoffMs: 20 },
    health: { failureThreshold: 1000 },
  });
});
afterAll(async () => {
  await client.close();
  await fake.close();
});
// A test that fails half-way must not leave its fault profile on for the next one.
afterEach(async () => {});

/** How many times fake-vllm injected `name` so far (its own count). */
async function injected(name: string): Promise<number> {
  return (await fake.control.stats()).total.faults[name as keyof FakeVllmStats['total']['faults']] ?? 0;
}

const fault = (value: string) => ({ headers: { 'x-fake-fault': value } });

async function collect<T>(iterable: AsyncIterable<T>): Promise<{ chunks: T[]; error: unknown }> {
  const chunks: T[] = [];
  try {
    for await (const chunk of iterable) chunks.push(chunk);
    return { chunks, error: undefined };
  } catch (error) {
    return { chunks, error };
  }
}

describe('retried: failures before any response byte', () => {
  it('a reset before the response is retried and the request succeeds', async () => {
    await fake.control.setFaultProfile({ 'reset-before-response': { first: 2 } });
    const before = client.stats().retries;
    const completion = await client.completions.create({ prompt: 'a', max_tokens: 3, seed: 1 });
    expect(completion.choices[0]!.text).toBe(expectedText('a', 1, 3));
    expect(client.stats().retries - before).toBe(2);
  });

  it('a 503 with Retry-After is honoured and retried', async () => {
    await fake.control.setFaultProfile({ 'status-503': { first: 1, params: { retry_after: 0 } } });
    const [faultsBefore, retriesBefore] = [await injected('status-503'), client.stats().retries];
    const completion = await client.completions.create({ prompt: 'b', max_tokens: 2, seed: 1 });
    expect(completion.choices[0]!.text).toBe(expectedText('b', 1, 2));
    // The fault fired (fake-vllm's count) and the client absorbed it with exactly one retry.
    expect(await injected('status-503')).toBe(faultsBefore + 1);
    expect(client.stats().retries - retriesBefore).toBe(1);
  });

  it('a plain-text 500 from a router is retried', async () => {
    await fake.control.setFaultProfile({ 'status-500-text': { first: 1 } });
    const [faultsBefore, retriesBefore] = [await injected('status-500-text'), client.stats().retries];
    expect((await client.completions.create({ prompt: 'c', max_tokens: 1 })).choices).toHaveLength(1);
    expect(await injected('status-500-text')).toBe(faultsBefore + 1);
    expect(client.stats().retries - retriesBefore).toBe(1);
  });

  it('persistent resets exhaust the attempts with every attempt error kept', async () => {
    const error = (await client.completions
      .create({ prompt: 'd', max_tokens: 1 }, fault('reset-before-response'))
      .catch((caught: unknown) => caught)) as RetriesExhaustedError;
    expect(error).toBeInstanceOf(RetriesExhaustedError);
    expect(error.errors).toHaveLength(4);
    expect(error.errors.every((attempt) => attempt instanceof ConnectionError)).toBe(true);
    expect(error.attempts).toBe(4);
  });

  it('a Retry-After longer than allowed fails instead of sleeping', async () => {
    const error = await client.completions
      .create({ prompt: 'e', max_tokens: 1 }, fault('status-429; retry_after=120'))
      .catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(RetriesExhaustedError);
    expect((error as RetriesExhaustedError).message).toMatch(/Retry-After/);
  });
});

// vLLM sends a stream's 200 and headers at once, while the request is still queued (a Starlette StreamingResponse
// behind uvicorn; fake-vllm does the same, test/streaming.test.ts there). So a stream that breaks before its first
// data event delivered nothing to the caller and is retried; the ttfb deadline runs to the first data event.
describe('streams: what reached the caller decides', () => {
  it('a stream cut after its 200 headers and before any token is re-sent and completes', async () => {
    await fake.control.setFaultProfile({ 'reset-mid-stream': { first: 1, params: { after_tokens: 0 } } });
    const [faultsBefore, retriesBefore] = [await injected('reset-mid-stream'), client.stats().retries];
    const stream = await client.generate({
      token_ids: [3, 1],
      sampling_params: { max_tokens: 6, seed: 5 },
      stream: true,
    });
    const { chunks, error } = await collect(stream);
    expect(error).toBeUndefined();
    expect(chunks.flatMap((chunk) => chunk.choices[0]!.token_ids)).toEqual(expectedTokens([3, 1], 5, 6));
    expect(await injected('reset-mid-stream')).toBe(faultsBefore + 1);
    expect(client.stats().retries - retriesBefore).toBe(1);
  });

  it('ttfbMs bounds the wait for the first data event, not for the headers', async () => {
    const strict = new RemoteInferenceClient({
      engines: [fake.url],
      timeouts: { ttfbMs: 300 },
      retry: { maxAttempts: 1 },
      transport: { shared: false },
    });
    await strict.control.pause({ mode: 'keep' });
    try {
      const error = await strict.completions
        .create({ prompt: 'q', max_tokens: 2, stream: true })
        .then((stream) => collect(stream).then((outcome) => outcome.error))
        .catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(TimeoutError);
      expect((error as TimeoutError).phase).toBe('ttfb');
    } finally {
      await strict.control.resume();
      await strict.close();
    }
  });
});

describe('not retried', () => {
  it('a 422 is returned as is', async () => {
    const error = await client.completions
      .create({ prompt: 'f', max_tokens: 1 }, fault('status-422'))
      .catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(HttpStatusError);
    expect((error as HttpStatusError).status).toBe(422);
    expect((error as HttpStatusError).attempts).toBe(1);
  });

  it('a JSON 500 from the engine (it did the work) is not re-sent', async () => {
    const error = await client.completions
      .create({ prompt: 'g', max_tokens: 2 }, fault('error-mid-stream; after_tokens=1'))
      .catch((caught: unknown) => caught);
    expect(error).toMatchObject({ code: 'ERR_HTTP_STATUS', status: 500, attempts: 1 });
  });

  it('a reset mid-stream ends the stream with StreamInterruptedError after the chunks already received', async () => {
    const stream = await client.completions.create(
      { prompt: 'h', max_tokens: 50, stream: true },
      fault('reset-mid-stream; after_tokens=3'),
    );
    const { chunks, error } = await collect(stream);
    expect(chunks.length).toBeGreaterThan(0);
    expect(error).toBeInstanceOf(StreamInterruptedError);
  });

  it('a stream without [DONE] is StreamTruncatedError', async () => {
    const { error } = await collect(
      await client.completions.create(
        { prompt: 'i', max_tokens: 50, stream: true },
        fault('truncate-stream; after_tokens=2'),
      ),
    );
    expect(error).toBeInstanceOf(StreamTruncatedError);
  });

  it('a malformed chunk is StreamParseError', async () => {
    const { error } = await collect(
      await client.completions.create({ prompt: 'j', max_tokens: 5, stream: true }, fault('malformed-chunk')),
    );
    expect(error).toBeInstanceOf(StreamParseError);
  });

  it('an error event mid-stream is ServerStreamError', async () => {
    const { error } = await collect(
      await client.completions.create(
        { prompt: 'k', max_tokens: 50, stream: true },
        fault('error-mid-stream; after_tokens=2'),
      ),
    );
    expect(error).toBeInstanceOf(ServerStreamError);
  });
});

describe('resume for token-in/token-out streams', () => {
  // A profile rule with `first: 1` cuts exactly one attempt, as a real network fault would; a header would cut
  // the resumed attempts too.
  const cuts = {
    'reset-mid-stream': { first: 1, params: { after_tokens: 7 } },
    'truncate-stream': { first: 1, params: { after_tokens: 5 } },
    stall: { first: 1, params: { after_tokens: 4, ms: 10, action: 'reset' } },
  } as const;
  for (const [name, rule] of Object.entries(cuts)) {
    it(`equals the uninterrupted generation after ${name}`, async () => {
      await fake.control.setFaultProfile({ [name]: rule });
      const prompt = [5, 6, 7];
      const result = await client.generate(
        { token_ids: prompt, sampling_params: { max_tokens: 30, seed: 2, logprobs: 0 } },
        { resume: true },
      );
      expect(result.choices[0]!.token_ids).toEqual(expectedTokens(prompt, 2, 30));
      expect(result.choices[0]!.logprobs!.content).toHaveLength(30);
      expect(result.choices[0]!.finish_reason).toBe('length');
      expect((await fake.control.stats()).total.faults[name as 'stall']).toBeGreaterThan(0);
    });
  }

  it('streams seamlessly across the cut, and counts the resume', async () => {
    await fake.control.setFaultProfile({ 'reset-mid-stream': { first: 1, params: { after_tokens: 5 } } });
    const before = client.stats().resumes;
    const stream = await client.generate(
      { token_ids: [9], sampling_params: { max_tokens: 20, seed: 4 }, stream: true },
      { resume: true },
    );
    const tokens: number[] = [];
    for await (const chunk of stream) tokens.push(...chunk.choices[0]!.token_ids);
    expect(tokens).toEqual(expectedTokens([9], 4, 20));
    expect(client.stats().resumes).toBe(before + 1);
  });

  it('without resume, the same cut is a typed error', async () => {
    const stream = await client.generate(
      { token_ids: [9], sampling_params: { max_tokens: 20 }, stream: true },
      fault('reset-mid-stream; after_tokens=5'),
    );
    const { chunks, error } = await collect(stream);
    expect(chunks.length).toBeGreaterThan(0);
    expect(error).toBeInstanceOf(StreamInterruptedError);
  });

  it('refuses resume without max_tokens', async () => {
    await expect(client.generate({ token_ids: [1] }, { resume: true })).rejects.toThrow(/max_tokens/);
  });
});

describe('timeouts and aborts', () => {
  it('ttfb timeout when no byte arrives', async () => {
    const slow = new RemoteInferenceClient({
      engines: [fake.url],
      timeouts: { ttfbMs: 150 },
      transport: { shared: false },
    });
    const error = await slow.completions
      .create({ prompt: 'x', max_tokens: 1 }, fault('hang-before-headers'))
      .catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(TimeoutError);
    expect((error as TimeoutError).phase).toBe('ttfb');
    await slow.close();
  });

  it('idle timeout when a stream stalls', async () => {
    const slow = new RemoteInferenceClient({
      engines: [fake.url],
      timeouts: { idleMs: 150 },
      transport: { shared: false },
    });
    const stream = await slow.completions.create(
      { prompt: 'x', max_tokens: 20, stream: true },
      fault('stall; after_tokens=2; ms=2000'),
    );
    const { error } = await collect(stream);
    expect(error).toBeInstanceOf(TimeoutError);
    expect((error as TimeoutError).phase).toBe('idle');
    await slow.close();
  });

  it('total deadline across a long generation', async () => {
    const error = await client.completions
      .create({ prompt: 'x', max_tokens: 5000 }, { timeoutMs: 100 })
      .catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(TimeoutError);
    expect((error as TimeoutError).phase).toBe('total');
  });

  it('an abort signal ends the request with AbortError and frees the server slot', async () => {
    const controller = new AbortController();
    const pending = client.completions.create({ prompt: 'x', max_tokens: 5000 }, { signal: controller.signal });
    await eventually(async () => (await fake.control.stats()).total.running === 1);
    const cancelledBefore = (await fake.control.stats()).total.cancelled;
    controller.abort();
    await expect(pending).rejects.toMatchObject({ code: 'ERR_ABORTED' });
    await eventually(async () => (await fake.control.stats()).total.cancelled === cancelledBefore + 1);
  });

  it('break out of a stream aborts the request and frees its connection', async () => {
    const stream = await client.completions.create({ prompt: 'x', max_tokens: 5000, stream: true });
    let received = 0;
    for await (const _chunk of stream) if (++received === 3) break;
    await eventually(async () => (await fake.control.stats()).total.running === 0);
    expect(client.stats().inFlight).toBe(0);
  });
});
