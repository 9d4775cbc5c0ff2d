import { createRandom, expectedCompletion, generatedTokenText, renderChatPrompt, tokenize } from 'fake-vllm';
import type { LengthDistribution, SweepOptions } from './options.js';

/** One request the sweep sends, with what fake-vllm must answer (for verification). */
export interface PlannedRequest {
  promptTokenIds: number[];
  maxTokens: number;
  seed: number;
  sessionId: string | undefined;
  /** For chat: the messages sent. */
  messages: { role: string; content: string }[] | undefined;
}

/** Draws lengths and prompts deterministically from the sweep seed, worker and slot. */
export class RequestSource {
  readonly random: () => number;
  private counter = 0;

  constructor(
    private readonly options: SweepOptions,
    worker: number,
    /** Seeds the draws (lengths, prompt tokens); by default from `--seed` and the worker. */
    streamSeed = options.seed * 1000 + worker,
    /** The first request's `seed` field; each next request's is one more. */
    private readonly requestSeedBase = options.seed * 7919,
  ) {
    this.random = createRandom(streamSeed);
  }

  length(distribution: LengthDistribution): number {
    switch (distribution.kind) {
      case 'fixed':
        return Math.max(1, Math.round(distribution.value));
      case 'uniform':
        return Math.max(1, Math.round(distribution.min + this.random() * (distribution.max - distribution.min)));
      case 'normal':
        return Math.max(1, Math.round(distribution.mean + this.gaussian() * distribution.stddev));
      case 'lognormal':
        return within(
          Math.round(distribution.median * Math.exp(distribution.sigma * this.gaussian())),
          distribution.max,
        );
      case 'pareto':
        // 1 - U is in (0, 1]: never a division by zero.
        return within(
          Math.floor(distribution.scale / (1 - this.random()) ** (1 / distribution.alpha)),
          distribution.max,
        );
    }
  }

  private gaussian(): number {
    return Math.sqrt(-2 * Math.log(1 - this.random())) * Math.cos(2 * Math.PI * this.random());
  }

  /** A fresh request, or the next turn of a session (prompt = previous prompt + its output + new tokens). */
  next(
    previous: { request: PlannedRequest; outputTokenIds: number[] } | undefined,
    sessionId: string | undefined,
    /** A fresh prompt's first token, when given (a rollout run's own prefix: see {@link rolloutSource}). */
    firstToken?: number,
  ): PlannedRequest {
    const seed = (this.requestSeedBase + this.counter++) % 2_000_000_000;
    const fresh = Array.from(
      { length: this.length(this.options.promptTokens) },
      () => 256 + Math.floor(this.random() * 30_000),
    );
    if (firstToken !== undefined && !previous) fresh[0] = firstToken;
    const promptTokenIds = previous
      ? [...previous.request.promptTokenIds, ...previous.outputTokenIds, ...fresh.slice(0, 8)]
      : fresh;
    const maxTokens = this.length(this.options.outputTokens);
    if (this.options.endpoint !== 'chat') return { promptTokenIds, maxTokens, seed, sessionId, messages: undefined };
    const content = promptTokenIds.map((id) => generatedTokenText(id)).join('');
    const messages = [{ role: 'user', content }];
    return { promptTokenIds: tokenize(renderChatPrompt(messages)), maxTokens, seed, sessionId, messages };
  }
}

const within = (length: number, max: number) => Math.min(max, Math.max(1, length));

/**
 * The draws of rollout `index` of a `rollout-step` step (`stepIndex` in `--steps`): the same lengths and prompts for
 * every policy and every worker count, from `--seed`, the step and the index alone. `run` (one per policy run) sets
 * the prompts' first token, so a run never finds an earlier run's prompts in an engine's prefix cache (fake or real);
 * the lengths do not depend on it.
 */
export function rolloutSource(
  options: SweepOptions,
  stepIndex: number,
  index: number,
  run: number,
): { source: RequestSource; firstToken: number } {
  const seed = (options.seed * 1_000_003 + stepIndex * 100_003 + index) % 2_147_483_647;
  return { source: new RequestSource(options, 0, seed, seed * 31), firstToken: 256 + (run % 30_000) };
}

/** What fake-vllm answers: token ids and text, for exact verification. */
export function expectedOutput(request: PlannedRequest): { tokenIds: number[]; text: string } {
  const { tokenIds } = expectedCompletion(request.promptTokenIds, { seed: request.seed, maxTokens: request.maxTokens });
  return { tokenIds, text: tokenIds.map((id) => generatedTokenText(id)).join('') };
}
