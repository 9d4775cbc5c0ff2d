import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expectedCompletion, type FakeVllm, generatedTokenText, startFakeVllm, tokenize } from '../src/index.js';
import { get, post, sseChunks, sseData } from './helpers.js';

let server: FakeVllm;
let url: string;

beforeAll(async () => {
  server = await startFakeVllm({ ttftMs: 5, itlMs: 2, jitter: 0, seed: 42 });
  url = server.url;
});
afterAll(() => server.close());

const textOf = (ids: number[]) => ids.map((id) => generatedTokenText(id)).join('');

describe('POST /v1/completions', () => {
  it('returns exactly the deterministic completion with usage', async () => {
    const response = await post(`${url}/v1/completions`, { model: 'fake-model', prompt: 'hello world', max_tokens: 7 });
    expect(response.status).toBe(200);
    const body = JSON.parse(response.text);
    const expected = expectedCompletion(tokenize('hello world'), { seed: 42, maxTokens: 7 });
    expect(body).toMatchObject({
      object: 'text_completion',
      model: 'fake-model',
      choices: [{ index: 0, text: textOf(expected.tokenIds), finish_reason: 'length' }],
      usage: { prompt_tokens: 11, completion_tokens: 7, total_tokens: 18 },
    });
    expect(body.id).toMatch(/^cmpl-/);
    expect(Number(response.headers['x-fake-ttft-ms'])).toBeGreaterThan(0);
    expect(Number(response.headers['x-fake-queue-ms'])).toBeGreaterThanOrEqual(0);
    expect(response.headers['x-fake-request-id']).toBe(body.id);
  });

  it('accepts token ids, batches and n, numbering choices across the batch', async () => {
    const response = await post(`${url}/v1/completions`, {
      prompt: [
        [1, 2],
        [3, 4],
      ],
      n: 2,
      max_tokens: 3,
      seed: 5,
      return_token_ids: true,
    });
    const body = JSON.parse(response.text);
    expect(body.choices.map((choice: { index: number }) => choice.index)).toEqual([0, 1, 2, 3]);
    expect(body.choices[3].token_ids).toEqual(expectedCompletion([3, 4], { seed: 6, maxTokens: 3 }).tokenIds);
    expect(body.choices[2].prompt_token_ids).toEqual([3, 4]);
    expect(body.usage.completion_tokens).toBe(12);
  });

  it('returns logprobs in the completions shape', async () => {
    const body = JSON.parse((await post(`${url}/v1/completions`, { prompt: [1], max_tokens: 2, logprobs: 1 })).text);
    expect(body.choices[0].logprobs.tokens).toHaveLength(2);
    expect(body.choices[0].logprobs.token_logprobs.every((value: number) => value <= 0 && value > -4)).toBe(true);
    expect(body.choices[0].logprobs.top_logprobs).toHaveLength(2);
  });

  it('streams SSE with a usage chunk and [DONE], tokens matching the non-streamed ones', async () => {
    const response = await post(`${url}/v1/completions`, {
      prompt: [9, 9],
      max_tokens: 5,
      stream: true,
      stream_options: { include_usage: true },
    });
    expect(response.headers['content-type']).toBe('text/event-stream; charset=utf-8');
    const chunks = sseChunks<{ choices: { text: string; finish_reason: string | null }[]; usage: unknown }>(
      response.text,
    );
    const usage = chunks.pop()!;
    expect(usage.choices).toEqual([]);
    // vLLM writes the usage chunk without None fields (exclude_none, openai/completion/serving.py).
    expect(usage.usage).toEqual({ prompt_tokens: 2, total_tokens: 7, completion_tokens: 5 });
    expect(chunks.map((chunk) => chunk.choices[0]!.text).join('')).toBe(
      textOf(expectedCompletion([9, 9], { seed: 42, maxTokens: 5 }).tokenIds),
    );
    expect(chunks.map((chunk) => chunk.choices[0]!.finish_reason)).toEqual([null, null, null, null, 'length']);
    // Normal chunks are dumped with exclude_unset: no `usage` key at all.
    expect(chunks.every((chunk) => !('usage' in chunk))).toBe(true);
  });

  it('sends no usage chunk unless asked', async () => {
    const response = await post(`${url}/v1/completions`, { prompt: [9], max_tokens: 2, stream: true });
    const chunks = sseChunks<{ choices: unknown[] }>(response.text);
    expect(chunks).toHaveLength(2);
    expect(chunks.every((chunk) => chunk.choices.length === 1)).toBe(true);
  });

  it('rejects bad input with vLLM error bodies naming the field', async () => {
    const cases: Array<[unknown, number, RegExp]> = [
      [{ prompt: 'x', max_tokens: -1 }, 400, /max_tokens/],
      [{ prompt: 42 }, 400, /prompt/],
      [{ prompt: 'x', model: 'other' }, 404, /does not exist/],
      [{ prompt: [1], max_tokens: 40_000 }, 400, /maximum context length/],
      [{ prompt: 'x', stream_options: { include_usage: true } }, 400, /stream=True/],
      [{ prompt: [1, 99_999] }, 400, /out of vocabulary/],
    ];
    for (const [body, status, message] of cases) {
      const response = await post(`${url}/v1/completions`, body);
      expect(response.status).toBe(status);
      const error = JSON.parse(response.text).error;
      expect(error.code).toBe(status);
      expect(error.message).toMatch(message);
      expect(typeof error.type).toBe('string');
    }
    const invalid = await fetch(`${url}/v1/completions`, { method: 'POST', body: '{not json' });
    expect(invalid.status).toBe(400);
  });
});

describe('POST /v1/chat/completions', () => {
  it('answers with an assistant message', async () => {
    const body = JSON.parse(
      (await post(`${url}/v1/chat/completions`, { messages: [{ role: 'user', content: 'hi' }], max_tokens: 4 })).text,
    );
    expect(body.object).toBe('chat.completion');
    expect(body.choices[0].message.role).toBe('assistant');
    expect(body.choices[0].message.content.split(' ').length).toBe(5);
    expect(body.usage.completion_tokens).toBe(4);
  });

  it('streams a role delta first, then content deltas, finish reason, usage and [DONE]', async () => {
    const response = await post(`${url}/v1/chat/completions`, {
      messages: [{ role: 'user', content: 'hi' }],
      max_tokens: 3,
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks = sseChunks<{
      object: string;
      choices: { delta: Record<string, string>; finish_reason: string | null }[];
      usage?: unknown;
    }>(response.text);
    expect(chunks[0]!.choices[0]!.delta).toEqual({ role: 'assistant', content: '' });
    expect(chunks.slice(1, 4).map((chunk) => chunk.choices[0]!.finish_reason)).toEqual([null, null, 'length']);
    expect(chunks[4]!.choices).toEqual([]);
    expect(chunks.every((chunk) => chunk.object === 'chat.completion.chunk')).toBe(true);
  });
});

describe('POST /inference/v1/generate', () => {
  it('returns token ids and logprobs for token ids in', async () => {
    const body = JSON.parse(
      (
        await post(`${url}/inference/v1/generate`, {
          token_ids: [1, 2, 3],
          sampling_params: { max_tokens: 6, logprobs: 0, seed: 3 },
        })
      ).text,
    );
    expect(body.request_id).toMatch(/^generate-tokens-/);
    expect(body.choices[0].token_ids).toEqual(expectedCompletion([1, 2, 3], { seed: 3, maxTokens: 6 }).tokenIds);
    expect(body.choices[0].logprobs.content).toHaveLength(6);
    expect(body.choices[0].logprobs.content[0].token).toBe(`token_id:${body.choices[0].token_ids[0]}`);
    expect(body.choices[0].finish_reason).toBe('length');
  });

  it('streams token ids', async () => {
    const response = await post(`${url}/inference/v1/generate`, {
      token_ids: [4],
      sampling_params: { max_tokens: 4 },
      stream: true,
    });
    const chunks = sseChunks<{ choices: { token_ids: number[] }[] }>(response.text);
    expect(chunks.flatMap((chunk) => chunk.choices[0]!.token_ids)).toEqual(
      expectedCompletion([4], { seed: 42, maxTokens: 4 }).tokenIds,
    );
  });
});

describe('other endpoints', () => {
  it('serves models, health, version and 404', async () => {
    expect((await get(`${url}/health`)).status).toBe(200);
    expect(JSON.parse((await get(`${url}/v1/models`)).text).data[0]).toMatchObject({
      id: 'fake-model',
      object: 'model',
      owned_by: 'vllm',
    });
    expect((await get(`${url}/version`)).status).toBe(200);
    const missing = await get(`${url}/nope`);
    expect(missing.status).toBe(404);
    // FastAPI's own 404 (vLLM's error handler covers only FastAPI's HTTPException subclass): test/control-plane.test.ts.
    expect(JSON.parse(missing.text)).toEqual({ detail: 'Not Found' });
  });

  it('tokenizes and detokenizes', async () => {
    const tokens = JSON.parse((await post(`${url}/tokenize`, { prompt: 'hello kavo' })).text);
    expect(tokens.count).toBe(tokens.tokens.length);
    expect(JSON.parse((await post(`${url}/detokenize`, { tokens: tokens.tokens })).text).prompt).toBe('hello kavo');
    const chat = JSON.parse((await post(`${url}/tokenize`, { messages: [{ role: 'user', content: 'hi' }] })).text);
    expect(chat.count).toBeGreaterThan(2);
    expect((await post(`${url}/detokenize`, { tokens: 'x' })).status).toBe(400);
  });

  it('exposes vLLM metric names and fault counters', async () => {
    await post(`${url}/v1/completions`, { prompt: 'x', max_tokens: 1 }, { 'x-fake-fault': 'status-429' });
    const text = (await get(`${url}/metrics`)).text;
    for (const name of [
      'vllm:num_requests_running{model_name="fake-model",engine="0"}',
      'vllm:num_requests_waiting{model_name="fake-model",engine="0"}',
      'vllm:time_to_first_token_seconds_bucket',
      'vllm:inter_token_latency_seconds_bucket',
      'vllm:generation_tokens_total',
    ]) {
      expect(text).toContain(name);
    }
    expect(text).toMatch(
      /fake_vllm:faults_injected_total\{model_name="fake-model",engine="0",fault="status-429"\} [1-9]/,
    );
  });

  it('answers the RL control plane', async () => {
    expect(JSON.parse((await get(`${url}/is_paused`)).text)).toEqual({ is_paused: false });
    expect((await post(`${url}/pause?mode=wait`, {})).status).toBe(200);
    expect(JSON.parse((await get(`${url}/is_paused`)).text)).toEqual({ is_paused: true });
    expect((await post(`${url}/resume`, {})).status).toBe(200);
    expect((await post(`${url}/pause?mode=bogus`, {})).status).toBe(400);
    expect((await post(`${url}/sleep?level=1`, {})).status).toBe(200);
    expect(JSON.parse((await get(`${url}/is_sleeping`)).text)).toEqual({ is_sleeping: true });
    expect((await post(`${url}/wake_up`, {})).status).toBe(200);
    expect(JSON.parse((await get(`${url}/is_sleeping`)).text)).toEqual({ is_sleeping: false });
    expect((await post(`${url}/reset_prefix_cache`, {})).status).toBe(200);
    expect((await post(`${url}/init_weight_transfer_engine`, { init_info: {} })).status).toBe(200);
    expect(JSON.parse((await post(`${url}/update_weights`, { update_info: {} })).text)).toEqual({
      message: 'Weights updated',
    });
    expect(JSON.parse((await post(`${url}/collective_rpc`, { method: 'report' })).text).results).toHaveLength(1);
    expect((await post(`${url}/collective_rpc`, {})).status).toBe(400);
    expect(JSON.parse((await get(`${url}/get_world_size`)).text)).toEqual({ world_size: 1 });
  });
});

describe('pause modes', () => {
  it('abort ends in-flight requests with finish_reason abort', async () => {
    const pending = post(`${url}/v1/completions`, { prompt: [1], max_tokens: 5000, stream: true });
    await new Promise((resolve) => setTimeout(resolve, 50));
    await post(`${url}/pause?mode=abort`, {});
    const chunks = sseChunks<{ choices: { finish_reason: string | null }[] }>((await pending).text);
    expect(chunks.at(-1)!.choices[0]!.finish_reason).toBe('abort');
    await post(`${url}/resume`, {});
  });

  it('keep freezes in-flight requests until resume, and new requests wait', async () => {
    const pending = post(`${url}/v1/completions`, { prompt: [1], max_tokens: 60, stream: true });
    await new Promise((resolve) => setTimeout(resolve, 30));
    await post(`${url}/pause?mode=keep`, {});
    const before = (await server.control.stats()).total.generationTokens;
    const queued = post(`${url}/v1/completions`, { prompt: [2], max_tokens: 2 });
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect((await server.control.stats()).total.generationTokens).toBe(before);
    await post(`${url}/resume`, {});
    const chunks = sseChunks<{ choices: { finish_reason: string | null }[] }>((await pending).text);
    expect(chunks).toHaveLength(60);
    expect(chunks.at(-1)!.choices[0]!.finish_reason).toBe('length');
    expect((await queued).status).toBe(200);
  });

  it('wait returns only once in-flight requests finished', async () => {
    let finished = false;
    const pending = post(`${url}/v1/completions`, { prompt: [1], max_tokens: 40 }).then((response) => {
      finished = true;
      return response;
    });
    await new Promise((resolve) => setTimeout(resolve, 20));
    await post(`${url}/pause?mode=wait`, {});
    await new Promise((resolve) => setImmediate(resolve));
    expect(finished).toBe(true);
    expect(JSON.parse((await pending).text).choices[0].finish_reason).toBe('length');
    await post(`${url}/resume`, {});
  });
});

describe('SSE framing', () => {
  it('is `data: <json>\\n\\n` per event with nothing else on the wire', async () => {
    const response = await post(`${url}/v1/completions`, { prompt: [3], max_tokens: 3, stream: true });
    expect(sseData(response.text)).toHaveLength(4);
    expect(response.text).toMatch(/^(data: [^\n]+\n\n)+$/);
    expect(response.text.endsWith('data: [DONE]\n\n')).toBe(true);
  });
});
