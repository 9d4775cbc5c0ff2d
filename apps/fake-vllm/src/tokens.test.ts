import { describe, expect, it } from 'vitest';
import { detokenize, expectedCompletion, generatedTokenText, nextTokenId, tokenize } from './tokens.js';

describe('toy tokenizer', () => {
  it('round-trips arbitrary text, including non-ASCII and whitespace', () => {
    for (const text of ['hello world', ' kavo bodila', 'naïve — 日本語 ✓', '', '  \n\t x ', 'bodila']) {
      expect(detokenize(tokenize(text))).toBe(text);
    }
  });

  it('gives generated text back the same token ids', () => {
    const { tokenIds } = expectedCompletion([1, 2, 3], { seed: 7, maxTokens: 50 });
    const text = tokenIds.map((id) => generatedTokenText(id)).join('');
    expect(tokenize(text)).toEqual(tokenIds);
  });
});

describe('deterministic output', () => {
  it('depends only on the seed and the last tokens', () => {
    expect(nextTokenId(1, [5, 6, 7, 8])).toBe(nextTokenId(1, [99, 5, 6, 7, 8]));
    expect(nextTokenId(1, [5, 6, 7, 8])).not.toBe(nextTokenId(2, [5, 6, 7, 8]));
  });

  it('continues a resumed generation exactly as the uninterrupted one', () => {
    const prompt = [11, 12, 13];
    const whole = expectedCompletion(prompt, { seed: 3, maxTokens: 40 });
    for (const cut of [1, 2, 5, 39]) {
      const resumed = expectedCompletion([...prompt, ...whole.tokenIds.slice(0, cut)], {
        seed: 3,
        maxTokens: 40 - cut,
      });
      expect([...whole.tokenIds.slice(0, cut), ...resumed.tokenIds]).toEqual(whole.tokenIds);
    }
  });

  it('stops early with EOS only when an EOS probability is set', () => {
    expect(expectedCompletion([1], { seed: 1, maxTokens: 200 }).tokenIds).toHaveLength(200);
    const stopped = expectedCompletion([1], { seed: 1, maxTokens: 200, eosProbability: 0.2 });
    expect(stopped.finishReason).toBe('stop');
    expect(stopped.tokenIds.length).toBeLessThan(200);
  });
});
