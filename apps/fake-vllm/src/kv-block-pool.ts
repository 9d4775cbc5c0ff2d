import { mix32 } from './tokens.js';

/**
 * Tokens per KV-cache block: vLLM's default (`CacheConfig.DEFAULT_BLOCK_SIZE = 16`, `vllm/config/cache.py`). Only
 * full blocks are hashed and shared.
 */
export const BLOCK_SIZE = 16;

/** A hashed (full) block: its identity is the hash of its tokens and of every block before it. */
interface CachedBlock {
  readonly hash: number;
  refCount: number;
}

/** The blocks one sequence holds while it runs; handed back to {@link KvBlockPool.free}. */
export interface BlockAllocation {
  /** Hashed blocks this sequence references, in order (its prompt's full blocks). */
  readonly hashed: CachedBlock[];
  /** Blocks it holds that no one else can hit: the prompt's partial last block and its decode blocks. */
  privateBlocks: number;
  /** Prompt tokens found in the cache (a multiple of {@link BLOCK_SIZE}). */
  readonly hitTokens: number;
  /** The chain hash of the last full prompt block (0 before the first): where decode blocks continue the chain. */
  readonly lastHash: number;
}

/**
 * The hash of a full block given its parent's hash, as vLLM's `hash_block_tokens(parent_block_hash,
 * curr_block_token_ids)` (`vllm/v1/core/kv_cache_utils.py`): equal tokens after a different prefix are a different
 * block. Two 32-bit lanes folded into a 52-bit integer (a Map key without allocation); a collision among a
 * million cached blocks has odds of about 1 in 10^4.
 */
export function blockHash(parentHash: number, tokens: ArrayLike<number>, start: number): number {
  let low = mix32(parentHash ^ 0x2545f491);
  let high = mix32(Math.floor(parentHash / 0x1_0000_0000) ^ 0x9e3779b9);
  for (let index = start; index < start + BLOCK_SIZE; index++) {
    const token = tokens[index] as number;
    low = mix32(low ^ Math.imul(token + 0x27d4eb2f, 0x165667b1));
    high = mix32(high ^ Math.imul(token + 0x7f4a7c15, 0x85ebca77));
  }
  // 20 bits of `high` on top of 32 of `low`; never 0, which stands for "no parent".
  return (high >>> 12) * 0x1_0000_0000 + low || 1;
}

/**
 * One engine's KV-cache block pool with automatic prefix caching, after vLLM's `BlockPool` and `KVCacheManager`
 * (`vllm/v1/core/block_pool.py`, `vllm/v1/core/kv_cache_manager.py`):
 *
 * - On admission a sequence looks up the chain hashes of its prompt's full blocks and reuses the longest cached
 *   prefix, at most `prompt - 1` tokens (`get_computed_blocks`: the last token is always recomputed for its
 *   logits), then caches its other full prompt blocks at once, as `allocate_slots` does.
 * - Queries and hits are counted in tokens per sequence (`PrefixCacheStats.record(num_tokens, num_hits)`): what
 *   `vllm:prefix_cache_queries` and `vllm:prefix_cache_hits` export.
 * - A finished sequence also caches the full blocks of its output (vLLM caches blocks as their tokens are computed;
 *   the last sampled token never is), then frees its blocks tail first (`free`: "reversed so that the tail blocks
 *   are evicted first"). A freed block with no other user stays cached but is free: an eviction candidate.
 * - Eviction is LRU over free cached blocks when the pool (`capacityBlocks`) runs out.
 * - Usage is `1 - free / total` (`BlockPool.get_usage`), and free includes the cached eviction candidates: cached
 *   blocks nobody runs on do not count as used, blocks held by running sequences (shared ones once) do.
 *
 * Work is per sequence at admission and at the end, and O(1) per decode block: nothing per token.
 */
export class KvBlockPool {
  /** Every hashed block, in use or free. */
  private readonly cached = new Map<number, CachedBlock>();
  /** Free hashed blocks in eviction order: the first is evicted first. */
  private readonly evictable = new Map<number, CachedBlock>();
  /** Hashed blocks with a reference. */
  private referencedBlocks = 0;
  /** Unhashed blocks held by running sequences. */
  private privateBlocks = 0;
  /** `vllm:prefix_cache_queries`: prompt tokens looked up. */
  queryTokens = 0;
  /** `vllm:prefix_cache_hits`: prompt tokens found cached. */
  hitTokens = 0;
  /** Cached blocks dropped to make room. */
  evictedBlocks = 0;

  constructor(
    public capacityBlocks: number,
    readonly enabled = true,
  ) {}

  /** Blocks in use by running sequences (a shared block once). */
  get usedBlocks(): number {
    return this.referencedBlocks + this.privateBlocks;
  }

  /** Hashed blocks held, in use or free (what a later prompt can hit). */
  get cachedBlocks(): number {
    return this.cached.size;
  }

  /** `vllm:kv_cache_usage_perc`: used blocks over the pool, at most 1 (the fake never preempts to stay inside it). */
  get usage(): number {
    return Math.min(1, this.usedBlocks / this.capacityBlocks);
  }

  /** Admits one sequence with this prompt: finds its cached prefix, caches the rest of its full blocks. */
  allocate(promptTokenIds: readonly number[]): BlockAllocation {
    const promptLength = promptTokenIds.length;
    const fullBlocks = Math.floor(promptLength / BLOCK_SIZE);
    const partial = promptLength % BLOCK_SIZE === 0 ? 0 : 1;
    this.queryTokens += promptLength;
    if (!this.enabled) {
      this.privateBlocks += fullBlocks + partial;
      this.makeRoom();
      return { hashed: [], privateBlocks: fullBlocks + partial, hitTokens: 0, lastHash: 0 };
    }
    const hashed: CachedBlock[] = [];
    const hitLimit = Math.floor(Math.max(0, promptLength - 1) / BLOCK_SIZE);
    let parent = 0;
    let hits = 0;
    let missed = false;
    for (let index = 0; index < fullBlocks; index++) {
      const hash = blockHash(parent, promptTokenIds, index * BLOCK_SIZE);
      parent = hash;
      let block = missed ? undefined : this.cached.get(hash);
      if (block && index < hitLimit) {
        hits++;
        this.reference(block);
      } else {
        missed = true;
        block = this.cached.get(hash);
        if (block) {
          // Already cached (the recomputed last block of a full hit, or a chain another sequence just cached).
          this.reference(block);
        } else {
          block = { hash, refCount: 1 };
          this.cached.set(hash, block);
          this.referencedBlocks++;
        }
      }
      hashed.push(block);
    }
    this.privateBlocks += partial;
    const hitTokens = hits * BLOCK_SIZE;
    this.hitTokens += hitTokens;
    this.makeRoom();
    return { hashed, privateBlocks: partial, hitTokens, lastHash: parent };
  }

  /** A running sequence started a new block (its `(prompt + output) % 16` wrapped). O(1), amortised eviction. */
  grow(allocation: BlockAllocation): void {
    allocation.privateBlocks++;
    this.privateBlocks++;
    if (this.usedBlocks + this.evictable.size > this.capacityBlocks) this.makeRoom();
  }

  /**
   * Releases a sequence's blocks. `tokens` (prompt + output) caches the full blocks its output completed first;
   * pass none for a sequence whose computation is lost (a restart clears everything anyway).
   */
  free(allocation: BlockAllocation, promptTokenIds?: readonly number[], outputTokenIds?: readonly number[]): void {
    this.privateBlocks -= allocation.privateBlocks;
    allocation.privateBlocks = 0;
    const released: CachedBlock[] = [...allocation.hashed];
    allocation.hashed.length = 0;
    if (this.enabled && promptTokenIds && outputTokenIds && outputTokenIds.length > 0) {
      // The last sampled token's KV is never computed: cache full blocks of prompt + output - 1.
      const computed = promptTokenIds.length + outputTokenIds.length - 1;
      const firstBlock = Math.floor(promptTokenIds.length / BLOCK_SIZE);
      const lastBlock = Math.floor(computed / BLOCK_SIZE);
      if (lastBlock > firstBlock) {
        const tokens = [...promptTokenIds.slice(firstBlock * BLOCK_SIZE), ...outputTokenIds];
        let parent = allocation.lastHash;
        for (let index = 0; index < lastBlock - firstBlock; index++) {
          const hash = blockHash(parent, tokens, index * BLOCK_SIZE);
          parent = hash;
          if (this.cached.has(hash)) continue;
          // The block stays in the pool as a free cached block (it was a private block until now).
          const block: CachedBlock = { hash, refCount: 1 };
          this.cached.set(hash, block);
          this.referencedBlocks++;
          released.push(block);
        }
      }
    }
    for (let index = released.length - 1; index >= 0; index--) {
      const block = released[index]!;
      block.refCount--;
      if (block.refCount > 0) continue;
      this.referencedBlocks--;
      // A block whose hash was dropped by a reset while it ran is not cached any more: simply free.
      if (this.cached.get(block.hash) === block) this.evictable.set(block.hash, block);
    }
    this.makeRoom();
  }

  /**
   * Forgets every cached block (`/reset_prefix_cache`, a restart). vLLM's `reset_prefix_cache` refuses while
   * blocks are in use unless asked to reset running requests; `force` is that.
   */
  reset(force: boolean): boolean {
    if (this.usedBlocks > 0 && !force) return false;
    this.cached.clear();
    this.evictable.clear();
    return true;
  }

  /** Changes the pool's size; a smaller pool evicts free cached blocks at once. */
  resize(capacityBlocks: number): void {
    this.capacityBlocks = capacityBlocks;
    this.makeRoom();
  }

  /** Drops every allocation at once (a restart: the process and its memory are gone). */
  clear(): void {
    this.cached.clear();
    this.evictable.clear();
    this.referencedBlocks = 0;
    this.privateBlocks = 0;
  }

  private reference(block: CachedBlock): void {
    if (block.refCount === 0) {
      this.evictable.delete(block.hash);
      this.referencedBlocks++;
    }
    block.refCount++;
  }

  /** Evicts least recently freed cached blocks until used + cached-free fits the pool. */
  private makeRoom(): void {
    let excess = this.usedBlocks + this.evictable.size - this.capacityBlocks;
    while (excess > 0 && this.evictable.size > 0) {
      const oldest = this.evictable.keys().next().value as number;
      this.evictable.delete(oldest);
      this.cached.delete(oldest);
      this.evictedBlocks++;
      excess--;
    }
  }
}
