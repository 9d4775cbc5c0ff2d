import {
  AbortError,
  type InferenceError,
  isInferenceError,
  ServerStreamError,
  StreamParseError,
  StreamTruncatedError,
} from '../errors.js';
import { ChunkStream } from '../streaming/chunk-stream.js';
import { type SseEvent, SseParser } from '../streaming/sse-parser.js';
import type { AttemptFlow, AttemptResult, AttemptSink } from '../transport/attempt.js';
import type { ResponseReader } from './attempt-loop.js';
import type { RequestRun } from './request-run.js';
import type { ResumeState } from './resume.js';

/**
 * A streamed request as the caller sees it: one {@link ChunkStream} across every attempt (a resumed stream goes
 * on seamlessly), `opened` once the first chunk arrived or the request failed before any, and a reader per attempt
 * that parses SSE into chunks.
 */
export class StreamReader<T> {
  readonly stream: ChunkStream<T>;
  /** Resolves when the first chunk reached the caller; rejects when the request failed before any. */
  readonly opened: Promise<void>;
  /** Chunks delivered to the caller, over every attempt. */
  delivered = 0;
  private markOpen!: () => void;
  private failOpen!: (error: InferenceError) => void;
  private isOpen = false;
  /** The current attempt's socket flow: a stream the caller does not read stops reading the socket. */
  private flow: AttemptFlow | undefined;
  private paused = false;

  constructor(
    private readonly run: RequestRun,
    private readonly maxEventBytes: number,
    private readonly resume: ResumeState | undefined,
  ) {
    this.opened = new Promise<void>((resolve, reject) => {
      this.markOpen = resolve;
      this.failOpen = reject;
    });
    this.stream = new ChunkStream<T>(
      (reason) => run.abort(isInferenceError(reason) ? reason : new AbortError(reason.message, { cause: reason })),
      (paused) => {
        this.paused = paused;
        if (paused) this.flow?.pause();
        else this.flow?.resume();
      },
    );
  }

  /** Settles `opened` once: with the first chunk, or with how the request ended before one. */
  open(error?: InferenceError): void {
    if (this.isOpen) return;
    this.isOpen = true;
    if (error) this.failOpen(error);
    else this.markOpen();
  }

  /** The reader of one attempt. */
  forAttempt(): ResponseReader<void> {
    const run = this.run;
    const attemptAbort = new AbortController();
    const onRunAbort = () => attemptAbort.abort(run.signal.reason);
    if (run.signal.aborted) onRunAbort();
    else run.signal.addEventListener('abort', onRunAbort, { once: true });
    let streamError: InferenceError | undefined;
    let sawDone = false;
    const deliveredBefore = this.delivered;
    const fail = (error: InferenceError) => {
      streamError ??= error;
      attemptAbort.abort(error);
    };
    const parser = new SseParser(
      (event: SseEvent) => {
        if (streamError || sawDone) return;
        if (event.data === '[DONE]') {
          sawDone = true;
          return;
        }
        const problem = this.onEvent(event);
        if (typeof problem === 'string') {
          fail(new StreamParseError(`Stream event ${problem}: ${event.data.slice(0, 200)}`, { engine: run.engine }));
        } else if (problem) {
          fail(problem);
        }
      },
      (error) => fail(new StreamParseError(error.message, { engine: run.engine, cause: error })),
      { maxEventBytes: this.maxEventBytes },
    );
    const sink: AttemptSink = {
      onData: (chunk, receivedAtMs) => {
        const before = this.delivered;
        parser.push(chunk, receivedAtMs);
        return this.delivered > before;
      },
      onFlow: (flow) => {
        this.flow = flow;
        if (this.paused) flow.pause();
      },
    };
    return {
      sink,
      signal: attemptAbort.signal,
      get error() {
        return streamError;
      },
      delivered: () => this.delivered > deliveredBefore,
      ended: () => sawDone && streamError === undefined,
      finish: (_result: AttemptResult) => {
        const error = streamError ?? (sawDone ? undefined : new StreamTruncatedError({ engine: run.engine }));
        return error ? { error } : { value: undefined };
      },
      dispose: () => run.signal.removeEventListener('abort', onRunAbort),
    };
  }

  /** One data event: a chunk for the caller, or what is wrong with it. */
  private onEvent(event: SseEvent): string | InferenceError | undefined {
    const run = this.run;
    let chunk: Record<string, unknown>;
    try {
      chunk = JSON.parse(event.data) as Record<string, unknown>;
    } catch {
      return 'is not valid JSON';
    }
    if (typeof chunk !== 'object' || chunk === null || Array.isArray(chunk)) return 'is not a JSON object';
    if ('error' in chunk) {
      const detail = chunk.error as { message?: unknown } | null;
      const message = typeof detail?.message === 'string' ? detail.message : JSON.stringify(chunk.error);
      return new ServerStreamError(message, { engine: run.engine, body: event.data });
    }
    const choices = chunk.choices as Array<Record<string, unknown>> | undefined;
    if (choices !== undefined && !Array.isArray(choices)) return 'has `choices` that is not an array';
    if (choices && choices.length > 0) run.recordEvent(event.receivedAtMs);
    if (this.resume && choices?.[0]) {
      // Resume re-sends what it received as prompt tokens: anything but token ids would be sent back as such.
      const problem = this.resume.record(choices[0]);
      if (problem) return problem;
    }
    this.delivered++;
    this.open();
    this.stream.push(chunk as T);
    return undefined;
  }
}
