import { HttpError } from './protocol.js';

/** Default of `maxRequestTokens`: 2^24 generated tokens per request (~16 bytes each while the request lives). */
export const DEFAULT_MAX_REQUEST_TOKENS = 16_777_216;

/**
 * The most sequences one prompt may ask for: vLLM's `VLLM_MAX_N_SEQUENCES` default (vllm/sampling_params.py,
 * `_verify_num_sequences`). fake-vllm holds a whole request (prompts x `n`) to it, and a batch to as many prompts.
 */
export const MAX_SEQUENCES_PER_REQUEST = 16_384;

/**
 * The longest text one token of the toy tokenizer stands for (` ` + a three-syllable word). A prompt longer than
 * `max input tokens x 7` characters cannot fit the context, so it is refused before it is tokenized, as vLLM does
 * with its tokenizer's `max_chars_per_token` (vllm/renderers/params.py, `_text_len_check`): a 51 MB string
 * must not become 51 million token ids first.
 */
export const MAX_CHARS_PER_TOKEN = 7;

/** Rejects a batch with more prompts than a request may hold, before any of them is tokenized. */
export function checkBatchSize(prompts: readonly unknown[]): void {
  if (prompts.length > MAX_SEQUENCES_PER_REQUEST) {
    throw new HttpError(
      400,
      `\`prompt\` holds ${prompts.length} prompts; fake-vllm accepts at most ${MAX_SEQUENCES_PER_REQUEST} per request`,
      'BadRequestError',
      'prompt',
    );
  }
}

/**
 * Rejects prompt text too long to fit `maxModelLen` whatever it tokenizes to, without tokenizing it; returns it.
 * `requestedMaxTokens` is the request's own `max_tokens` when it set a usable one (vLLM counts it), else 0.
 */
export function checkPromptText(text: string, maxModelLen: number, requestedMaxTokens: unknown): string {
  const maxOutputTokens =
    typeof requestedMaxTokens === 'number' && Number.isInteger(requestedMaxTokens) && requestedMaxTokens >= 0
      ? Math.min(requestedMaxTokens, maxModelLen)
      : 0;
  const maxInputTokens = maxModelLen - maxOutputTokens;
  const maxInputChars = maxInputTokens * MAX_CHARS_PER_TOKEN;
  if (text.length > maxInputChars) {
    throw new HttpError(
      400,
      `You passed ${text.length} input characters and requested ${maxOutputTokens} output tokens. However, the model's context length is only ${maxModelLen} tokens, resulting in a maximum input length of ${maxInputTokens} tokens (at most ${maxInputChars} characters). Please reduce the length of the input prompt.`,
      'BadRequestError',
      'input_text',
    );
  }
  return text;
}

/**
 * Bounds the work of one request before anything is allocated for it: prompts x `n` sequences (at most what
 * vLLM allows `n` to be for one prompt), and prompts x `n` x `max_tokens` generated tokens (`maxRequestTokens`).
 */
export function checkRequestSize(
  promptCount: number,
  n: number,
  maxTokens: number,
  maxRequestTokens = DEFAULT_MAX_REQUEST_TOKENS,
): void {
  // `n` itself is validated with vLLM's wording by the request parser; this bound also holds a batch.
  const sequences = promptCount * n;
  if (sequences > MAX_SEQUENCES_PER_REQUEST) {
    throw new HttpError(
      400,
      `This request asks for ${sequences} sequences (${promptCount} prompts x n=${n}); fake-vllm generates at most ${MAX_SEQUENCES_PER_REQUEST} per request`,
      'BadRequestError',
      'n',
    );
  }
  const tokens = sequences * maxTokens;
  if (tokens > maxRequestTokens) {
    throw new HttpError(
      400,
      `This request asks for up to ${tokens} generated tokens (${sequences} sequences x max_tokens=${maxTokens}); fake-vllm generates at most ${maxRequestTokens} per request (maxRequestTokens). Lower n or max_tokens.`,
      'BadRequestError',
      'max_tokens',
    );
  }
}
