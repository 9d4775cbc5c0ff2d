import { InvalidOptionsError } from '../errors.js';
import type { ChunkStream } from '../streaming/chunk-stream.js';
import type { RequestExecutor } from './attempt-loop.js';
import { NO_OPTIONS, type RequestOptions } from './request-run.js';
import type {
  ChatCompletion,
  ChatCompletionChunk,
  ChatCompletionRequest,
  Completion,
  CompletionChunk,
  CompletionRequest,
} from './wire-types.js';

/** Sets the client's default model on a body that names none; rejects a body that is not an object. */
export function withModel<T extends { model?: string }>(body: T, model: string | undefined): T {
  if (typeof body !== 'object' || body === null) {
    throw new InvalidOptionsError(`Expected the request body to be an object, got \`${JSON.stringify(body)}\``);
  }
  return body.model === undefined && model !== undefined ? { ...body, model } : body;
}

/** `/v1/completions`. */
export class Completions {
  /** @internal */
  constructor(
    private readonly executor: RequestExecutor,
    private readonly model: string | undefined,
  ) {}

  /** Streams the completion as chunks. */
  create(body: CompletionRequest & { stream: true }, options?: RequestOptions): Promise<ChunkStream<CompletionChunk>>;
  /** The whole completion once generation ends. */
  create(body: CompletionRequest & { stream?: false }, options?: RequestOptions): Promise<Completion>;
  create(body: CompletionRequest, options?: RequestOptions): Promise<Completion | ChunkStream<CompletionChunk>>;
  create(
    body: CompletionRequest,
    options: RequestOptions = NO_OPTIONS,
  ): Promise<Completion | ChunkStream<CompletionChunk>> {
    let request: typeof body;
    try {
      request = withModel(body, this.model);
    } catch (error) {
      return Promise.reject(error); // a caller's mistake is a rejection, as from every other method
    }
    return request.stream === true
      ? this.executor.stream<CompletionChunk>('/v1/completions', request, options, undefined)
      : this.executor.call<Completion>('POST', '/v1/completions', request, options);
  }
}

/** `/v1/chat/completions`. */
export class ChatCompletions {
  /** @internal */
  constructor(
    private readonly executor: RequestExecutor,
    private readonly model: string | undefined,
  ) {}

  /** Streams the chat completion as chunks. */
  create(
    body: ChatCompletionRequest & { stream: true },
    options?: RequestOptions,
  ): Promise<ChunkStream<ChatCompletionChunk>>;
  /** The whole chat completion once generation ends. */
  create(body: ChatCompletionRequest & { stream?: false }, options?: RequestOptions): Promise<ChatCompletion>;
  create(
    body: ChatCompletionRequest,
    options?: RequestOptions,
  ): Promise<ChatCompletion | ChunkStream<ChatCompletionChunk>>;
  create(
    body: ChatCompletionRequest,
    options: RequestOptions = NO_OPTIONS,
  ): Promise<ChatCompletion | ChunkStream<ChatCompletionChunk>> {
    let request: typeof body;
    try {
      request = withModel(body, this.model);
    } catch (error) {
      return Promise.reject(error); // a caller's mistake is a rejection, as from every other method
    }
    return request.stream === true
      ? this.executor.stream<ChatCompletionChunk>('/v1/chat/completions', request, options, undefined)
      : this.executor.call<ChatCompletion>('POST', '/v1/chat/completions', request, options);
  }
}

/** `/v1/chat/...`. */
export class Chat {
  readonly completions: ChatCompletions;

  /** @internal */
  constructor(executor: RequestExecutor, model: string | undefined) {
    this.completions = new ChatCompletions(executor, model);
  }
}
