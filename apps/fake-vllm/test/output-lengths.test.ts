import { Agent, request } from 'undici';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { eosTokenId, expectedCompletion, expectedOutputLength, type FakeVllm, startFakeVllm } from '../src/index.js';
import { drawOutputLength, promptLengthKey, resolveOutputLengths } from '../src/output-lengths.js';

// Long-tailed output lengths drawn from the prompt and the request's seed: every engine, client and run gives the
// same request the same length; a natural end is EOS (its id in token_ids, finish_reason "stop"), as vLLM reports
// one; max_tokens caps it ("length").

const outputLengths = { distribution: 'lognormal', medianTokens: 12, sigma: 1, seed: 5 } as const;
const fleetOptions = { engines: 2, ttftMs: 0, itlMs: 0.1, jitter: 0, outputLengths, control: false } as const;
let first: FakeVllm;
let second: FakeVllm;
beforeAll(async () => {
  [first, second] = await Promise.all([startFakeVllm(fleetOptions), startFakeVllm(fleetOptions)]);
});
afterAll(() => Promise.all([first.close(), second.close()]));

const MAX_TOKENS = 40;
const prompts = Array.from({ length: 24 }, (_, index) => [10 + index, 20, 30 + (index % 5)]);

/** Token ids of each prompt's one choice, through its own client (agent) against one engine. */
async function lengthsFrom(url: string, seeded: boolean): Promise<number[][]> {
  const agent = new Agent();
  try {
    return await Promise.all(
      prompts.map(async (prompt, index) => {
        const response = await request(`${url}/inference/v1/generate`, {
          method: 'POST',
          dispatcher: agent,
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({
            token_ids: prompt,
            sampling_params: { max_tokens: MAX_TOKENS, ...(seeded ? { seed: 100 + index } : {}) },
          }),
        });
        const body = (await response.body.json()) as { choices: [{ token_ids: number[]; finish_reason: string }] };
        expect(body.choices[0].finish_reason).toBe(body.choices[0].token_ids.length < MAX_TOKENS ? 'stop' : 'length');
        return body.choices[0].token_ids;
      }),
    );
  } finally {
    await agent.close();
  }
}

it('gives a request the same length on every engine, from every client, in every run', async () => {
  for (const seeded of [true, false]) {
    const runs = await Promise.all([
      lengthsFrom(first.engines[0]!.url, seeded),
      lengthsFrom(first.engines[1]!.url, seeded),
      lengthsFrom(second.engines[0]!.url, seeded),
    ]);
    const lengths = runs.map((run) => run.map((tokenIds) => tokenIds.length));
    expect(lengths[1]).toEqual(lengths[0]);
    expect(lengths[2]).toEqual(lengths[0]);
    // Not all the same: the lengths are drawn.
    expect(new Set(lengths[0]).size).toBeGreaterThan(5);
  }
});

it('ends at the drawn length with EOS, capped by max_tokens, exactly as expectedCompletion replays it', async () => {
  const resolved = resolveOutputLengths(outputLengths, 0);
  const received = await lengthsFrom(first.engines[1]!.url, true);
  let stopped = 0;
  let capped = 0;
  prompts.forEach((prompt, index) => {
    const drawn = drawOutputLength(resolved, promptLengthKey(resolved, prompt), 100 + index, 0)!;
    expect(expectedOutputLength(prompt, { outputLengths, seed: 100 + index })).toBe(drawn);
    const tokenIds = received[index]!;
    expect(tokenIds.length).toBe(Math.min(drawn, MAX_TOKENS));
    if (drawn <= MAX_TOKENS) {
      stopped++;
      expect(tokenIds.at(-1)).toBe(eosTokenId());
    } else capped++;
    const expected = expectedCompletion(prompt, { seed: 100 + index, maxTokens: MAX_TOKENS, outputLength: drawn });
    expect(tokenIds).toEqual(expected.tokenIds);
  });
  expect(stopped).toBeGreaterThan(0);
  expect(capped).toBeGreaterThan(0);
});
