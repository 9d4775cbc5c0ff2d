import { afterAll, beforeAll, expect, it } from 'vitest';
import { type FakeVllm, startFakeVllm } from '../src/index.js';
import { get, post } from './helpers.js';

// A prefix cache per engine, as vLLM's automatic prefix caching: 16-token blocks (vllm/config/cache.py
// DEFAULT_BLOCK_SIZE), chained block hashes (vllm/v1/core/kv_cache_utils.py hash_block_tokens), at most prompt - 1
// tokens hit (vllm/v1/core/kv_cache_manager.py get_computed_blocks), LRU eviction of free cached blocks
// (vllm/v1/core/block_pool.py), counters `vllm:prefix_cache_queries` / `vllm:prefix_cache_hits` in tokens
// (vllm/v1/metrics/loggers.py, fed by PrefixCacheStats.record(num_tokens, num_hits) in vllm/v1/metrics/stats.py).
// Prefill is read from the engine's own accounting (Server-Timing `prefill`), never from wall time.

let server: FakeVllm;
beforeAll(async () => {
  server = await startFakeVllm({
    engines: 2,
    ttftMs: 1,
    prefillMsPerToken: 1,
    itlMs: 1,
    jitter: 0,
    kvCacheBlocks: 64,
    perEngine: [{}, { kvCacheBlocks: 8 }],
    control: false,
  });
});
afterAll(() => server.close());

const tokens = (count: number, offset = 0) => Array.from({ length: count }, (_, index) => 300 + offset + index);
const labels = 'model_name="fake-model",engine="0"';

async function generate(engine: number, tokenIds: number[], maxTokens = 1) {
  const response = await post(`${server.engines[engine]!.url}/inference/v1/generate`, {
    token_ids: tokenIds,
    sampling_params: { max_tokens: maxTokens, seed: 1 },
  });
  expect(response.status).toBe(200);
  const timing = String(response.headers['server-timing']);
  const prefill = /prefill;dur=([\d.]+);desc="(\d+)"/.exec(timing)!;
  return {
    cachedTokens: Number(response.headers['x-fake-cached-tokens']),
    prefillMs: Number(prefill[1]),
    timingCached: Number(prefill[2]),
    outputIds: (JSON.parse(response.text) as { choices: [{ token_ids: number[] }] }).choices[0].token_ids,
  };
}

async function counter(engine: number, name: string): Promise<number> {
  const text = (await get(`${server.engines[engine]!.url}/metrics`)).text;
  const line = text.split('\n').find((candidate) => candidate.startsWith(`${name}{${labels}} `));
  if (!line) throw new Error(`no sample ${name}`);
  return Number(line.split(' ').at(-1));
}

it('a second request sharing a prompt prefix hits it in blocks of 16 and is charged a shorter prefill', async () => {
  const queriesBefore = await counter(0, 'vllm:prefix_cache_queries_total');
  const hitsBefore = await counter(0, 'vllm:prefix_cache_hits_total');
  const first = await generate(0, tokens(100));
  expect(first.cachedTokens).toBe(0);
  // ttftMs + prefillMsPerToken x 100 uncached tokens
  expect(first.prefillMs).toBe(101);
  const second = await generate(0, [...tokens(100), 7, 7]);
  // 102 tokens, 6 full blocks of the first prompt cached (its 4-token tail is not a full block).
  expect(second.cachedTokens).toBe(96);
  expect(second.timingCached).toBe(96);
  expect(second.prefillMs).toBe(1 + (102 - 96));
  expect((await counter(0, 'vllm:prefix_cache_queries_total')) - queriesBefore).toBe(100 + 102);
  expect((await counter(0, 'vllm:prefix_cache_hits_total')) - hitsBefore).toBe(96);
  expect(await counter(0, 'vllm:prompt_tokens_cached_total')).toBe(await counter(0, 'vllm:prefix_cache_hits_total'));
});

it('a fully cached prompt still recomputes its last token: 96 cached tokens hit as 80', async () => {
  await generate(0, tokens(96, 2000));
  expect((await generate(0, tokens(96, 2000))).cachedTokens).toBe(80);
});

it("a block's identity depends on every token before it: the same blocks after another first block miss", async () => {
  await generate(0, tokens(64, 4000));
  expect((await generate(0, [...tokens(16, 9000), ...tokens(48, 4016)])).cachedTokens).toBe(0);
  // The second block of that prompt, now at the start of another, does not hit either.
  expect((await generate(0, [...tokens(16, 4016), 1])).cachedTokens).toBe(0);
  expect((await generate(0, [...tokens(16, 4000), 1])).cachedTokens).toBe(16);
});

it('the next turn of a conversation hits the blocks its previous output filled', async () => {
  const prompt = tokens(40, 6000);
  const turn = await generate(0, prompt, 40);
  expect(turn.outputIds).toHaveLength(40);
  const next = await generate(0, [...prompt, ...turn.outputIds, 11, 12, 13, 14, 15, 16, 17, 18]);
  // prompt + output - 1 = 79 tokens were computed: 4 full blocks.
  expect(next.cachedTokens).toBe(64);
});

it('each engine has its own cache', async () => {
  await generate(0, tokens(48, 8000));
  expect((await generate(1, tokens(48, 8000))).cachedTokens).toBe(0);
});

it('evicts the least recently used blocks when the pool is full (engine 1: 8 blocks)', async () => {
  const a = tokens(64, 10_000);
  const b = tokens(64, 20_000);
  const c = tokens(64, 30_000);
  await generate(1, a);
  await generate(1, b);
  // A again: now B is the least recently used.
  expect((await generate(1, a)).cachedTokens).toBe(48);
  await generate(1, c);
  expect((await generate(1, a)).cachedTokens).toBe(48);
  expect((await generate(1, b)).cachedTokens).toBe(0);
  const stats = (await server.control.stats()).engines[1]!;
  expect(stats.evictedBlocks).toBeGreaterThanOrEqual(4);
  expect(stats.cachedBlocks).toBeLessThanOrEqual(8);
});

it('/reset_prefix_cache empties an idle engine cache', async () => {
  await generate(0, tokens(48, 12_000));
  expect((await generate(0, tokens(48, 12_000))).cachedTokens).toBe(32);
  expect((await post(`${server.engines[0]!.url}/reset_prefix_cache`, {})).status).toBe(200);
  expect((await generate(0, tokens(48, 12_000))).cachedTokens).toBe(0);
});
