import { afterAll, describe, expect, inject, it } from 'vitest';
import { type CompletionChunk, InvalidOptionsError, RemoteInferenceClient } from '../src/index.js';
import { expectedText, expectedTokens } from './helpers.js';

const engines = inject('engines');
// Engine i of the shared deployment is seeded 11 + i; requests pin `seed` so either engine gives the same tokens.
const client = new RemoteInferenceClient({ engines, model: 'fake-model' });
afterAll(() => client.close());

describe('trainer-facing API against fake-vllm', () => {
  it('completions.create returns the exact deterministic text', async () => {
    const completion = await client.completions.create({ prompt: 'hello world', max_tokens: 8, seed: 3 });
    expect(completion.choices[0]!.text).toBe(expectedText('hello world', 3, 8));
    expect(completion.usage.completion_tokens).toBe(8);
  });

  it('completions stream yields typed chunks and the usage chunk', async () => {
    const stream = await client.completions.create({
      prompt: 'hi',
      max_tokens: 6,
      seed: 3,
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks: CompletionChunk[] = [];
    for await (const chunk of stream) chunks.push(chunk);
    expect(
      chunks
        .slice(0, -1)
        .map((chunk) => chunk.choices[0]!.text)
        .join(''),
    ).toBe(expectedText('hi', 3, 6));
    expect(chunks.at(-1)!.choices).toEqual([]);
    expect(chunks.at(-1)!.usage?.completion_tokens).toBe(6);
  });

  it('chat completions, whole and streamed, agree', async () => {
    const messages = [{ role: 'user', content: 'hello' }];
    const whole = await client.chat.completions.create({ messages, max_tokens: 5, seed: 1 });
    const stream = await client.chat.completions.create({ messages, max_tokens: 5, seed: 1, stream: true });
    let content = '';
    for await (const chunk of stream) content += chunk.choices[0]?.delta.content ?? '';
    expect(content).toBe(whole.choices[0]!.message.content);
  });

  it('generate returns token ids and logprobs, whole and streamed', async () => {
    const whole = await client.generate({
      token_ids: [1, 2, 3],
      sampling_params: { max_tokens: 12, seed: 5, logprobs: 0 },
    });
    expect(whole.choices[0]!.token_ids).toEqual(expectedTokens([1, 2, 3], 5, 12));
    expect(whole.choices[0]!.logprobs!.content).toHaveLength(12);
    const stream = await client.generate({
      token_ids: [1, 2, 3],
      sampling_params: { max_tokens: 12, seed: 5 },
      stream: true,
    });
    const streamed: number[] = [];
    for await (const chunk of stream) streamed.push(...chunk.choices[0]!.token_ids);
    expect(streamed).toEqual(whole.choices[0]!.token_ids);
  });

  it('generateBatch returns results in order, each verified, with onResult per item', async () => {
    const items = Array.from({ length: 40 }, (_, index) => ({
      token_ids: [index + 1],
      sampling_params: { max_tokens: 4, seed: 9 },
    }));
    const seen: number[] = [];
    const results = await client.generateBatch(items, { onResult: (index) => seen.push(index) });
    expect(results).toHaveLength(40);
    results.forEach((result, index) => {
      expect(result.ok).toBe(true);
      if (result.ok) expect(result.value.choices[0]!.token_ids).toEqual(expectedTokens([index + 1], 9, 4));
    });
    expect(seen.sort((a, b) => a - b)).toEqual(items.map((_, index) => index));
  });

  it('tokenizes and detokenizes', async () => {
    const tokens = await client.tokenize({ prompt: 'round trip' });
    expect((await client.detokenize({ tokens: tokens.tokens })).prompt).toBe('round trip');
  });

  it('waits until healthy and reports stats per engine', async () => {
    await client.waitUntilHealthy({ timeoutMs: 5000 });
    const stats = client.stats();
    expect(stats.engines.map((engine) => engine.endpoint)).toEqual(engines);
    expect(stats.completed).toBeGreaterThan(0);
    expect(stats.failed).toBe(0);
    expect(stats.connections.opened).toBeGreaterThan(0);
    expect(stats.engines.every((engine) => engine.requests > 0)).toBe(true);
  });

  it('rejects bad options with the field named', () => {
    expect(() => new RemoteInferenceClient({ engines: [] })).toThrow(/`engines`/);
    expect(() => new RemoteInferenceClient({ engines: ['ftp://x'] })).toThrow(InvalidOptionsError);
    expect(() => new RemoteInferenceClient({ engines: ['http://x/v1'] })).toThrow(/without a path/);
    expect(() => new RemoteInferenceClient({ engines, retry: { maxAttempts: 0 } })).toThrow(/retry.maxAttempts/);
    expect(() => new RemoteInferenceClient({ engines, routing: 'random' as never })).toThrow(/routing/);
    expect(() => new RemoteInferenceClient({ engines, sourceIps: ['10.99.99.99'] })).toThrow(/sourceIps\[0\]/);
    expect(() => new RemoteInferenceClient({ engines, limits: { maxQps: -1 } })).toThrow(/limits.maxQps/);
  });

  it('surfaces engine 4xx as HttpStatusError without retrying', async () => {
    const error = await client.completions.create({ prompt: 'x', max_tokens: -5 }).catch((caught: unknown) => caught);
    expect(error).toMatchObject({ code: 'ERR_HTTP_STATUS', status: 400, attempts: 1 });
  });
});
