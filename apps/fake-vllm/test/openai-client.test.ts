import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expectedCompletion, type FakeVllm, generatedTokenText, startFakeVllm, tokenize } from '../src/index.js';

let server: FakeVllm;
let client: OpenAI;
beforeAll(async () => {
  server = await startFakeVllm({ ttftMs: 2, itlMs: 1, jitter: 0, seed: 1 });
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0 });
});
afterAll(() => server.close());

const expectedText = (prompt: string, maxTokens: number) =>
  expectedCompletion(tokenize(prompt), { seed: 1, maxTokens })
    .tokenIds.map((id) => generatedTokenText(id))
    .join('');

describe('the openai npm package against fake-vllm', () => {
  it('completions, non-streaming', async () => {
    const completion = await client.completions.create({ model: 'fake-model', prompt: 'hello', max_tokens: 5 });
    expect(completion.choices[0]!.text).toBe(expectedText('hello', 5));
    expect(completion.usage?.completion_tokens).toBe(5);
  });

  it('completions, streaming with the usage chunk', async () => {
    const stream = await client.completions.create({
      model: 'fake-model',
      prompt: 'hello',
      max_tokens: 6,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = '';
    let usage: OpenAI.CompletionUsage | null | undefined;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.text ?? '';
      if (chunk.usage) usage = chunk.usage;
    }
    expect(text).toBe(expectedText('hello', 6));
    expect(usage?.completion_tokens).toBe(6);
  });

  it('chat, non-streaming and streaming with usage', async () => {
    const messages = [{ role: 'user' as const, content: 'hi there' }];
    const whole = await client.chat.completions.create({ model: 'fake-model', messages, max_tokens: 4 });
    const stream = await client.chat.completions.create({
      model: 'fake-model',
      messages,
      max_tokens: 4,
      stream: true,
      stream_options: { include_usage: true },
    });
    let content = '';
    let usage: OpenAI.CompletionUsage | null | undefined;
    let finish: string | null | undefined;
    for await (const chunk of stream) {
      content += chunk.choices[0]?.delta.content ?? '';
      finish = chunk.choices[0]?.finish_reason ?? finish;
      if (chunk.usage) usage = chunk.usage;
    }
    expect(content).toBe(whole.choices[0]!.message.content);
    expect(finish).toBe('length');
    expect(usage?.total_tokens).toBe(whole.usage?.total_tokens);
  });

  it('surfaces vLLM error bodies as APIError with status and message', async () => {
    const error = await client.completions.create({ model: 'missing', prompt: 'x' }).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(OpenAI.NotFoundError);
    expect((error as InstanceType<typeof OpenAI.NotFoundError>).message).toContain('does not exist');
  });

  it('lists models', async () => {
    const models = await client.models.list();
    expect(models.data.map((model) => model.id)).toEqual(['fake-model']);
  });
});
