/** vLLM's wire types (snake_case, as sent). Unknown fields pass through untouched. */

export interface StreamOptions {
  include_usage?: boolean;
  [key: string]: unknown;
}

/** `POST /v1/completions` body. */
export interface CompletionRequest {
  model?: string;
  prompt: string | string[] | number[] | number[][];
  max_tokens?: number;
  n?: number;
  seed?: number;
  temperature?: number;
  logprobs?: number | null;
  return_token_ids?: boolean;
  stream?: boolean;
  stream_options?: StreamOptions;
  [key: string]: unknown;
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  [key: string]: unknown;
}

export interface CompletionChoice {
  index: number;
  text: string;
  finish_reason: string | null;
  logprobs: unknown;
  token_ids?: number[];
  prompt_token_ids?: number[];
  [key: string]: unknown;
}

export interface Completion {
  id: string;
  object: 'text_completion';
  created: number;
  model: string;
  choices: CompletionChoice[];
  usage: Usage;
  [key: string]: unknown;
}

export interface CompletionChunk {
  id: string;
  object: 'text_completion';
  created: number;
  model: string;
  choices: CompletionChoice[];
  usage?: Usage | null;
  [key: string]: unknown;
}

export interface ChatMessage {
  role: string;
  content: string | null | Array<{ type: string; text?: string; [key: string]: unknown }>;
  [key: string]: unknown;
}

/** `POST /v1/chat/completions` body. */
export interface ChatCompletionRequest {
  model?: string;
  messages: ChatMessage[];
  max_tokens?: number;
  max_completion_tokens?: number;
  n?: number;
  seed?: number;
  logprobs?: boolean;
  top_logprobs?: number;
  stream?: boolean;
  stream_options?: StreamOptions;
  [key: string]: unknown;
}

export interface ChatCompletion {
  id: string;
  object: 'chat.completion';
  created: number;
  model: string;
  choices: Array<{
    index: number;
    message: ChatMessage;
    finish_reason: string | null;
    logprobs: unknown;
    [key: string]: unknown;
  }>;
  usage: Usage;
  [key: string]: unknown;
}

export interface ChatCompletionChunk {
  id: string;
  object: 'chat.completion.chunk';
  created: number;
  model: string;
  choices: Array<{
    index: number;
    delta: Partial<ChatMessage>;
    finish_reason: string | null;
    logprobs: unknown;
    [key: string]: unknown;
  }>;
  usage?: Usage | null;
  [key: string]: unknown;
}

/** Sampling parameters of `/inference/v1/generate`; unknown ones pass through. */
export interface SamplingParams {
  max_tokens?: number;
  n?: number;
  seed?: number;
  temperature?: number;
  logprobs?: number | null;
  [key: string]: unknown;
}

/** `POST /inference/v1/generate` body: token ids in, token ids out. */
export interface GenerateRequest {
  token_ids: number[];
  sampling_params?: SamplingParams;
  model?: string;
  stream?: boolean;
  [key: string]: unknown;
}

export interface TokenLogprob {
  token: string;
  logprob: number;
  [key: string]: unknown;
}

export interface GenerateChoice {
  index: number;
  token_ids: number[];
  logprobs: { content: TokenLogprob[] } | null;
  finish_reason: string | null;
  [key: string]: unknown;
}

export interface GenerateResponse {
  request_id: string;
  choices: GenerateChoice[];
  [key: string]: unknown;
}

/** One streamed generate event: `token_ids` holds only the new tokens. */
export type GenerateChunk = GenerateResponse;

export interface TokenizeRequest {
  prompt?: string;
  messages?: ChatMessage[];
  model?: string;
  [key: string]: unknown;
}

export interface TokenizeResponse {
  count: number;
  max_model_len: number;
  tokens: number[];
  [key: string]: unknown;
}

export interface DetokenizeRequest {
  tokens: number[];
  model?: string;
  [key: string]: unknown;
}

export interface DetokenizeResponse {
  prompt: string;
  [key: string]: unknown;
}
