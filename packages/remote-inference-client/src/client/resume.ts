import {
  type InferenceError,
  InvalidOptionsError,
  StreamInterruptedError,
  StreamTruncatedError,
  TimeoutError,
} from '../errors.js';
import type { GenerateChunk, GenerateRequest, GenerateResponse } from './wire-types.js';

/**
 * Resume of a cut token-in/token-out stream: what was received so far, and the request that continues it
 * (prompt + received tokens, the remaining `max_tokens`). The attempt loop asks {@link ResumeState.resumable}
 * after a failed attempt and, when it is, sends {@link ResumeState.nextBody} as the next attempt.
 */
export class ResumeState {
  readonly prompt: number[];
  readonly maxTokens: number;
  readonly received: number[] = [];
  readonly logprobs: unknown[] = [];
  hasLogprobs = false;
  /** A chunk carried a `finish_reason`: the engine ended the generation (EOS, a stop, max_tokens). */
  finished = false;

  /** Checks that `request` can be resumed (`max_tokens` set, `n` = 1); a caller's mistake is a typed error. */
  constructor(private readonly request: GenerateRequest) {
    const sampling = request.sampling_params ?? {};
    if (!Number.isInteger(sampling.max_tokens) || (sampling.max_tokens as number) < 1) {
      throw new InvalidOptionsError(
        `\`resume: true\` needs \`sampling_params.max_tokens\` (an integer >= 1), got \`${JSON.stringify(sampling.max_tokens)}\``,
      );
    }
    if ((sampling.n ?? 1) !== 1) {
      throw new InvalidOptionsError(
        `\`resume: true\` needs \`sampling_params.n\` = 1, got \`${JSON.stringify(sampling.n)}\``,
      );
    }
    this.prompt = [...request.token_ids];
    this.maxTokens = sampling.max_tokens as number;
  }

  /** Tokens still to generate. */
  get remaining(): number {
    return this.maxTokens - this.received.length;
  }

  /**
   * Nothing is left to generate: every token arrived, or the engine said it finished. A cut after that lost only the
   * stream's end; continuing would generate past the end of the sequence (it used to, after a `stop`).
   */
  get complete(): boolean {
    return this.finished || this.remaining <= 0;
  }

  /**
   * Records a chunk's first choice. Returns a problem when its `token_ids` are not token ids: they would be sent
   * back as prompt tokens on the next attempt.
   */
  record(choice: Record<string, unknown>): string | undefined {
    const ids = choice.token_ids ?? [];
    if (!Array.isArray(ids) || !ids.every((id) => Number.isInteger(id) && id >= 0)) {
      return 'has `token_ids` that are not an array of token ids';
    }
    for (const id of ids) this.received.push(id as number);
    if (typeof choice.finish_reason === 'string') this.finished = true;
    const logprobs = choice.logprobs as { content?: unknown } | null | undefined;
    if (Array.isArray(logprobs?.content)) {
      this.hasLogprobs = true;
      for (const entry of logprobs.content) this.logprobs.push(entry);
    }
    return undefined;
  }

  /**
   * Whether a failed attempt can be continued: tokens reached the caller and the cut was the transport's, or the
   * engine went silent past `idleMs` (a stalled engine is cut by the client; before, that failed the rollout with
   * the tokens received lost).
   */
  resumable(error: InferenceError, delivered: boolean): boolean {
    return (
      delivered &&
      (error instanceof StreamInterruptedError ||
        error instanceof StreamTruncatedError ||
        error.code === 'ERR_CONNECTION' ||
        (error instanceof TimeoutError && error.phase === 'idle'))
    );
  }

  /** The body of the attempt that continues the generation. */
  nextBody(): string {
    const sampling = this.request.sampling_params ?? {};
    const minTokens = sampling.min_tokens;
    return JSON.stringify({
      ...this.request,
      stream: true,
      token_ids: [...this.prompt, ...this.received],
      sampling_params: {
        ...sampling,
        max_tokens: this.remaining,
        // What is still owed of min_tokens: re-sent whole, it held EOS back for tokens already generated.
        ...(typeof minTokens === 'number' ? { min_tokens: Math.max(0, minTokens - this.received.length) } : {}),
      },
    });
  }

  /** A whole response from the streamed chunks (a non-streamed call with `resume` streams internally). */
  async collect(stream: AsyncIterable<GenerateChunk>): Promise<GenerateResponse> {
    let requestId = '';
    let finishReason: string | null = null;
    for await (const chunk of stream) {
      requestId ||= chunk.request_id;
      // An event without `choices` (a usage-only chunk, or a server that sends something else) carries no finish.
      finishReason = chunk.choices?.[0]?.finish_reason ?? finishReason;
    }
    return {
      request_id: requestId,
      choices: [
        {
          index: 0,
          token_ids: this.received,
          logprobs: this.hasLogprobs ? { content: this.logprobs as never } : null,
          finish_reason: finishReason,
        },
      ],
    };
  }
}
