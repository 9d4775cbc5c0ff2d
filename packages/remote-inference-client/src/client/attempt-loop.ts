import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  AbortError,
  ClientClosedError,
  ConnectionError,
  HttpStatusError,
  type InferenceError,
  InvalidOptionsError,
  isInferenceError,
  RetriesExhaustedError,
  StreamInterruptedError,
  StreamParseError,
  TimeoutError,
  UnexpectedError,
} from '../errors.js';
import { type EngineEntry, noEngineBeforeDeadline, type Scheduler } from '../limits/admission.js';
import type { ChunkStream } from '../streaming/chunk-stream.js';
import {
  type AttemptRequest,
  type AttemptResult,
  type AttemptSink,
  isAttemptFailure,
  type SendAttempt,
} from '../transport/attempt.js';
import type { RecoveryProber } from './active-health.js';
import { checkRequestOptions, type ResolvedClientOptions, serializeBody, withModel } from './options.js';
import { type RequestOptions, RequestRun } from './request-run.js';
import { publishRequestStats, type RequestStats, wantsDetails } from './request-stats.js';
import type { ResumeState } from './resume.js';
import { backoffMs, parseRetryAfter, type RetryBudget } from './retry-policy.js';
import { StreamReader } from './stream-reader.js';

const GENERATION_PATHS = new Set(['/v1/completions', '/v1/chat/completions', '/inference/v1/generate']);

/**
 * How one attempt's 2xx response reaches the caller. The attempt loop is the same for every request; only this
 * differs: a whole body parsed as JSON, or a stream of events pushed into a {@link ChunkStream}.
 */
export interface ResponseReader<T> {
  /** Receives a streamed body as it arrives; undefined: the body is buffered whole. */
  readonly sink: AttemptSink | undefined;
  /** Aborts this attempt only (a stream that saw a bad event); undefined: the run's own signal. */
  readonly signal: AbortSignal | undefined;
  /** An error the reader itself saw (a bad event): it explains the transport's failure that followed. */
  readonly error: InferenceError | undefined;
  /** Whether this attempt delivered anything to the caller (a data event). */
  delivered(): boolean;
  /** Whether the stream's end (`[DONE]`) arrived: a transport failure after it lost nothing. */
  ended(): boolean;
  /** A finished 2xx attempt as a value, or the error that makes it a failure. */
  finish(result: AttemptResult, run: RequestRun): { value: T } | { error: InferenceError; delivered?: boolean };
  /** Ends the attempt's listeners. */
  dispose(): void;
}

/** What the attempt loop needs from its client: counters it keeps, the scheduler, the one way to send. */
export interface ExecutorParts {
  options: ResolvedClientOptions;
  scheduler: Scheduler;
  budget: RetryBudget;
  send: SendAttempt;
  /**
   * `send` is the client's own transport, which listens to the run itself: no `AbortSignal` is made per request.
   * A `sendAttempt` seam gets the run's `signal`.
   */
  linksRuns: boolean;
  hook: ((stats: RequestStats) => void) | undefined;
  /** Probes engines that refused connections (`health.probeIntervalMs`); undefined: off. */
  prober?: RecoveryProber | undefined;
}

/**
 * Runs requests: admission, one attempt on the wire, the verdict, and what follows a failure (health, failover,
 * backoff, retry budget, resume) — in one loop for whole and streamed responses alike. Owns the client's request
 * counters.
 */
export class RequestExecutor {
  readonly runs = new Set<RequestRun>();
  readonly counters = { requests: 0, completed: 0, failed: 0, retries: 0, staleRetries: 0, resumes: 0 };
  readonly errors: Record<string, number> = {};
  closed = false;

  private readonly plainHeaders: Record<string, string>;
  private readonly jsonHeaders: Record<string, string>;

  constructor(private readonly parts: ExecutorParts) {
    this.plainHeaders = Object.freeze({ ...parts.options.headers });
    this.jsonHeaders = Object.freeze({ ...parts.options.headers, 'content-type': 'application/json' });
  }

  /**
   * A non-streamed call: JSON in (the client's default model set on a body that names none), JSON out. Not an
   * `async` function, as the request's one suspended frame is the attempt loop's: a long request holds each frame
   * and promise for seconds (bench/rl-burst.mjs). A caller's mistake still comes back as a rejected promise.
   */
  call<T>(method: 'GET' | 'POST', path: string, body: unknown, options: RequestOptions): Promise<T> {
    let payload: string | undefined;
    let run: RequestRun;
    try {
      payload = body === undefined ? undefined : serializeBody(withModel(body as object, this.parts.options.model));
      run = this.startRun(path, options);
    } catch (error) {
      return Promise.reject(error);
    }
    return this.execute(run, method, payload, WHOLE_READER as ReaderSource<T>);
  }

  /**
   * A streamed call. Resolves once the first attempt that got a 2xx is streaming (failures before that reject,
   * after retries); the returned stream yields chunks and throws a typed error if the stream breaks later.
   */
  async stream<T>(
    path: string,
    body: object,
    options: RequestOptions,
    resume: ResumeState | undefined,
  ): Promise<ChunkStream<T>> {
    if (!GENERATION_PATHS.has(path)) throw new InvalidOptionsError(`Streaming is not supported on ${path}`);
    const payload = serializeBody(withModel(body, this.parts.options.model));
    const run = this.startRun(path, options);
    const reader = new StreamReader<T>(run, this.parts.options.transport.maxEventBytes, resume);
    this.execute(run, 'POST', payload, reader, resume).then(
      () => {
        reader.stream.end();
        reader.open();
      },
      (error: InferenceError) => {
        reader.stream.fail(error);
        reader.open(error);
      },
    );
    await reader.opened;
    return reader.stream;
  }

  private startRun(path: string, options: RequestOptions): RequestRun {
    if (this.closed) throw new ClientClosedError();
    checkRequestOptions(options);
    const run = new RequestRun(path, options, this.parts.options.timeouts.totalMs, wantsDetails(this.parts.hook));
    this.runs.add(run);
    this.counters.requests++;
    this.parts.budget.recordRequest();
    return run;
  }

  private endRun(run: RequestRun, error: InferenceError | undefined): void {
    run.finish();
    this.runs.delete(run);
    if (error) {
      this.counters.failed++;
      this.errors[error.code] = (this.errors[error.code] ?? 0) + 1;
    } else {
      this.counters.completed++;
    }
    publishRequestStats(() => run.stats(error), this.parts.hook);
  }

  /**
   * The one attempt loop. Resolves with the value, or rejects with the final typed error (the run is ended).
   * `source` gives each attempt its reader (a whole body, or a stream's); `resume` continues a cut token stream
   * instead of failing it.
   */
  private async execute<T>(
    run: RequestRun,
    method: 'GET' | 'POST',
    payload: string | undefined,
    source: ReaderSource<T>,
    resume?: ResumeState,
  ): Promise<T> {
    try {
      // A data event reached the caller in some attempt: from there on, a transport cut continues the generation.
      let everDelivered = false;
      for (;;) {
        run.attempts++;
        const reader = source.forAttempt();
        let engine: EngineEntry | undefined;
        let error: InferenceError | undefined;
        let delivered = false;
        let value: T | undefined;
        try {
          const granted = this.admit(run);
          engine = granted instanceof Promise ? await granted : granted;
          const result = await this.parts.send(
            engine.endpoint,
            this.attemptRequest(run, method, payload, reader.signal),
            reader.sink,
          );
          this.noteAttempt(run, result);
          if (result.status < 200 || result.status >= 300) {
            error = this.statusError(run, result);
          } else {
            engine.health.onSuccess();
            const outcome = reader.finish(result, run);
            if ('value' in outcome) value = outcome.value;
            else ({ error, delivered = false } = outcome);
          }
        } catch (failure) {
          if (engine !== undefined && reader.ended()) {
            // A reset after `[DONE]`: the caller has the whole stream (it used to end in ERR_STREAM_INTERRUPTED).
            engine.health.onSuccess();
          } else {
            error = reader.error ?? this.toError(run, failure);
            // Admission failures (abort, queue deadline, queue full, no engine) are final: they already waited.
            if (engine === undefined) throw error;
          }
        } finally {
          reader.dispose();
        }
        let resumable = false;
        let complete = false;
        try {
          if (error !== undefined) {
            // Whether a cut continues is the run's (tokens reached the caller in some attempt); whether this attempt
            // resumed anything is its own (`resumed`, below).
            delivered ||= reader.delivered();
            everDelivered ||= delivered;
            resumable = resume?.resumable(error, everDelivered) ?? false;
            // Every token arrived (or the engine said it finished); only the end of the stream was lost.
            complete = resumable && resume!.complete;
            if (delivered && !resumable && error.code === 'ERR_CONNECTION') {
              error = new StreamInterruptedError(`Connection lost mid-stream: ${error.message}`, {
                engine: run.engine,
                cause: error,
              });
            }
            // The engine's verdict before its grant is settled: settling wakes the queue, and a half-open engine
            // whose probe failed would otherwise take the next request before the failure re-armed its cooldown.
            if (engine && !complete) this.recordFailure(run, engine, error);
          }
        } finally {
          if (engine) this.parts.scheduler.settle(engine);
        }
        if (error === undefined || complete) {
          this.endRun(run, undefined);
          return value as T;
        }
        // A continuation that failed before its own first event resumed nothing: it is re-sent with the same body
        // and counts as a retry (a refused one counted as a second resume).
        const resumed = resumable && delivered;
        await this.afterFailure(run, error, delivered, resumable, resumed);
        if (resumed) {
          run.resumes++;
          this.counters.resumes++;
        }
        if (resumable) payload = resume!.nextBody();
      }
    } catch (error) {
      const typed = isInferenceError(error) ? error : new UnexpectedError(error);
      typed.attempts = run.attempts;
      this.endRun(run, typed);
      throw typed;
    }
  }

  /** One attempt's request. `signal`: the reader's own (a stream's attempt), else the run is the abort source. */
  private attemptRequest(
    run: RequestRun,
    method: 'GET' | 'POST',
    body: string | undefined,
    signal: AbortSignal | undefined,
  ): AttemptRequest {
    const { options } = this.parts;
    let headers: Record<string, string>;
    if (run.options.headers === undefined && run.options.sessionId === undefined) {
      // The common case: one frozen object per client, not one per attempt (a long request keeps it alive).
      headers = body === undefined ? this.plainHeaders : this.jsonHeaders;
    } else {
      headers = { ...options.headers };
      if (body !== undefined) headers['content-type'] = 'application/json';
      // Header names are case-insensitive: a caller's `Content-Type` replaces the client's `content-type` (it was
      // sent beside it, two content types on one request).
      const extra = run.options.headers;
      if (extra !== undefined) for (const name of Object.keys(extra)) headers[name.toLowerCase()] = extra[name]!;
      if (run.options.sessionId !== undefined) headers['x-session-id'] = run.options.sessionId;
    }
    const { timeouts } = options;
    return {
      method,
      path: run.path,
      headers,
      body,
      ttfbTimeoutMs: timeouts.ttfbMs,
      idleTimeoutMs: timeouts.idleMs,
      connectTimeoutMs: timeouts.connectMs,
      maxResponseBytes: options.transport.maxResponseBytes,
      signal: signal ?? (this.parts.linksRuns ? undefined : run.signal),
      run: signal === undefined && this.parts.linksRuns ? run : undefined,
    };
  }

  /** Admission: an engine at once when there is room (the common case: no promise), else a wait in the queue. */
  private admit(run: RequestRun): EngineEntry | Promise<EngineEntry> {
    if (run.aborted) throw run.abortError();
    const admitted = performance.now();
    const { scheduler } = this.parts;
    let granted: EngineEntry | Promise<EngineEntry>;
    try {
      // The run is its own admission request (its fields and getters): no object per attempt.
      granted = scheduler.admit(run);
    } catch (error) {
      throw this.admissionError(run, error);
    }
    if (granted instanceof Promise) {
      return granted.then(
        (engine) => admittedAfter(run, engine, admitted),
        (error: unknown) => {
          throw this.admissionError(run, error);
        },
      );
    }
    return admittedAfter(run, granted, admitted);
  }

  /** Why admission failed, as the caller should see it. */
  private admissionError(run: RequestRun, error: unknown): unknown {
    if (!(run.aborted && error instanceof AbortError)) return error;
    const reason = run.abortError();
    // The total deadline and the queue deadline race; with no engine up, say so rather than "timeout".
    if (reason instanceof TimeoutError && !this.parts.scheduler.anyEngineAvailable()) {
      return noEngineBeforeDeadline(reason);
    }
    return reason;
  }

  /**
   * What a failed attempt says of its engine (error count, health, failover), recorded before the attempt's grant
   * is settled. A resumed stream's cut counts like any connection failure: the engine that cut it is avoided.
   */
  private recordFailure(run: RequestRun, entry: EngineEntry, error: InferenceError): void {
    // The caller's abort (a `break`, a signal) says nothing of the engine: not in its error counts.
    if (error instanceof AbortError) return;
    entry.errors[error.code] = (entry.errors[error.code] ?? 0) + 1;
    if (
      error.code === 'ERR_CONNECTION' ||
      error.code === 'ERR_PORTS_EXHAUSTED' ||
      (error instanceof TimeoutError && error.phase === 'connect') ||
      // An engine that cuts streams mid-generation is failing, resumed or not (without `resume` the cut was never
      // counted: an engine crashing in every stream stayed healthy, and a failed half-open probe re-armed nothing).
      error instanceof StreamInterruptedError
    ) {
      entry.health.onConnectionFailure(error instanceof ConnectionError && error.systemCode === 'ECONNREFUSED');
      this.parts.prober?.watch(entry);
    }
    if (this.parts.options.retry.failover) {
      run.avoid ??= new Set();
      run.avoid.add(entry.endpoint);
    }
  }

  /**
   * Decides after a failed attempt: throw the final error, or wait (backoff, `Retry-After`) and go again. A
   * resumed stream goes through here like a retry: it is charged to the retry budget and backs off.
   */
  private async afterFailure(
    run: RequestRun,
    error: InferenceError,
    delivered: boolean,
    resumable: boolean,
    resumed: boolean,
  ): Promise<void> {
    run.errors ??= [];
    const errors = run.errors;
    errors.push(error);
    error.attempts = run.attempts;
    if (run.aborted) throw run.abortError();
    if (!resumable && (delivered || !error.retryable)) throw error;
    const { retry } = this.parts.options;
    if (run.attempts >= retry.maxAttempts) {
      throw new RetriesExhaustedError(errors, resumable ? 'Resume attempts exhausted' : 'Retries exhausted');
    }
    const waitMs = backoffMs(run.attempts + 1, retry, error);
    if (
      error instanceof HttpStatusError &&
      error.retryAfterMs !== undefined &&
      error.retryAfterMs > retry.maxRetryAfterMs
    ) {
      throw new RetriesExhaustedError(errors, `Retry-After of ${error.retryAfterMs} ms exceeds retry.maxRetryAfterMs`);
    }
    if (performance.now() + waitMs >= run.deadlineMs) throw new RetriesExhaustedError(errors, 'Deadline reached');
    if (!this.parts.budget.tryRetry(this.runs.size)) {
      throw new RetriesExhaustedError(errors, 'Retry budget spent (the fleet is failing)');
    }
    if (waitMs > 0) {
      try {
        await sleep(waitMs, undefined, { signal: run.signal });
      } catch {
        throw run.abortError();
      }
    }
    // Counted once it happens: a retry whose backoff was aborted is not one.
    if (!resumed) this.counters.retries++;
  }

  private toError(run: RequestRun, failure: unknown): InferenceError {
    if (isAttemptFailure(failure)) {
      run.result = { status: 0, headers: {}, body: undefined, trailers: {}, timing: failure.timing };
      run.staleRetries += failure.timing.staleRetries;
      this.counters.staleRetries += failure.timing.staleRetries;
      if (run.aborted) return run.abortError();
      return failure.error;
    }
    if (isInferenceError(failure)) return failure;
    if (run.aborted) return run.abortError();
    return new UnexpectedError(failure);
  }

  private statusError(run: RequestRun, result: AttemptResult): HttpStatusError {
    return new HttpStatusError(result.status, result.body?.toString('utf8') ?? '', {
      engine: run.engine,
      attempts: run.attempts,
      retryAfterMs: parseRetryAfter(result.headers['retry-after']),
    });
  }

  private noteAttempt(run: RequestRun, result: AttemptResult): void {
    run.result = result;
    run.status = result.status;
    run.staleRetries += result.timing.staleRetries;
    this.counters.staleRetries += result.timing.staleRetries;
  }
}

/** Records a granted admission on the run. */
function admittedAfter(run: RequestRun, engine: EngineEntry, admittedAtMs: number): EngineEntry {
  run.queueMs += performance.now() - admittedAtMs;
  run.engine = engine.endpoint;
  return engine;
}

/** Gives each attempt of a request its {@link ResponseReader}. */
interface ReaderSource<T> {
  forAttempt(): ResponseReader<T>;
}

/**
 * The reader of every whole-response call: a JSON body, which reached the caller once it parses (a body that does
 * not parse is not re-sent: the engine did the work). One shared object: it holds no state of its own.
 */
const WHOLE_READER: ResponseReader<unknown> & ReaderSource<unknown> = {
  sink: undefined,
  error: undefined,
  signal: undefined,
  forAttempt() {
    return this;
  },
  delivered() {
    return false;
  },
  ended() {
    return false;
  },
  finish(result, run) {
    try {
      return { value: JSON.parse(result.body?.toString('utf8') ?? '') };
    } catch (parseError) {
      return {
        delivered: true,
        error: new StreamParseError(`Response body is not valid JSON: ${(parseError as Error).message}`, {
          engine: run.engine,
          status: result.status,
          cause: parseError,
        }),
      };
    }
  },
  dispose() {},
};
