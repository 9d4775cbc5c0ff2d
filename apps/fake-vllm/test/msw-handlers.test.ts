import { setupServer } from 'msw/node';
import OpenAI from 'openai';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { expectedCompletion, generatedTokenText, tokenize } from '../src/index.js';
import { createFakeVllmHandlers } from '../src/msw/handlers.js';

const fake = createFakeVllmHandlers({ baseUrl: 'http://fake-vllm.test', ttftMs: 1, itlMs: 1, seed: 4, maxNumSeqs: 2 });
const mock = setupServer(...fake.handlers);
let client: OpenAI;
beforeAll(() => {
  mock.listen({ onUnhandledRequest: 'error' });
  // openai-node keeps the `fetch` it finds at construction: build it after msw has patched the global.
  client = new OpenAI({ baseURL: 'http://fake-vllm.test/v1', apiKey: 'unused', maxRetries: 0 });
});
afterAll(() => mock.close());

const expectedText = (prompt: string, maxTokens: number) =>
  expectedCompletion(tokenize(prompt), { seed: 4, maxTokens })
    .tokenIds.map((id) => generatedTokenText(id))
    .join('');

it('serves openai-node completions in-process, whole and streamed', async () => {
  const whole = await client.completions.create({ model: 'fake-model', prompt: 'hey', max_tokens: 5 });
  expect(whole.choices[0]!.text).toBe(expectedText('hey', 5));
  const stream = await client.completions.create({
    model: 'fake-model',
    prompt: 'hey',
    max_tokens: 5,
    stream: true,
    stream_options: { include_usage: true },
  });
  let text = '';
  let completionTokens = 0;
  for await (const chunk of stream) {
    text += chunk.choices[0]?.text ?? '';
    completionTokens = chunk.usage?.completion_tokens ?? completionTokens;
  }
  expect(text).toBe(expectedText('hey', 5));
  expect(completionTokens).toBe(5);
});

it('serves chat streaming through openai-node', async () => {
  const stream = await client.chat.completions.create({
    model: 'fake-model',
    messages: [{ role: 'user', content: 'x' }],
    max_tokens: 3,
    stream: true,
  });
  const deltas: string[] = [];
  for await (const chunk of stream) deltas.push(chunk.choices[0]?.delta.content ?? '');
  expect(deltas.join('').split(' ')).toHaveLength(4);
});

it('queues beyond max_num_seqs, like the server', async () => {
  await Promise.all(
    Array.from({ length: 6 }, () => client.completions.create({ model: 'fake-model', prompt: 'q', max_tokens: 3 })),
  );
  expect(fake.engine.counters.maxRunning).toBe(2);
  expect(fake.engine.counters.completed).toBeGreaterThanOrEqual(6);
});

it('injects HTTP faults and network errors', async () => {
  const limited = await fetch('http://fake-vllm.test/v1/completions', {
    method: 'POST',
    // vLLM answers any generation request without a JSON content type with 400 before anything else.
    headers: { 'content-type': 'application/json', 'x-fake-fault': 'status-429; retry_after=3' },
    body: JSON.stringify({ prompt: 'x' }),
  });
  expect(limited.status).toBe(429);
  expect(limited.headers.get('retry-after')).toBe('3');
  await expect(
    fetch('http://fake-vllm.test/v1/completions', {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-fake-fault': 'reset-before-response' },
      body: '{"prompt":"x"}',
    }),
  ).rejects.toThrow();
  expect(fake.injector.injected['reset-before-response']).toBe(1);
});
