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

/** `/v1/completions`. */
export class Completions {
  /** @internal */
  constructor(private readonly executor: RequestExecutor) {}

  /** Streams the completion as chunks. */
  create(body: CompletionRequest & { stream: true }, options?: RequestOptions): Promise<ChunkStream<CompletionChunk>>;
  /** The whole completion once generation ends. */
  create(body: CompletionRequest & { stream?: false }, options?: RequestOptions): Promise<Completion>;
  create(body: CompletionRequest, options?: RequestOptions): Promise<Completion | ChunkStream<CompletionChunk>>;
  create(
    body: CompletionRequest,
    options: RequestOptions = NO_OPTIONS,
  ): Promise<Completion | ChunkStream<CompletionChunk>> {
    // The executor sets the default model, and makes a body that is not an object a rejection.
    return body?.stream === true
      ? this.executor.stream<CompletionChunk>('/v1/completions', body, options, undefined)
      : this.executor.call<Completion>('POST', '/v1/completions', body, options);
  }
}

/** `/v1/chat/completions`. */
export class ChatCompletions {
  /** @internal */
  constructor(private readonly executor: RequestExecutor) {}

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
    // The executor sets the default model, and makes a body that is not an object a rejection.
    return body?.stream === true
      ? this.executor.stream<ChatCompletionChunk>('/v1/chat/completions', body, options, undefined)
      : this.executor.call<ChatCompletion>('POST', '/v1/chat/completions', body, options);
  }
}

/** `/v1/chat/...`. */
export class Chat {
  readonly completions: ChatCompletions;

  /** @internal */
  constructor(executor: RequestExecutor) {
    this.completions = new ChatCompletions(executor);
  }
}
