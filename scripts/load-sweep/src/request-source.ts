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
  ) {
    this.random = createRandom(options.seed * 1000 + worker);
  }

  length(distribution: LengthDistribution): number {
    switch (distribution.kind) {
      case 'fixed':
        return Math.max(1, Math.round(distribution.value));
      case 'uniform':
        return Math.max(1, Math.round(distribution.min + this.random() * (distribution.max - distribution.min)));
      case 'normal': {
        const gaussian = Math.sqrt(-2 * Math.log(1 - this.random())) * Math.cos(2 * Math.PI * this.random());
        return Math.max(1, Math.round(distribution.mean + gaussian * distribution.stddev));
      }
    }
  }

  /** A fresh request, or the next turn of a session (prompt = previous prompt + its output + new tokens). */
  next(
    previous: { request: PlannedRequest; outputTokenIds: number[] } | undefined,
    sessionId: string | undefined,
  ): PlannedRequest {
    const seed = (this.options.seed * 7919 + this.counter++) % 2_000_000_000;
    const fresh = Array.from(
      { length: this.length(this.options.promptTokens) },
      () => 256 + Math.floor(this.random() * 30_000),
    );
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

/** What fake-vllm answers: token ids and text, for exact verification. */
export function expectedOutput(request: PlannedRequest): { tokenIds: number[]; text: string } {
  const { tokenIds } = expectedCompletion(request.promptTokenIds, { seed: request.seed, maxTokens: request.maxTokens });
  return { tokenIds, text: tokenIds.map((id) => generatedTokenText(id)).join('') };
}
