import { expect, it } from 'vitest';
import { FakeVllmConfigError } from './errors.js';
import { drawOutputLength, promptLengthKey, resolveOutputLengths } from './output-lengths.js';

const prompt = (index: number) => [index, index * 7 + 1, 42, index % 13];

function draws(lengths: ReturnType<typeof resolveOutputLengths>, count: number): number[] {
  return Array.from({ length: count }, (_, index) =>
    drawOutputLength(lengths, promptLengthKey(lengths, prompt(index)), undefined, 0),
  ) as number[];
}

function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
}

it('draws the same length for the same seed, prompt, request seed and choice, and another for another', () => {
  const lengths = resolveOutputLengths({ distribution: 'lognormal', medianTokens: 200, sigma: 1 }, 0);
  const reseeded = resolveOutputLengths({ distribution: 'lognormal', medianTokens: 200, sigma: 1, seed: 1 }, 0);
  const key = promptLengthKey(lengths, [1, 2, 3]);
  const length = drawOutputLength(lengths, key, 7, 0);
  expect(drawOutputLength(lengths, promptLengthKey(lengths, [1, 2, 3]), 7, 0)).toBe(length);
  const others = [
    drawOutputLength(lengths, promptLengthKey(lengths, [1, 2, 4]), 7, 0),
    drawOutputLength(lengths, key, 8, 0),
    drawOutputLength(lengths, key, 7, 1),
    drawOutputLength(lengths, key, undefined, 0),
    drawOutputLength(reseeded, promptLengthKey(reseeded, [1, 2, 3]), 7, 0),
  ];
  expect(new Set([length, ...others]).size).toBe(6);
});

it('lognormal lengths are long-tailed: median ~medianTokens, p99 / p50 ~ exp(2.326 sigma)', () => {
  const lengths = resolveOutputLengths({ distribution: 'lognormal', medianTokens: 200, sigma: 1, seed: 3 }, 0);
  const sorted = draws(lengths, 20_000).sort((a, b) => a - b);
  const p50 = percentile(sorted, 0.5);
  const p99 = percentile(sorted, 0.99);
  expect(p50).toBeGreaterThan(190);
  expect(p50).toBeLessThan(210);
  // exp(2.326) = 10.2
  expect(p99 / p50).toBeGreaterThan(9);
  expect(p99 / p50).toBeLessThan(11.5);
  expect(sorted[0]).toBeGreaterThanOrEqual(1);
});

it('pareto lengths start at scaleTokens and have p99 / p50 ~ 50^(1/alpha)', () => {
  const lengths = resolveOutputLengths({ distribution: 'pareto', scaleTokens: 50, alpha: 1.5 }, 11);
  const sorted = draws(lengths, 20_000).sort((a, b) => a - b);
  expect(sorted[0]).toBeGreaterThanOrEqual(50);
  const ratio = percentile(sorted, 0.99) / percentile(sorted, 0.5);
  // 50^(2/3) = 13.6
  expect(ratio).toBeGreaterThan(12);
  expect(ratio).toBeLessThan(15.5);
});

it('max-tokens draws nothing', () => {
  const lengths = resolveOutputLengths(undefined, 0);
  expect(drawOutputLength(lengths, promptLengthKey(lengths, [1]), 1, 0)).toBeUndefined();
});

it('rejects bad parameters with the field named', () => {
  const bad = [
    [{ distribution: 'normal' }, 'outputLengths.distribution'],
    [{ distribution: 'lognormal', medianTokens: 0, sigma: 1 }, 'outputLengths.medianTokens'],
    [{ distribution: 'lognormal', medianTokens: 10, sigma: -1 }, 'outputLengths.sigma'],
    [{ distribution: 'pareto', scaleTokens: 0.5, alpha: 1 }, 'outputLengths.scaleTokens'],
    [{ distribution: 'pareto', scaleTokens: 5, alpha: 1, sigma: 2 }, 'outputLengths.sigma'],
  ] as const;
  for (const [options, field] of bad) {
    expect(() => resolveOutputLengths(options as never, 0)).toThrow(FakeVllmConfigError);
    expect(() => resolveOutputLengths(options as never, 0)).toThrow(field);
  }
});
