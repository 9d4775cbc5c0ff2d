import type { EngineRequest, Sequence } from './engine.js';
import { checkBatchSize, checkPromptText, checkRequestSize } from './request-bounds.js';
import { generatedTokenText, tokenize } from './tokens.js';

/** An HTTP error in vLLM's shape: `{"error":{"message","type","param","code"}}`. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type = status === 404 ? 'NotFoundError' : 'BadRequestError',
    readonly param: string | null = null,
  ) {
    super(message);
  }

  /** JSON body as vLLM sends it. */
  body(): string {
    return JSON.stringify({ error: { message: this.message, type: this.type, param: this.param, code: this.status } });
  }
}

/** Which endpoint a generation came through: decides every byte of the response. */
export type GenerationKind = 'completion' | 'chat' | 'generate';

/** A generation request after validation, independent of the endpoint's field names. */
export interface GenerationJob {
  kind: GenerationKind;
  /** One entry per prompt (completions accept a batch). */
  prompts: number[][];
  n: number;
  maxTokens: number;
  /** Base seed of the request; sequence i of a prompt uses `seed + i`. */
  seed: number;
  stream: boolean;
  includeUsage: boolean;
  /** Completions: number of top logprobs; chat: top_logprobs (0 when logprobs=true); undefined when off. */
  logprobs: number | undefined;
  returnTokenIds: boolean;
}

/** Engine-side facts the parser needs. */
export interface ParseContext {
  model: string;
  maxModelLen: number;
  vocabSize: number;
  seed: number;
  /** Most generated tokens (prompts x n x max_tokens) one request may ask for. @default 16777216 */
  maxRequestTokens?: number;
}

type Json = Record<string, unknown>;

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function optionalInteger(body: Json, field: string, min: number, fallback: number | undefined): number | undefined {
  const value = body[field];
  if (value === undefined || value === null) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min) {
    throw new HttpError(
      400,
      `\`${field}\` must be an integer >= ${min}, got ${JSON.stringify(value)}`,
      'BadRequestError',
      field,
    );
  }
  return value;
}

function isTokenArray(value: unknown): value is number[] {
  return Array.isArray(value) && value.every((token) => Number.isInteger(token) && token >= 0);
}

function checkModel(body: Json, context: ParseContext): void {
  const model = body.model;
  if (model === undefined || model === null) return;
  if (model !== context.model) {
    throw new HttpError(404, `The model \`${String(model)}\` does not exist.`, 'NotFoundError', 'model');
  }
}

function checkTokens(prompts: number[][], context: ParseContext): void {
  for (const prompt of prompts) {
    for (const token of prompt) {
      if (token >= context.vocabSize) {
        throw new HttpError(
          400,
          `Token id ${token} is out of vocabulary (size ${context.vocabSize})`,
          'BadRequestError',
        );
      }
    }
  }
}

function resolveMaxTokens(requested: number | undefined, prompts: number[][], context: ParseContext): number {
  // A loop, not Math.max(...lengths): spreading a 200k-prompt batch overflows the call stack.
  let longest = 0;
  for (const prompt of prompts) if (prompt.length > longest) longest = prompt.length;
  const maxTokens = requested ?? context.maxModelLen - longest;
  if (longest + maxTokens > context.maxModelLen) {
    throw new HttpError(
      400,
      `This model's maximum context length is ${context.maxModelLen} tokens. However, you requested ${longest + maxTokens} tokens (${longest} in the messages, ${maxTokens} in the completion). Please reduce the length of the messages or completion.`,
      'BadRequestError',
    );
  }
  if (maxTokens < 1) throw new HttpError(400, '`max_tokens` must be at least 1', 'BadRequestError', 'max_tokens');
  return maxTokens;
}

/** Holds the request to the work bounds (n, sequences, generated tokens) before anything is allocated for it. */
function withinBounds(job: GenerationJob, context: ParseContext): GenerationJob {
  checkRequestSize(job.prompts.length, job.n, job.maxTokens, context.maxRequestTokens);
  return job;
}

function streamFlags(body: Json): { stream: boolean; includeUsage: boolean } {
  const stream = body.stream === true;
  const options = body.stream_options;
  if (options !== undefined && options !== null && !stream) {
    throw new HttpError(
      400,
      'Stream options can only be defined when `stream=True`.',
      'BadRequestError',
      'stream_options',
    );
  }
  return { stream, includeUsage: isObject(options) && options.include_usage === true };
}

/** Validates a `/v1/completions` body. */
export function parseCompletionRequest(body: unknown, context: ParseContext): GenerationJob {
  if (!isObject(body)) throw new HttpError(400, 'Request body must be a JSON object');
  checkModel(body, context);
  const prompt = body.prompt;
  if (Array.isArray(prompt) && typeof prompt[0] !== 'number') checkBatchSize(prompt);
  const tokenizeText = (text: string) =>
    tokenize(checkPromptText(text, context.maxModelLen, body.max_tokens), context.vocabSize);
  let prompts: number[][];
  if (typeof prompt === 'string') prompts = [tokenizeText(prompt)];
  else if (isTokenArray(prompt) && prompt.length > 0) prompts = [prompt];
  else if (Array.isArray(prompt) && prompt.length > 0 && prompt.every((item) => typeof item === 'string')) {
    prompts = prompt.map((item) => tokenizeText(item as string));
  } else if (Array.isArray(prompt) && prompt.length > 0 && prompt.every(isTokenArray)) prompts = prompt as number[][];
  else {
    throw new HttpError(
      400,
      '`prompt` must be a string, an array of strings, an array of token ids, or an array of token id arrays',
      'BadRequestError',
      'prompt',
    );
  }
  checkTokens(prompts, context);
  const logprobs = optionalInteger(body, 'logprobs', 0, undefined);
  return withinBounds(
    {
      kind: 'completion',
      prompts,
      n: optionalInteger(body, 'n', 1, 1)!,
      maxTokens: resolveMaxTokens(optionalInteger(body, 'max_tokens', 0, 16), prompts, context),
      seed: optionalInteger(body, 'seed', Number.MIN_SAFE_INTEGER, context.seed)!,
      ...streamFlags(body),
      logprobs,
      returnTokenIds: body.return_token_ids === true,
    },
    context,
  );
}

/** The prompt text the toy chat template renders from messages. */
export function renderChatPrompt(messages: readonly { role: string; content: unknown }[]): string {
  let text = '';
  for (const message of messages) {
    let content = '';
    if (typeof message.content === 'string') content = message.content;
    else if (Array.isArray(message.content)) {
      for (const part of message.content) if (isObject(part) && typeof part.text === 'string') content += part.text;
    }
    text += `<|${message.role}|>\n${content}\n`;
  }
  return `${text}<|assistant|>\n`;
}

/** Validates a `/v1/chat/completions` body. */
export function parseChatRequest(body: unknown, context: ParseContext): GenerationJob {
  if (!isObject(body)) throw new HttpError(400, 'Request body must be a JSON object');
  checkModel(body, context);
  const messages = body.messages;
  if (
    !Array.isArray(messages) ||
    messages.length === 0 ||
    !messages.every((m) => isObject(m) && typeof m.role === 'string')
  ) {
    throw new HttpError(400, '`messages` must be a non-empty array of {role, content}', 'BadRequestError', 'messages');
  }
  const text = renderChatPrompt(messages as { role: string; content: unknown }[]);
  const prompts = [
    tokenize(
      checkPromptText(text, context.maxModelLen, body.max_completion_tokens ?? body.max_tokens),
      context.vocabSize,
    ),
  ];
  const requested =
    optionalInteger(body, 'max_completion_tokens', 0, undefined) ?? optionalInteger(body, 'max_tokens', 0, undefined);
  return withinBounds(
    {
      kind: 'chat',
      prompts,
      n: optionalInteger(body, 'n', 1, 1)!,
      maxTokens: resolveMaxTokens(requested, prompts, context),
      seed: optionalInteger(body, 'seed', Number.MIN_SAFE_INTEGER, context.seed)!,
      ...streamFlags(body),
      logprobs: body.logprobs === true ? (optionalInteger(body, 'top_logprobs', 0, 0) ?? 0) : undefined,
      returnTokenIds: body.return_token_ids === true,
    },
    context,
  );
}

/** Validates an `/inference/v1/generate` body (token-in/token-out). */
export function parseGenerateRequest(body: unknown, context: ParseContext): GenerationJob {
  if (!isObject(body)) throw new HttpError(400, 'Request body must be a JSON object');
  checkModel(body, context);
  if (!isTokenArray(body.token_ids) || body.token_ids.length === 0) {
    throw new HttpError(400, '`token_ids` must be a non-empty array of token ids', 'BadRequestError', 'token_ids');
  }
  const prompts = [body.token_ids];
  checkTokens(prompts, context);
  const sampling = body.sampling_params ?? {};
  if (!isObject(sampling)) {
    throw new HttpError(400, '`sampling_params` must be an object', 'BadRequestError', 'sampling_params');
  }
  const logprobs = optionalInteger(sampling, 'logprobs', 0, undefined);
  return withinBounds(
    {
      kind: 'generate',
      prompts,
      n: optionalInteger(sampling, 'n', 1, 1)!,
      maxTokens: resolveMaxTokens(optionalInteger(sampling, 'max_tokens', 0, 16), prompts, context),
      seed: optionalInteger(sampling, 'seed', Number.MIN_SAFE_INTEGER, context.seed)!,
      ...streamFlags(body),
      logprobs,
      returnTokenIds: true,
    },
    context,
  );
}

/** Builds every byte of one request's response, streamed or whole. */
export class ResponseFormatter {
  private readonly created = Math.floor(Date.now() / 1000);
  private readonly prefix: string;
  private readonly head: string;

  constructor(
    readonly job: GenerationJob,
    readonly id: string,
    readonly model: string,
    private readonly vocabSize: number,
  ) {
    const object = job.kind === 'chat' ? 'chat.completion.chunk' : 'text_completion';
    // The constant head of every chunk, built once: per-token work is only the variable tail.
    this.head =
      job.kind === 'generate'
        ? `{"request_id":${JSON.stringify(id)}`
        : `{"id":${JSON.stringify(id)},"object":"${object}","created":${this.created},"model":${JSON.stringify(model)}`;
    this.prefix = `data: ${this.head},"choices":[`;
  }

  /** Index of a sequence in `choices` (completions number choices across a prompt batch). */
  private choiceIndex(sequence: Sequence, promptIndex: number): number {
    return promptIndex * this.job.n + sequence.index;
  }

  private text(tokenIds: readonly number[], from: number, to: number): string {
    let text = '';
    for (let index = from; index < to; index++) text += generatedTokenText(tokenIds[index]!, this.vocabSize);
    return text;
  }

  private completionLogprobs(sequence: Sequence, from: number, to: number, offset: number): string {
    const tokens: string[] = [];
    const offsets: number[] = [];
    const top: Record<string, number>[] = [];
    let position = offset;
    for (let index = from; index < to; index++) {
      const text = generatedTokenText(sequence.tokenIds[index]!, this.vocabSize);
      tokens.push(text);
      offsets.push(position);
      position += text.length;
      top.push({ [text]: sequence.logprobs[index]! });
    }
    return JSON.stringify({
      text_offset: offsets,
      token_logprobs: sequence.logprobs.slice(from, to),
      tokens,
      top_logprobs: this.job.logprobs ? top : null,
    });
  }

  private chatLogprobs(sequence: Sequence, from: number, to: number): string {
    const content = [];
    for (let index = from; index < to; index++) {
      const token = generatedTokenText(sequence.tokenIds[index]!, this.vocabSize);
      const logprob = sequence.logprobs[index]!;
      const entry = { token, logprob, bytes: [...Buffer.from(token)] };
      content.push({ ...entry, top_logprobs: this.job.logprobs ? [entry] : [] });
    }
    return JSON.stringify({ content });
  }

  private generateLogprobs(sequence: Sequence, from: number, to: number): string {
    const content = [];
    for (let index = from; index < to; index++) {
      content.push({ token: `token_id:${sequence.tokenIds[index]}`, logprob: sequence.logprobs[index]! });
    }
    return JSON.stringify({ content });
  }

  /**
   * One SSE event for the tokens `[from, to)` of a sequence. `first` marks the sequence's first event (chat sends
   * the assistant role; `return_token_ids` sends the prompt ids); `finish` carries the finish reason.
   */
  streamEvent(sequence: Sequence, promptIndex: number, from: number, to: number, first: boolean): string {
    const job = this.job;
    const index = this.choiceIndex(sequence, promptIndex);
    const finished = sequence.finishReason !== undefined && to === sequence.tokenIds.length;
    const finish = finished ? `"${sequence.finishReason}"` : 'null';
    const stop = finished ? ',"stop_reason":null' : '';
    const wantLogprobs = job.logprobs !== undefined && to > from;
    if (job.kind === 'generate') {
      const logprobs = wantLogprobs ? this.generateLogprobs(sequence, from, to) : 'null';
      return `${this.prefix}{"index":${index},"token_ids":[${sequence.tokenIds.slice(from, to).join(',')}],"logprobs":${logprobs},"finish_reason":${finish}}]}\n\n`;
    }
    const text = JSON.stringify(this.text(sequence.tokenIds, from, to));
    const ids = job.returnTokenIds
      ? `,"token_ids":[${sequence.tokenIds.slice(from, to).join(',')}]${first ? `,"prompt_token_ids":[${job.prompts[promptIndex]!.join(',')}]` : ''}`
      : '';
    if (job.kind === 'chat') {
      const logprobs = wantLogprobs ? this.chatLogprobs(sequence, from, to) : 'null';
      const role = first
        ? `${this.prefix}{"index":${index},"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}\n\n`
        : '';
      return `${role}${this.prefix}{"index":${index},"delta":{"content":${text}},"logprobs":${logprobs},"finish_reason":${finish}${stop}${ids}}]}\n\n`;
    }
    const logprobs = wantLogprobs ? this.completionLogprobs(sequence, from, to, 0) : 'null';
    return `${this.prefix}{"index":${index},"text":${text},"logprobs":${logprobs},"finish_reason":${finish},"stop_reason":null${ids}}],"usage":null}\n\n`;
  }

  private usage(request: EngineRequest): string {
    let completion = 0;
    for (const sequence of request.sequences) completion += sequence.tokenIds.length;
    let prompt = 0;
    for (const tokens of this.job.prompts) prompt += tokens.length;
    return `{"prompt_tokens":${prompt},"total_tokens":${prompt + completion},"completion_tokens":${completion},"prompt_tokens_details":null}`;
  }

  /** The usage chunk (`choices: []`) sent before `[DONE]` when `stream_options.include_usage` is set. */
  usageEvent(request: EngineRequest): string {
    return `data: ${this.head},"choices":[],"usage":${this.usage(request)}}\n\n`;
  }

  /** A vLLM mid-stream error event. */
  static errorEvent(message: string, type: string, code: number): string {
    return `data: ${JSON.stringify({ error: { message, type, param: null, code } })}\n\n`;
  }

  /** The whole non-streaming response body. */
  fullBody(request: EngineRequest, promptIndexOf: (sequence: Sequence) => number): string {
    const job = this.job;
    const choices = request.sequences.map((sequence) => {
      const promptIndex = promptIndexOf(sequence);
      const index = this.choiceIndex(sequence, promptIndex);
      const end = sequence.tokenIds.length;
      const logprobs = job.logprobs !== undefined;
      if (job.kind === 'generate') {
        return `{"index":${index},"token_ids":[${sequence.tokenIds.join(',')}],"logprobs":${logprobs ? this.generateLogprobs(sequence, 0, end) : 'null'},"finish_reason":"${sequence.finishReason}"}`;
      }
      const text = JSON.stringify(this.text(sequence.tokenIds, 0, end));
      const ids = job.returnTokenIds
        ? `,"token_ids":[${sequence.tokenIds.join(',')}],"prompt_token_ids":[${job.prompts[promptIndex]!.join(',')}]`
        : '';
      if (job.kind === 'chat') {
        return `{"index":${index},"message":{"role":"assistant","reasoning_content":null,"content":${text},"tool_calls":[]},"logprobs":${logprobs ? this.chatLogprobs(sequence, 0, end) : 'null'},"finish_reason":"${sequence.finishReason}","stop_reason":null${ids}}`;
      }
      return `{"index":${index},"text":${text},"logprobs":${logprobs ? this.completionLogprobs(sequence, 0, end, 0) : 'null'},"finish_reason":"${sequence.finishReason}","stop_reason":null,"prompt_logprobs":null${ids}}`;
    });
    if (job.kind === 'generate') return `${this.head},"choices":[${choices.join(',')}]}`;
    const object = job.kind === 'chat' ? 'chat.completion' : 'text_completion';
    const head = this.head.replace('"chat.completion.chunk"', `"${object}"`);
    return `${head},"choices":[${choices.join(',')}],"usage":${this.usage(request)},"prompt_logprobs":null,"kv_transfer_params":null}`;
  }
}
