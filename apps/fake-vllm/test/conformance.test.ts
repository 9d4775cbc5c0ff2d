// Conformance with real vLLM where a client makes decisions. Each test names the vLLM file it follows (paths
// relative to vllm/entrypoints/ unless they start with vllm/), read at upstream vllm-project/vllm.
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CONTEXT_WINDOW,
  detokenize,
  eosTokenId,
  expectedCompletion,
  type FakeVllm,
  generatedTokenText,
  renderChatTokens,
  startFakeVllm,
  tokenize,
  tokenLogprob,
} from '../src/index.js';
import { post, sseChunks, sseData } from './helpers.js';

let server: FakeVllm;
let url: string;
/** A second server whose sequences can end with EOS, and whose context is short. */
let eosServer: FakeVllm;
let eosUrl: string;
const EOS_PROBABILITY = 0.2;
const MAX_MODEL_LEN = 64;

beforeAll(async () => {
  server = await startFakeVllm({ ttftMs: 1, itlMs: 1, jitter: 0, seed: 42 });
  url = server.url;
  eosServer = await startFakeVllm({
    ttftMs: 1,
    itlMs: 1,
    jitter: 0,
    seed: 42,
    eosProbability: EOS_PROBABILITY,
    maxModelLen: MAX_MODEL_LEN,
  });
  eosUrl = eosServer.url;
});
afterAll(async () => {
  await server.close();
  await eosServer.close();
});

const textOf = (ids: readonly number[]) => ids.map((id) => generatedTokenText(id)).join('');
// biome-ignore lint/suspicious/noExplicitAny: response bodies are asserted field by field
type Body = any;
const json = (text: string) => JSON.parse(text) as Record<string, Body>;

/** A prompt (token ids) whose sequence with `seed` ends with EOS before `maxTokens` on the EOS server. */
function eosPrompt(seed: number, maxTokens: number): number[] {
  for (let first = 300; ; first++) {
    const prompt = [first, first + 1];
    const expected = expectedCompletion(prompt, { seed, maxTokens, eosProbability: EOS_PROBABILITY });
    if (expected.finishReason === 'stop' && expected.tokenIds.length >= 3) return prompt;
  }
}

describe('stopping: EOS, stop_token_ids, stop strings, ignore_eos', () => {
  // vllm/v1/core/sched/utils.py check_stop (EOS: FINISHED_STOPPED, no stop_reason) and
  // vllm/v1/engine/detokenizer.py update() (the stop-terminated last token is not detokenized).
  it('keeps the EOS id in token_ids, logprobs and completion_tokens, not in the text; stop_reason null', async () => {
    const prompt = eosPrompt(7, 30);
    const expected = expectedCompletion(prompt, { seed: 7, maxTokens: 30, eosProbability: EOS_PROBABILITY });
    expect(expected.tokenIds.at(-1)).toBe(eosTokenId());
    const body = json(
      (
        await post(`${eosUrl}/v1/completions`, {
          prompt,
          max_tokens: 30,
          seed: 7,
          logprobs: 0,
          return_token_ids: true,
        })
      ).text,
    );
    const choice = body.choices[0];
    expect(choice.token_ids).toEqual(expected.tokenIds);
    expect(choice.finish_reason).toBe('stop');
    expect(choice.stop_reason).toBeNull();
    expect(choice.text).toBe(textOf(expected.tokenIds.slice(0, -1)));
    expect(body.usage.completion_tokens).toBe(expected.tokenIds.length);
    expect(choice.logprobs.tokens).toHaveLength(expected.tokenIds.length);
    expect(choice.logprobs.tokens.at(-1)).toBe('</s>');
  });

  // vllm/sampling_params.py ignore_eos; vllm/v1/core/sched/utils.py check_stop.
  it('ignore_eos generates through to max_tokens with no EOS id', async () => {
    const prompt = eosPrompt(7, 30);
    const body = json(
      (
        await post(`${eosUrl}/v1/completions`, {
          prompt,
          max_tokens: 30,
          seed: 7,
          ignore_eos: true,
          return_token_ids: true,
        })
      ).text,
    );
    expect(body.choices[0].finish_reason).toBe('length');
    expect(body.choices[0].token_ids).toHaveLength(30);
    expect(body.choices[0].token_ids).not.toContain(eosTokenId());
    expect(body.choices[0].token_ids).toEqual(
      expectedCompletion(prompt, { seed: 7, maxTokens: 30, eosProbability: EOS_PROBABILITY, ignoreEos: true }).tokenIds,
    );
  });

  // vllm/v1/core/sched/utils.py:108-111 (stop_token_ids: stop_reason = the id); detokenizer.py update().
  it('stop_token_ids: the id is the last token, counted, its text left out unless include_stop_str_in_output', async () => {
    const whole = expectedCompletion([5, 6], { seed: 3, maxTokens: 10 }).tokenIds;
    const stopId = whole[3]!;
    const request = { prompt: [5, 6], max_tokens: 10, seed: 3, stop_token_ids: [stopId], return_token_ids: true };
    const body = json((await post(`${url}/v1/completions`, request)).text);
    expect(body.choices[0]).toMatchObject({
      text: textOf(whole.slice(0, 3)),
      token_ids: whole.slice(0, 4),
      finish_reason: 'stop',
      stop_reason: stopId,
    });
    expect(body.usage.completion_tokens).toBe(4);
    const kept = json((await post(`${url}/v1/completions`, { ...request, include_stop_str_in_output: true })).text);
    expect(kept.choices[0].text).toBe(textOf(whole.slice(0, 4)));
  });

  // vllm/v1/engine/detokenizer.py (StopChecker.check_stop_strings, stop_buffer_length holds text back in streams).
  it('stop strings cut the text where they start, whole and streamed, with stop_reason = the string', async () => {
    const whole = expectedCompletion([8], { seed: 11, maxTokens: 12 }).tokenIds;
    // A stop string across two tokens: the end of token 3 and the start of token 4 (" kavo" + " bodi" -> "vo b").
    const stop = generatedTokenText(whole[3]!).slice(-2) + generatedTokenText(whole[4]!).slice(0, 2);
    const before = textOf(whole.slice(0, 4)).slice(0, -2);
    const request = { prompt: [8], max_tokens: 12, seed: 11, stop: ['zzzz', stop], return_token_ids: true };
    const body = json((await post(`${url}/v1/completions`, request)).text);
    expect(body.choices[0]).toMatchObject({
      text: before,
      token_ids: whole.slice(0, 5),
      finish_reason: 'stop',
      stop_reason: stop,
    });
    const chunks = sseChunks<Body>((await post(`${url}/v1/completions`, { ...request, stream: true })).text);
    expect(chunks.map((chunk) => chunk.choices[0].text).join('')).toBe(before);
    expect(chunks.some((chunk) => chunk.choices[0].text.includes(stop))).toBe(false);
    expect(chunks.at(-1).choices[0]).toMatchObject({ finish_reason: 'stop', stop_reason: stop });
    const kept = json((await post(`${url}/v1/completions`, { ...request, include_stop_str_in_output: true })).text);
    expect(kept.choices[0].text).toBe(before + stop);
  });
});

describe('logprobs', () => {
  // openai/completion/serving.py _create_completion_logprobs: top_logprobs = the sampled token, then the top k.
  it('completions: top_logprobs holds the sampled token first, then the top k; logprobs: 0 gives one-entry dicts', async () => {
    const body = json((await post(`${url}/v1/completions`, { prompt: [1, 2], max_tokens: 6, logprobs: 3 })).text);
    const { tokens, token_logprobs, top_logprobs } = body.choices[0].logprobs;
    top_logprobs.forEach((top: Record<string, number>, index: number) => {
      const keys = Object.keys(top);
      expect(keys.length === 3 || keys.length === 4).toBe(true);
      expect(keys[0]).toBe(tokens[index]);
      expect(top[keys[0]!]).toBe(token_logprobs[index]);
      // probabilities of one position never sum past 1
      expect(Object.values(top).reduce((sum, value) => sum + Math.exp(value), 0)).toBeLessThanOrEqual(1 + 1e-9);
    });
    const zero = json((await post(`${url}/v1/completions`, { prompt: [1, 2], max_tokens: 6, logprobs: 0 })).text);
    expect(zero.choices[0].logprobs.top_logprobs).toEqual(
      tokens.map((token: string, index: number) => ({ [token]: token_logprobs[index] })),
    );
  });

  // openai/completion/serving.py completion_stream_generator: initial_text_offset = previous_text_lens[i].
  it('completions streaming: text_offset continues across chunks', async () => {
    const request = { prompt: [3], max_tokens: 5, logprobs: 1 };
    const whole = json((await post(`${url}/v1/completions`, request)).text).choices[0].logprobs;
    const chunks = sseChunks<Body>((await post(`${url}/v1/completions`, { ...request, stream: true })).text);
    expect(chunks.flatMap((chunk) => chunk.choices[0].logprobs.text_offset)).toEqual(whole.text_offset);
    expect(whole.text_offset[0]).toBe(0);
    expect(whole.text_offset[1]).toBe(whole.tokens[0].length);
  });

  // vllm/sampling_params.py _validate_logprobs; vllm/exceptions.py VLLMValidationError.__str__ (parameter, value);
  // openai/completion/serving.py:467-471 (an engine error in a stream is one error event, then [DONE]).
  it('more than 20 logprobs: 400 whole, and a 200 stream with one error event then [DONE]', async () => {
    const error = {
      error: {
        message:
          'Requested sample logprobs of 25, which is greater than max allowed: 20 (parameter=logprobs, value=25)',
        type: 'BadRequestError',
        param: 'logprobs',
        code: 400,
      },
    };
    const whole = await post(`${url}/v1/completions`, { prompt: [1], max_tokens: 2, logprobs: 25 });
    expect(whole.status).toBe(400);
    expect(whole.text).toBe(JSON.stringify(error));
    const streamed = await post(`${url}/v1/completions`, { prompt: [1], max_tokens: 2, logprobs: 25, stream: true });
    expect(streamed.status).toBe(200);
    expect(streamed.text).toBe(`data: ${JSON.stringify(error)}\n\ndata: [DONE]\n\n`);
  });

  // openai/chat_completion/serving.py _create_chat_logprobs / _get_top_logprobs: k entries, each with bytes.
  it('chat: each token carries bytes and k top_logprobs, the sampled token first', async () => {
    const body = json(
      (
        await post(`${url}/v1/chat/completions`, {
          messages: [{ role: 'user', content: 'hi' }],
          max_tokens: 4,
          logprobs: true,
          top_logprobs: 3,
        })
      ).text,
    );
    const content = body.choices[0].logprobs.content;
    expect(content).toHaveLength(4);
    for (const entry of content) {
      expect(entry.bytes).toEqual([...Buffer.from(entry.token)]);
      expect(entry.top_logprobs).toHaveLength(3);
      expect(entry.top_logprobs[0]).toEqual({ token: entry.token, logprob: entry.logprob, bytes: entry.bytes });
    }
    const plain = json(
      (
        await post(`${url}/v1/chat/completions`, {
          messages: [{ role: 'user', content: 'hi' }],
          max_tokens: 2,
          logprobs: true,
        })
      ).text,
    );
    expect(plain.choices[0].logprobs.content[0].top_logprobs).toEqual([]);
  });

  // serve/disagg/serving.py _create_tokens_logprobs: token_id:N, bytes null, max(k, 1) top entries.
  it('generate: token_id:N entries with bytes null and max(k, 1) top_logprobs', async () => {
    for (const [k, count] of [
      [0, 1],
      [2, 2],
    ] as const) {
      const body = json(
        (
          await post(`${url}/inference/v1/generate`, {
            token_ids: [1, 2],
            sampling_params: { max_tokens: 3, logprobs: k },
          })
        ).text,
      );
      const choice = body.choices[0];
      choice.logprobs.content.forEach((entry: Body, index: number) => {
        expect(entry.token).toBe(`token_id:${choice.token_ids[index]}`);
        expect(entry.bytes).toBeNull();
        expect(entry.top_logprobs).toHaveLength(count);
        expect(entry.top_logprobs[0]).toEqual({ token: entry.token, logprob: entry.logprob, bytes: null });
      });
    }
  });

  // generate/base/serving.py format_token_id_placeholder (return_tokens_as_token_ids).
  it('return_tokens_as_token_ids spells tokens as token_id:N', async () => {
    const body = json(
      (
        await post(`${url}/v1/completions`, {
          prompt: [4],
          max_tokens: 3,
          logprobs: 1,
          return_tokens_as_token_ids: true,
          return_token_ids: true,
        })
      ).text,
    );
    const choice = body.choices[0];
    expect(choice.logprobs.tokens).toEqual(choice.token_ids.map((id: number) => `token_id:${id}`));
    expect(Object.keys(choice.logprobs.top_logprobs[0])[0]).toBe(`token_id:${choice.token_ids[0]}`);
  });

  // openai/completion/serving.py request_output_to_completion_response (echo, max_tokens 0, prompt_logprobs);
  // openai/completion/protocol.py to_sampling_params (echo: prompt_logprobs = logprobs; max_tokens 0 -> 1).
  it('echo with max_tokens 0 scores the prompt: the reference logprobs equal the sampled ones', async () => {
    const prompt = [9, 10, 11];
    const generated = json(
      (await post(`${url}/v1/completions`, { prompt, max_tokens: 5, logprobs: 2, return_token_ids: true })).text,
    ).choices[0];
    const scored = await post(`${url}/v1/completions`, {
      prompt: [...prompt, ...generated.token_ids],
      max_tokens: 0,
      echo: true,
      logprobs: 2,
    });
    expect(scored.status).toBe(200);
    const body = json(scored.text);
    const choice = body.choices[0];
    expect(choice.text).toBe(detokenize([...prompt, ...generated.token_ids]));
    expect(choice.logprobs.token_logprobs[0]).toBeNull();
    expect(choice.logprobs.top_logprobs[0]).toBeNull();
    expect(choice.logprobs.token_logprobs.slice(prompt.length)).toEqual(generated.logprobs.token_logprobs);
    expect(choice.logprobs.tokens).toHaveLength(prompt.length + 5);
    // prompt_logprobs per choice: [null, {id: {logprob, rank, decoded_token}}, ...]
    expect(choice.prompt_logprobs[0]).toBeNull();
    const second = choice.prompt_logprobs[1];
    const [firstId] = Object.keys(second);
    expect(Number(firstId)).toBe(prompt[1]);
    expect(Object.keys(second[firstId!]).sort()).toEqual(['decoded_token', 'logprob', 'rank']);
    // vLLM still generates (and counts) one token for echo + max_tokens 0
    expect(body.usage.completion_tokens).toBe(1);
  });

  // openai/completion/serving.py (echo: the prompt text, then the output).
  it('echo returns prompt text then output', async () => {
    const expected = expectedCompletion(tokenize('hello world'), { seed: 42, maxTokens: 3 });
    const body = json((await post(`${url}/v1/completions`, { prompt: 'hello world', max_tokens: 3, echo: true })).text);
    expect(body.choices[0].text).toBe(`hello world${expected.text}`);
  });

  // openai/chat_completion/serving.py chat_completion_full_generator and chat_completion_stream_generator (echo: the
  // last message's content, when its role is the one answered as, get_chat_request_role: "assistant" here).
  it('chat echo: the last assistant message before the output, whole and as the first content chunk per choice', async () => {
    const messages = [
      { role: 'user', content: 'hi' },
      { role: 'assistant', content: 'The answer is' },
    ];
    const whole = json(
      (await post(`${url}/v1/chat/completions`, { messages, max_tokens: 2, echo: true, n: 2, temperature: 1, seed: 5 }))
        .text,
    );
    const plain = json(
      (await post(`${url}/v1/chat/completions`, { messages, max_tokens: 2, n: 2, temperature: 1, seed: 5 })).text,
    );
    expect(whole.choices.map((choice: Body) => choice.message.content)).toEqual(
      plain.choices.map((choice: Body) => `The answer is${choice.message.content}`),
    );
    const chunks = sseChunks<Body>(
      (await post(`${url}/v1/chat/completions`, { messages, max_tokens: 2, n: 2, echo: true, stream: true })).text,
    );
    // Role chunks of both choices, then each choice's echo chunk, then the tokens.
    expect(chunks.slice(2, 4).map((chunk) => [chunk.choices[0].index, chunk.choices[0].delta])).toEqual([
      [0, { content: 'The answer is' }],
      [1, { content: 'The answer is' }],
    ]);
    // The last message is the user's: nothing to echo.
    const user = json(
      (await post(`${url}/v1/chat/completions`, { messages: messages.slice(0, 1), max_tokens: 2, echo: true, seed: 5 }))
        .text,
    );
    const userPlain = json(
      (await post(`${url}/v1/chat/completions`, { messages: messages.slice(0, 1), max_tokens: 2, seed: 5 })).text,
    );
    expect(user.choices[0].message.content).toBe(userPlain.choices[0].message.content);
  });

  // openai/completion/serving.py _create_completion_logprobs, openai/chat_completion/serving.py _create_chat_logprobs
  // and _get_top_logprobs, serve/disagg/serving.py _create_tokens_logprobs: every value is max(logprob, -9999.0).
  it('logprobs are floored at -9999.0 on completions, chat and generate', async () => {
    // A seed with which the fake model is certain of the first token after `prompt` (logprob 0): the rest of the
    // mass is 0, and its log -Infinity, which would be no JSON at all.
    const certainSeed = (prompt: readonly number[]) => {
      let seed = 0;
      while (tokenLogprob(seed, prompt.slice(-CONTEXT_WINDOW)) !== 0) seed++;
      return seed;
    };
    const floored = (values: number[]) => {
      expect(values).toContain(-9999);
      expect(Math.min(...values)).toBe(-9999);
    };
    const prompt = [11, 12];
    const seed = certainSeed(prompt);
    const completion = await post(`${url}/v1/completions`, { prompt, max_tokens: 1, logprobs: 5, seed });
    expect(completion.text).toContain(':-9999.0');
    floored(Object.values(json(completion.text).choices[0].logprobs.top_logprobs[0]));
    const generate = await post(`${url}/inference/v1/generate`, {
      token_ids: prompt,
      sampling_params: { max_tokens: 1, logprobs: 5, seed },
    });
    expect(generate.text).toContain('"logprob":-9999.0');
    floored(
      Object.values(json(generate.text).choices[0].logprobs.content[0].top_logprobs).map(
        (entry: Body) => entry.logprob,
      ),
    );
    const messages = [{ role: 'user', content: 'x' }];
    const chatSeed = certainSeed(renderChatTokens(messages, 32_000).tokens);
    const chat = await post(`${url}/v1/chat/completions`, {
      messages,
      max_tokens: 1,
      logprobs: true,
      top_logprobs: 5,
      seed: chatSeed,
    });
    expect(chat.text).toContain('"logprob":-9999.0');
    floored(json(chat.text).choices[0].logprobs.content[0].top_logprobs.map((entry: Body) => entry.logprob));
  });

  // openai/chat_completion/serving.py (prompt_logprobs at the top level); serve/disagg/protocol.py (generate).
  it('prompt_logprobs: chat and generate at the top level', async () => {
    const chat = json(
      (
        await post(`${url}/v1/chat/completions`, {
          messages: [{ role: 'user', content: 'hi' }],
          max_tokens: 1,
          prompt_logprobs: 1,
        })
      ).text,
    );
    expect(chat.prompt_logprobs[0]).toBeNull();
    expect(chat.prompt_logprobs.length).toBeGreaterThan(3);
    expect(chat.choices[0]).not.toHaveProperty('prompt_logprobs');
    const generate = json(
      (
        await post(`${url}/inference/v1/generate`, {
          token_ids: [1, 2, 3],
          sampling_params: { max_tokens: 1, prompt_logprobs: 0 },
        })
      ).text,
    );
    expect(generate.prompt_logprobs).toHaveLength(3);
    expect(Object.keys(generate.prompt_logprobs[2])).toEqual(['3']);
  });
});

describe('validation parity', () => {
  const error = (message: string, param: string | null = null, type = 'BadRequestError') =>
    JSON.stringify({ error: { message, type, param, code: 400 } });

  // vllm/sampling_params.py _verify_greedy_sampling; entrypoints/utils.py create_error_response.
  it('n > 1 with temperature 0 is refused', async () => {
    const response = await post(`${url}/v1/completions`, { prompt: 'x', n: 2, temperature: 0 });
    expect(response.status).toBe(400);
    expect(response.text).toBe(error('n must be 1 when using greedy sampling, got 2.'));
  });

  // vllm/sampling_params.py _verify_args (max_tokens, temperature, top_p, top_k).
  it('sampling parameters are checked as SamplingParams checks them', async () => {
    const cases: Array<[Record<string, unknown>, string, string | null]> = [
      [{ max_tokens: 0 }, 'max_tokens must be at least 1, got 0. (parameter=max_tokens, value=0)', 'max_tokens'],
      [{ max_tokens: -3 }, 'max_tokens must be at least 1, got -3. (parameter=max_tokens, value=-3)', 'max_tokens'],
      [
        { temperature: -1 },
        'temperature must be non-negative, got -1.0. (parameter=temperature, value=-1.0)',
        'temperature',
      ],
      [{ top_p: 0 }, 'top_p must be in (0, 1], got 0.0. (parameter=top_p, value=0.0)', 'top_p'],
      [{ top_k: -2 }, 'top_k must be 0 (disable), or at least 1, got -2.', null],
      [{ n: 0 }, 'n must be at least 1, got 0.', null],
    ];
    for (const [fields, message, param] of cases) {
      const response = await post(`${url}/v1/completions`, { prompt: 'x', ...fields });
      expect(response.status).toBe(400);
      expect(response.text).toBe(error(message, param));
    }
    // echo with max_tokens 0 is how reference logprobs are computed: allowed
    expect((await post(`${url}/v1/completions`, { prompt: 'x', max_tokens: 0, echo: true })).status).toBe(200);
  });

  // openai/server_utils.py validation_exception_handler: pydantic errors are 400 "Bad Request", never 422.
  it('request-model errors are 400 "Bad Request" with the validator\'s param', async () => {
    const cases: Array<[string, Record<string, unknown>, string, string]> = [
      // openai/completion/protocol.py validate_prompt_and_prompt_embeds
      [
        '/v1/completions',
        { prompt: '' },
        'prompt',
        'Value error, Either prompt or prompt_embeds must be provided and non-empty. (parameter=prompt)',
      ],
      // openai/chat_completion/protocol.py check_logprobs
      [
        '/v1/chat/completions',
        { messages: [{ role: 'user', content: 'hi' }], top_logprobs: 2 },
        'top_logprobs',
        'Value error, when using `top_logprobs`, `logprobs` must be set to true. (parameter=top_logprobs)',
      ],
      // openai/completion/protocol.py check_logprobs
      [
        '/v1/completions',
        { prompt: 'x', prompt_logprobs: 1, stream: true },
        'prompt_logprobs',
        'Value error, `prompt_logprobs` are not available when `stream=True`. (parameter=prompt_logprobs)',
      ],
    ];
    for (const [path, body, param, message] of cases) {
      const response = await post(`${url}${path}`, body);
      expect(response.status).toBe(400);
      const parsed = json(response.text).error;
      expect(parsed).toMatchObject({ type: 'Bad Request', param, code: 400 });
      expect(parsed.message).toMatch(/^1 validation error:\n {2}\{'type': 'value_error', 'loc': \('body',\)/);
      expect(parsed.message).toContain(message);
    }
  });

  // openai/utils.py validate_json_request -> RequestValidationError -> server_utils.py handler.
  it('a non-JSON content type is a 400', async () => {
    const response = await request(`${url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'text/plain' },
      body: JSON.stringify({ prompt: 'x' }),
    });
    expect(response.statusCode).toBe(400);
    const text = "Unsupported Media Type: Only 'application/json' is allowed";
    expect(await response.body.text()).toBe(error(`1 validation error:\n  ${text} ["${text}"]`, null, 'Bad Request'));
  });

  // vllm/renderers/params.py token length check (param input_tokens); vllm/exceptions.py message suffix.
  it('context length: vLLM wording and param "input_tokens"', async () => {
    const prompt = Array.from({ length: 60 }, (_, index) => 300 + index);
    const response = await post(`${eosUrl}/v1/completions`, { prompt, max_tokens: 10 });
    expect(response.status).toBe(400);
    expect(response.text).toBe(
      error(
        "This model's maximum context length is 64 tokens. However, you requested 10 output tokens and your prompt contains at least 60 input tokens, for a total of at least 70 tokens. Please reduce the length of the input prompt or the number of requested output tokens. (parameter=input_tokens, value=60)",
        'input_tokens',
      ),
    );
  });

  // vllm/v1/engine/input_processor.py (out-of-vocabulary id); openai/completion/serving.py:467-471.
  it('out-of-vocabulary token id: 400 whole; streamed, 200 then an error event and [DONE]', async () => {
    const body = error('Token id 99999 is out of vocabulary');
    const whole = await post(`${url}/v1/completions`, { prompt: [1, 99_999], max_tokens: 2 });
    expect(whole.status).toBe(400);
    expect(whole.text).toBe(body);
    const streamed = await post(`${url}/v1/completions`, { prompt: [1, 99_999], max_tokens: 2, stream: true });
    expect(streamed.status).toBe(200);
    expect(streamed.headers['content-type']).toBe('text/event-stream; charset=utf-8');
    expect(streamed.text).toBe(`data: ${body}\n\ndata: [DONE]\n\n`);
  });
});

describe('response shapes', () => {
  // openai/completion/protocol.py CompletionStreamResponse dumped with exclude_unset (serving.py).
  it('a completions stream chunk, byte for byte', async () => {
    const response = await post(
      `${url}/v1/completions`,
      { prompt: [2], max_tokens: 2, seed: 1, stream: true },
      { 'x-request-id': 'fixed-id' },
    );
    const [first] = sseData(response.text);
    const created = json(first!).created;
    const token = generatedTokenText(expectedCompletion([2], { seed: 1, maxTokens: 2 }).tokenIds[0]!);
    expect(first).toBe(
      `{"id":"cmpl-fixed-id","object":"text_completion","created":${created},"model":"fake-model","choices":[{"index":0,"text":${JSON.stringify(token)},"logprobs":null,"finish_reason":null,"stop_reason":null,"prompt_token_ids":null,"token_ids":null}]}`,
    );
  });

  // openai/chat_completion/serving.py:534-538 (prompt_token_ids top level, first role chunk), 510-551 (role
  // chunks of all choices first); chat_completion/protocol.py ChatMessage (reasoning, no empty tool_calls).
  it('chat: prompt_token_ids at the top level and in the role chunks; role chunks of all choices first', async () => {
    const messages = [{ role: 'user', content: 'hi' }];
    const whole = json(
      (
        await post(
          `${url}/v1/chat/completions`,
          { messages, max_tokens: 2, return_token_ids: true },
          { 'x-request-id': 'abc' },
        )
      ).text,
    );
    expect(whole.id).toBe('chatcmpl-abc');
    expect(whole.prompt_token_ids).toEqual(tokenize('<|user|>\nhi\n<|assistant|>\n'));
    expect(whole.choices[0]).not.toHaveProperty('prompt_token_ids');
    expect(whole.choices[0].token_ids).toHaveLength(2);
    expect(Object.keys(whole.choices[0].message)).toEqual([
      'role',
      'content',
      'refusal',
      'annotations',
      'audio',
      'function_call',
      'reasoning',
    ]);
    expect(whole.system_fingerprint).toMatch(/^vllm-.+-[0-9a-f]{8}$/);
    const chunks = sseChunks<Body>(
      (
        await post(`${url}/v1/chat/completions`, {
          messages,
          max_tokens: 2,
          n: 2,
          stream: true,
          return_token_ids: true,
        })
      ).text,
    );
    expect(chunks.slice(0, 2).map((chunk) => [chunk.choices[0].index, chunk.choices[0].delta])).toEqual([
      [0, { role: 'assistant', content: '' }],
      [1, { role: 'assistant', content: '' }],
    ]);
    expect(chunks[0].prompt_token_ids).toEqual(whole.prompt_token_ids);
    expect(chunks.slice(2).every((chunk) => chunk.choices[0].delta.role === undefined)).toBe(true);
  });

  // openai/completion/serving.py should_include_usage / continuous usage; final chunk dumped with exclude_none.
  it('include_usage: no usage key on normal chunks, a final chunk without None fields; continuous_usage_stats', async () => {
    const plain = sseChunks<Body>(
      (
        await post(`${url}/v1/completions`, {
          prompt: [1],
          max_tokens: 3,
          stream: true,
          stream_options: { include_usage: true },
        })
      ).text,
    );
    const last = plain.pop();
    expect(plain.every((chunk) => !('usage' in chunk))).toBe(true);
    expect(Object.keys(last)).toEqual(['id', 'object', 'created', 'model', 'choices', 'usage', 'system_fingerprint']);
    expect(last.usage).toEqual({ prompt_tokens: 1, total_tokens: 4, completion_tokens: 3 });
    const continuous = sseChunks<Body>(
      (
        await post(`${url}/v1/completions`, {
          prompt: [1],
          max_tokens: 3,
          stream: true,
          stream_options: { include_usage: true, continuous_usage_stats: true },
        })
      ).text,
    );
    continuous.pop();
    expect(continuous.map((chunk) => chunk.usage.completion_tokens)).toEqual([1, 2, 3]);
  });

  // openai/completion/protocol.py CompletionResponse and chat_completion/protocol.py ChatCompletionResponse
  // (service_tier, kv_transfer_params), dumped whole with model_dump() (completion/api_router.py,
  // chat_completion/api_router.py); kv_transfer_params is the engine output's (serving.py), None without a KV
  // connector, also when the request carries some (CompletionRequest.kv_transfer_params goes to the engine).
  it("whole completions and chat bodies carry service_tier and kv_transfer_params, null, in vLLM's order", async () => {
    const extra = { service_tier: 'auto', kv_transfer_params: { do_remote_decode: true } };
    for (const body of [{}, extra]) {
      const completion = await post(`${url}/v1/completions`, { prompt: [1], max_tokens: 1, ...body });
      expect(completion.status).toBe(200);
      const whole = json(completion.text);
      expect(Object.keys(whole)).toEqual([
        'id',
        'object',
        'created',
        'model',
        'choices',
        'service_tier',
        'system_fingerprint',
        'usage',
        'kv_transfer_params',
      ]);
      expect([whole.service_tier, whole.kv_transfer_params]).toEqual([null, null]);
      const chatResponse = await post(`${url}/v1/chat/completions`, {
        messages: [{ role: 'user', content: 'hi' }],
        max_tokens: 1,
        ...body,
      });
      expect(chatResponse.status).toBe(200);
      const chat = json(chatResponse.text);
      expect(Object.keys(chat)).toEqual([
        'id',
        'object',
        'created',
        'model',
        'choices',
        'service_tier',
        'system_fingerprint',
        'usage',
        'prompt_logprobs',
        'prompt_token_ids',
        'kv_transfer_params',
      ]);
      expect([chat.service_tier, chat.kv_transfer_params]).toEqual([null, null]);
    }
  });

  // openai/completion/serving.py (request_id = f"cmpl-{self._base_request_id(raw_request, request.request_id)}"),
  // chat_completion/serving.py ("chatcmpl-"), openai/engine/serving.py _base_request_id: the X-Request-Id header,
  // else the body's request_id, else random_uuid() (uuid4 hex).
  it("ids: cmpl-/chatcmpl- + the X-Request-Id header, else the body's request_id, else a uuid hex", async () => {
    const chat = { messages: [{ role: 'user', content: 'hi' }], max_tokens: 1 };
    const completion = { prompt: [1], max_tokens: 1 };
    const idOf = async (path: string, body: object, headers: Record<string, string> = {}) =>
      json((await post(`${url}${path}`, body, headers)).text).id;
    expect(await idOf('/v1/completions', { ...completion, request_id: 'from-body' })).toBe('cmpl-from-body');
    expect(await idOf('/v1/chat/completions', { ...chat, request_id: 'from-body' })).toBe('chatcmpl-from-body');
    expect(await idOf('/v1/completions', { ...completion, request_id: 'from-body' }, { 'x-request-id': 'hdr' })).toBe(
      'cmpl-hdr',
    );
    expect(await idOf('/v1/chat/completions', { ...chat, request_id: 'from-body' }, { 'x-request-id': 'hdr' })).toBe(
      'chatcmpl-hdr',
    );
    expect(await idOf('/v1/completions', completion)).toMatch(/^cmpl-[0-9a-f]{32}$/);
    const streamed = sseChunks<Body>(
      (await post(`${url}/v1/completions`, { ...completion, request_id: 'from-body', stream: true })).text,
    );
    expect(streamed.every((chunk) => chunk.id === 'cmpl-from-body')).toBe(true);
  });

  // serve/disagg/serving.py: the final usage chunk is GenerateStreamResponse(request_id, choices=[], usage) dumped
  // with exclude_none=True; UsageInfo (openai/engine/protocol.py) without prompt_tokens_details.
  it('generate: the usage chunk is request_id, choices [] and usage, with no None field', async () => {
    const response = await post(`${url}/inference/v1/generate`, {
      token_ids: [1, 2],
      sampling_params: { max_tokens: 2 },
      request_id: 'u1',
      stream: true,
      stream_options: { include_usage: true },
    });
    const data = sseData(response.text);
    expect(data.at(-1)).toBe('[DONE]');
    expect(data.at(-2)).toBe(
      '{"request_id":"generate-tokens-u1","choices":[],"usage":{"prompt_tokens":2,"total_tokens":4,"completion_tokens":2}}',
    );
  });

  // serve/disagg/protocol.py GenerateRequest (sampling_params required, request_id) and serving.py (no max_tokens:
  // the rest of the context; stream ids "generate-tokens-<id>", usage null on chunks).
  it('generate: sampling_params required, max_tokens defaults to the rest of the context, request_id honoured', async () => {
    const missing = await post(`${url}/inference/v1/generate`, { token_ids: [1] });
    expect(missing.status).toBe(400);
    expect(json(missing.text).error).toMatchObject({ type: 'Bad Request', param: null });
    expect(json(missing.text).error.message).toContain("'loc': ('body', 'sampling_params'), 'msg': 'Field required'");
    const rest = json(
      (
        await post(`${eosUrl}/inference/v1/generate`, {
          token_ids: [1, 2, 3, 4],
          sampling_params: { ignore_eos: true },
        })
      ).text,
    );
    expect(rest.choices[0].token_ids).toHaveLength(MAX_MODEL_LEN - 4);
    expect(rest.choices[0].finish_reason).toBe('length');
    expect(Object.keys(rest)).toEqual(['request_id', 'choices', 'prompt_logprobs', 'kv_transfer_params']);
    const response = await post(`${url}/inference/v1/generate`, {
      token_ids: [1],
      sampling_params: { max_tokens: 2 },
      request_id: 'r1',
      stream: true,
    });
    const chunks = sseChunks<Body>(response.text);
    expect(chunks.every((chunk) => chunk.request_id === 'generate-tokens-r1')).toBe(true);
    expect(chunks.every((chunk) => 'usage' in chunk && chunk.usage === null)).toBe(true);
  });
});
