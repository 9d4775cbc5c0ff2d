import { describe, expectTypeOf, it } from 'vitest';
import {
  type AdaptiveCapOptions,
  type CapState,
  type ChatCompletion,
  type ChatCompletionChunk,
  type ChunkStream,
  type Completion,
  type CompletionChunk,
  type GenerateChunk,
  type GenerateResponse,
  type InferenceError,
  isInferenceError,
  type RemoteInferenceClient,
  type RemoteInferenceClientOptions,
  type RoutingPreference,
  SessionAffinityPolicy,
  TimeoutError,
  type TimeoutPhase,
} from '../src/index.js';

// Type tests: checked by `tsc --noEmit` (the typecheck task). The bodies are type-checked, never run: a client
// and values of the right types are all they need.
function typesOf(check: (client: RemoteInferenceClient) => void): void {
  expectTypeOf(check).toBeFunction();
}

describe('public types', () => {
  it('the stream overloads return a stream for `stream: true` and a whole response otherwise', () =>
    typesOf((client) => {
      expectTypeOf(client.completions.create({ prompt: 'x', stream: true })).resolves.toEqualTypeOf<
        ChunkStream<CompletionChunk>
      >();
      expectTypeOf(client.completions.create({ prompt: 'x' })).resolves.toEqualTypeOf<Completion>();
      expectTypeOf(client.completions.create({ prompt: 'x', stream: false })).resolves.toEqualTypeOf<Completion>();
      expectTypeOf(client.chat.completions.create({ messages: [], stream: true })).resolves.toEqualTypeOf<
        ChunkStream<ChatCompletionChunk>
      >();
      expectTypeOf(client.chat.completions.create({ messages: [] })).resolves.toEqualTypeOf<ChatCompletion>();
      expectTypeOf(client.generate({ token_ids: [1], stream: true })).resolves.toEqualTypeOf<
        ChunkStream<GenerateChunk>
      >();
      expectTypeOf(client.generate({ token_ids: [1] })).resolves.toEqualTypeOf<GenerateResponse>();
      // A body whose `stream` is only known at run time gets the union.
      const stream = Math.random() > 0.5;
      expectTypeOf(client.generate({ token_ids: [1], stream })).resolves.toEqualTypeOf<
        GenerateResponse | ChunkStream<GenerateChunk>
      >();
    }));

  it('a stream yields its chunk type and can be aborted', () => {
    type Stream = ChunkStream<GenerateChunk>;
    expectTypeOf<Stream>().toMatchTypeOf<AsyncIterable<GenerateChunk>>();
    expectTypeOf<Stream>().toHaveProperty('abort');
  });

  it('errors narrow: isInferenceError and instanceof give the typed fields', () => {
    const caught: unknown = null;
    if (isInferenceError(caught)) expectTypeOf(caught).toEqualTypeOf<InferenceError>();
    if (caught instanceof TimeoutError) expectTypeOf(caught.phase).toEqualTypeOf<TimeoutPhase>();
  });

  it('late binding: the adaptive cap is an option beside the fixed one, and stats say where each cap stands', () =>
    typesOf((client) => {
      expectTypeOf<{ limits: { perEngine: { adaptive: true } } }>().toMatchTypeOf<
        Pick<RemoteInferenceClientOptions, 'limits'>
      >();
      expectTypeOf<{ initialCap: number; intervalMs: number }>().toMatchTypeOf<AdaptiveCapOptions>();
      const engine = client.stats().engines[0]!;
      expectTypeOf(engine.maxConcurrency).toEqualTypeOf<number>();
      expectTypeOf(engine.capacity?.state).toEqualTypeOf<CapState | undefined>();
      expectTypeOf(new SessionAffinityPolicy({ maxWaitMs: 500 }).preferred).returns.toEqualTypeOf<
        RoutingPreference | undefined
      >();
    }));
});
