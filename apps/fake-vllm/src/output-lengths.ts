import { FakeVllmConfigError } from './errors.js';
import { mix32 } from './tokens.js';

/**
 * How long generations are when the client does not decide it (`max_tokens` only caps them). RL rollouts have
 * long-tailed lengths: most answers are short, a few run for thousands of tokens, and a synchronous training step
 * waits for the longest. A sequence whose drawn length `L` is at most its `max_tokens` ends with the EOS token as
 * its `L`-th token (`finish_reason: "stop"`, the EOS id in `token_ids`, as vLLM reports a natural end); otherwise
 * it runs to `max_tokens` (`"length"`). The natural end obeys `ignore_eos` and `min_tokens` exactly as EOS does.
 *
 * The length is a pure function of `seed`, the prompt's token ids, the request's own `seed` (when it sent one) and
 * the choice index: every engine of a fleet, every client and every run sees the same length for the same request.
 */
export type OutputLengthOptions =
  | {
      /** Every sequence runs to `max_tokens` (unless EOS by `eosProbability` or a stop ends it). The default. */
      distribution: 'max-tokens';
    }
  | {
      /**
       * Lognormal: `L = round(medianTokens * exp(sigma * Z))`, Z standard normal, at least 1. The median is
       * `medianTokens`; p99 / p50 = `exp(2.326 * sigma)` (10.2 at sigma 1, 4.9 at 0.7).
       */
      distribution: 'lognormal';
      /** Median length. (tokens, > 0) */
      medianTokens: number;
      /** Standard deviation of ln(L). (> 0) */
      sigma: number;
      /** Seed of the draws, shared by every engine. @default the server's `seed` */
      seed?: number;
    }
  | {
      /**
       * Pareto (type I): `L = floor(scaleTokens / U^(1 / alpha))`, U uniform in (0, 1), so L >= `scaleTokens`.
       * The median is `scaleTokens * 2^(1/alpha)`; p99 / p50 = `50^(1/alpha)` (13.6 at alpha 1.5). The mean is
       * infinite for alpha <= 1: cap it with `max_tokens`.
       */
      distribution: 'pareto';
      /** The smallest length (x_m). (tokens, >= 1) */
      scaleTokens: number;
      /** Tail index; smaller is heavier. (> 0) */
      alpha: number;
      /** Seed of the draws, shared by every engine. @default the server's `seed` */
      seed?: number;
    };

/** {@link OutputLengthOptions} with the seed applied. */
export type ResolvedOutputLengths =
  | { distribution: 'max-tokens' }
  | { distribution: 'lognormal'; medianTokens: number; sigma: number; seed: number }
  | { distribution: 'pareto'; scaleTokens: number; alpha: number; seed: number };

/** Longest length a draw returns (a Pareto tail is unbounded; `max_tokens` caps it long before this). */
const LONGEST_DRAW = 1_000_000_000;

const positive = (value: unknown): value is number => typeof value === 'number' && Number.isFinite(value) && value > 0;

function fail(field: string, expected: string, got: unknown): never {
  throw new FakeVllmConfigError(
    `Expected \`${field}\` to be ${expected}, got \`${JSON.stringify(got) ?? String(got)}\``,
    {
      field: 'outputLengths',
    },
  );
}

/** Applies the default seed to {@link OutputLengthOptions} and validates them. */
export function resolveOutputLengths(
  options: OutputLengthOptions | undefined,
  serverSeed: number,
): ResolvedOutputLengths {
  if (options === undefined) return { distribution: 'max-tokens' };
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    fail('outputLengths', 'an object such as {"distribution":"lognormal","medianTokens":200,"sigma":1}', options);
  }
  const known: Record<string, readonly string[]> = {
    'max-tokens': ['distribution'],
    lognormal: ['distribution', 'medianTokens', 'sigma', 'seed'],
    pareto: ['distribution', 'scaleTokens', 'alpha', 'seed'],
  };
  const fields = known[options.distribution as string];
  if (fields === undefined) {
    fail('outputLengths.distribution', 'one of max-tokens, lognormal, pareto', options.distribution);
  }
  for (const key of Object.keys(options)) {
    if (!fields.includes(key)) {
      throw new FakeVllmConfigError(
        `Unknown option \`outputLengths.${key}\` for distribution ${options.distribution}; known: ${fields.join(', ')}`,
        { field: 'outputLengths' },
      );
    }
  }
  if (options.distribution === 'max-tokens') return { distribution: 'max-tokens' };
  const seed = options.seed ?? serverSeed;
  if (!Number.isInteger(seed)) fail('outputLengths.seed', 'an integer', seed);
  if (options.distribution === 'lognormal') {
    if (!positive(options.medianTokens))
      fail('outputLengths.medianTokens', 'a number of tokens > 0', options.medianTokens);
    if (!positive(options.sigma)) fail('outputLengths.sigma', 'a number > 0', options.sigma);
    return { distribution: 'lognormal', medianTokens: options.medianTokens, sigma: options.sigma, seed };
  }
  if (!(positive(options.scaleTokens) && options.scaleTokens >= 1)) {
    fail('outputLengths.scaleTokens', 'a number of tokens >= 1', options.scaleTokens);
  }
  if (!positive(options.alpha)) fail('outputLengths.alpha', 'a number > 0', options.alpha);
  return { distribution: 'pareto', scaleTokens: options.scaleTokens, alpha: options.alpha, seed };
}

/** A hash of the draw seed and every prompt token: computed once per prompt, shared by its choices. */
export function promptLengthKey(lengths: ResolvedOutputLengths, promptTokenIds: readonly number[]): number {
  if (lengths.distribution === 'max-tokens') return 0;
  let h = mix32(lengths.seed ^ 0x1e9a7c35);
  for (let index = 0; index < promptTokenIds.length; index++) {
    h = mix32(h ^ Math.imul(promptTokenIds[index]! + 0x27d4eb2f, 0x165667b1));
  }
  return mix32(h ^ promptTokenIds.length);
}

/** A uniform draw in (0, 1), never 0 or 1. */
const uniform = (hash: number) => (hash + 0.5) / 0x1_0000_0000;

/**
 * The natural length of choice `choice` of a prompt (see {@link OutputLengthOptions}), or undefined when lengths
 * are `max-tokens`. `requestSeed` is the request's own `seed` field, undefined when it sent none (the server's seed
 * differs per engine, so it is left out: the length must not depend on which engine serves the request).
 */
export function drawOutputLength(
  lengths: ResolvedOutputLengths,
  promptKey: number,
  requestSeed: number | undefined,
  choice: number,
): number | undefined {
  if (lengths.distribution === 'max-tokens') return undefined;
  let h = mix32(promptKey ^ Math.imul(choice + 1, 0x9e3779b1));
  if (requestSeed !== undefined) h = mix32(h ^ mix32((requestSeed | 0) ^ 0x5bd1e995) ^ 1);
  const first = uniform(h);
  if (lengths.distribution === 'pareto') {
    return Math.min(LONGEST_DRAW, Math.max(1, Math.floor(lengths.scaleTokens / first ** (1 / lengths.alpha))));
  }
  // Box-Muller from two hashed uniforms.
  const second = uniform(mix32(h ^ 0x68e31da4));
  const gaussian = Math.sqrt(-2 * Math.log(first)) * Math.cos(2 * Math.PI * second);
  return Math.min(LONGEST_DRAW, Math.max(1, Math.round(lengths.medianTokens * Math.exp(lengths.sigma * gaussian))));
}

/**
 * The natural length fake-vllm draws for a sequence, as a client computes it to plan or check a run (e.g. a
 * benchmark's lower bound: the longest rollout and the total work). `seed` is the request's own `seed` field
 * (omit it when the request sends none), `choice` the index among its `n`, `serverSeed` the fleet's `seed` option
 * (used when `outputLengths.seed` is not set). The sequence ends at `min(length, max_tokens)`; undefined for
 * `max-tokens`.
 */
export function expectedOutputLength(
  promptTokenIds: readonly number[],
  options: { outputLengths: OutputLengthOptions; seed?: number; choice?: number; serverSeed?: number },
): number | undefined {
  const lengths = resolveOutputLengths(options.outputLengths, options.serverSeed ?? 0);
  return drawOutputLength(lengths, promptLengthKey(lengths, promptTokenIds), options.seed, options.choice ?? 0);
}
