import { expect, it } from 'vitest';
import { BLOCK_SIZE, KvBlockPool } from './kv-block-pool.js';

// Behaviour copied from vLLM's prefix caching: vllm/v1/core/kv_cache_manager.py (get_computed_blocks: at most
// prompt - 1 tokens hit; allocate_slots caches full blocks at once; free: tail blocks first),
// vllm/v1/core/block_pool.py (get_usage = 1 - free / total, free including cached eviction candidates; LRU
// eviction from the free queue), vllm/v1/core/kv_cache_utils.py (hash_block_tokens: a block's hash chains its
// parent's), vllm/config/cache.py (DEFAULT_BLOCK_SIZE = 16).

const tokens = (count: number, offset = 0) => Array.from({ length: count }, (_, index) => 1000 + offset + index);

it('uses blocks of 16 tokens, as vLLM by default', () => {
  expect(BLOCK_SIZE).toBe(16);
});

it('hits whole blocks of a shared prefix, at most prompt - 1 tokens, and counts queries and hits in tokens', () => {
  const pool = new KvBlockPool(1000);
  const first = pool.allocate(tokens(100));
  expect(first.hitTokens).toBe(0);
  pool.free(first);
  // Same 96-token prefix (6 blocks), another tail.
  const second = pool.allocate([...tokens(96), 1, 2, 3, 4, 5]);
  expect(second.hitTokens).toBe(96);
  pool.free(second);
  // A prompt of exactly 96 cached tokens: the last token is recomputed for its logits, so 5 blocks hit, not 6.
  const third = pool.allocate(tokens(96));
  expect(third.hitTokens).toBe(80);
  pool.free(third);
  expect(pool.queryTokens).toBe(100 + 101 + 96);
  expect(pool.hitTokens).toBe(96 + 80);
});

it("a block's identity depends on every token before it", () => {
  const pool = new KvBlockPool(1000);
  pool.free(pool.allocate(tokens(64)));
  // Blocks 2..4 hold the same tokens, after a different first block: nothing hits.
  const shifted = [...tokens(16, 5000), ...tokens(48, 16)];
  expect(pool.allocate(shifted).hitTokens).toBe(0);
  // Block content cached after another block does not hit at the start of a prompt either.
  pool.free(pool.allocate([...tokens(16, 7000), ...tokens(16, 8000), 1]));
  expect(pool.allocate([...tokens(16, 8000), 1]).hitTokens).toBe(0);
  expect(pool.allocate([...tokens(16, 7000), 1]).hitTokens).toBe(16);
});

it('counts blocks held by running sequences as used, shared ones once, and cached free blocks as free', () => {
  const pool = new KvBlockPool(100);
  const a = pool.allocate([...tokens(32), 7, 7, 7, 7, 7, 7, 7, 7]);
  const b = pool.allocate([...tokens(32), 9, 9, 9, 9, 9, 9, 9, 9]);
  // 2 shared full blocks + one partial block each.
  expect(pool.usedBlocks).toBe(4);
  expect(pool.usage).toBeCloseTo(0.04, 10);
  pool.grow(a);
  expect(pool.usedBlocks).toBe(5);
  pool.free(a);
  pool.free(b);
  expect(pool.usedBlocks).toBe(0);
  expect(pool.usage).toBe(0);
  expect(pool.cachedBlocks).toBe(2);
});

it("caches the full blocks a sequence's output completed, so the next turn of a conversation hits them", () => {
  const pool = new KvBlockPool(1000);
  const prompt = tokens(40);
  const output = tokens(40, 500);
  const turn = pool.allocate(prompt);
  for (let count = 1; count <= output.length; count++) if ((prompt.length + count - 1) % 16 === 0) pool.grow(turn);
  pool.free(turn, prompt, output);
  // prompt + output - 1 = 79 computed tokens: 4 full blocks cached.
  expect(pool.cachedBlocks).toBe(4);
  expect(pool.allocate([...prompt, ...output, 1, 2, 3, 4, 5, 6, 7, 8]).hitTokens).toBe(64);
});

it('evicts the least recently used free blocks when the pool is full', () => {
  const pool = new KvBlockPool(8);
  const a = tokens(64, 0);
  const b = tokens(64, 10_000);
  const c = tokens(64, 20_000);
  pool.free(pool.allocate(a));
  pool.free(pool.allocate(b));
  // A is used again: now B is the least recently used.
  const again = pool.allocate(a);
  expect(again.hitTokens).toBe(48);
  pool.free(again);
  pool.free(pool.allocate(c));
  expect(pool.evictedBlocks).toBe(4);
  expect(pool.allocate(a).hitTokens).toBe(48);
  expect(pool.allocate(b).hitTokens).toBe(0);
});

it('never evicts blocks a running sequence holds', () => {
  const pool = new KvBlockPool(4);
  const held = pool.allocate(tokens(64));
  pool.free(pool.allocate(tokens(64, 9000)));
  expect(pool.usage).toBe(1);
  expect(pool.allocate(tokens(64)).hitTokens).toBe(48);
  pool.free(held);
});

it('a reset forgets every cached block, but only when none is in use unless forced', () => {
  const pool = new KvBlockPool(100);
  const running = pool.allocate(tokens(32, 3000));
  pool.free(pool.allocate(tokens(64)));
  expect(pool.reset(false)).toBe(false);
  expect(pool.allocate(tokens(64)).hitTokens).toBe(48);
  expect(pool.reset(true)).toBe(true);
  expect(pool.cachedBlocks).toBe(0);
  pool.free(running);
  expect(pool.allocate(tokens(64)).hitTokens).toBe(0);
});

it('with prefix caching off, nothing hits and every block is private', () => {
  const pool = new KvBlockPool(100, false);
  pool.free(pool.allocate(tokens(64)));
  const again = pool.allocate(tokens(64));
  expect(again.hitTokens).toBe(0);
  expect(pool.usedBlocks).toBe(4);
  expect(pool.queryTokens).toBe(128);
});
