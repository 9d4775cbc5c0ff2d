import { performance } from 'node:perf_hooks';
import { AbortError, type InferenceError, TimeoutError } from '../errors.js';
import type { AdmissionRequest } from '../limits/admission.js';
import { MAX_TIMER_MS } from '../timers.js';
import type { AttemptResult } from '../transport/attempt.js';
import type { RequestStats } from './request-stats.js';
import { parseServerTiming } from './server-timing.js';

/** Options of one call. */
export interface RequestOptions {
  /** Aborts the request wherever it is (queued, connecting, streaming). */
  signal?: AbortSignal;
  /** Total deadline of this request, retries and queueing included; overrides `timeouts.totalMs`. */
  timeoutMs?: number;
  /** Multi-turn session: routed to the same engine (session-affinity policy) and sent as `X-Session-ID`. */
  sessionId?: string;
  /** Admission priority; higher first, FIFO within one. @default 0 */
  priority?: number;
  /** Extra headers for this request. */
  headers?: Record<string, string>;
  /** Opaque value echoed in this request's {@link RequestStats} (correlate with your rollout ids). */
  tag?: unknown;
}

/** Options of {@link RemoteInferenceClient.generate}. */
export interface GenerateOptions extends RequestOptions {
  /**
   * Resume a cut stream by re-submitting prompt + received tokens with the remaining `max_tokens`; the caller sees
   * one seamless result. Needs `sampling_params.max_tokens` and `n` = 1. @default false
   */
  resume?: boolean;
}

/** @internal The options of a call given none: one frozen object, not one per call (a long request keeps it alive). */
export const NO_OPTIONS: GenerateOptions = Object.freeze({});

/**
 * @internal
 * What an attempt on the client's own transport listens to instead of an `AbortSignal`: the run it belongs to.
 * An `AbortSignal` costs ~5 µs of CPU to make in Node 20 and ~250 bytes a long request holds (bench/rl-burst.mjs),
 * so a run makes one only when something needs the standard interface (a queue wait, a backoff sleep, a stream's
 * attempt, a `sendAttempt` seam).
 */
export interface RunAbort {
  readonly aborted: boolean;
  /** Why the run was aborted (a typed error), once it was. */
  readonly reason: unknown;
  /** The run as an `AbortSignal`, made on first use (a wait for a connection). */
  readonly signal: AbortSignal;
  /** The attempt in flight: told of an abort by `handleEvent()`, as an `AbortSignal` listener would be. */
  attach(attempt: { handleEvent(): void }): void;
  detach(attempt: { handleEvent(): void }): void;
}

/**
 * @internal State of one logical request across its attempts: its deadline, abort, errors and timing. It is also
 * its own admission request (a long request would hold one more object per attempt otherwise).
 */
export class RequestRun implements RunAbort, AdmissionRequest {
  readonly startedAtMs = performance.now();
  readonly deadlineMs: number;
  /** Every failed attempt's error; made on the first failure, as most requests have none. */
  errors: InferenceError[] | undefined;
  /**
   * Engines this request failed on, avoided by its retries (`retry.failover`); created on the first failure, as
   * most requests have none.
   */
  avoid: Set<string> | undefined;
  attempts = 0;
  staleRetries = 0;
  resumes = 0;
  queueMs = 0;
  result: AttemptResult | undefined;
  engine = '';
  status: number | undefined;
  events = 0;
  ttftMs: number | undefined;
  lastEventMs = 0;
  gaps: number[] | undefined;
  private timer: NodeJS.Timeout | undefined;
  /** Made on first use of {@link signal}. */
  private controller: AbortController | undefined;
  private abortReason: InferenceError | undefined;
  private attempt: { handleEvent(): void } | undefined;
  /** Forwards the caller's abort; only a call given a `signal` has one. */
  private readonly onUserAbort: (() => void) | undefined;

  constructor(
    readonly path: string,
    readonly options: RequestOptions,
    totalMs: number | undefined,
    details: boolean,
  ) {
    const budget = options.timeoutMs ?? totalMs;
    this.deadlineMs = budget === undefined ? Number.POSITIVE_INFINITY : this.startedAtMs + budget;
    if (budget !== undefined && Number.isFinite(budget)) this.armDeadline(budget);
    const signal = options.signal;
    if (signal) {
      this.onUserAbort = () =>
        this.abort(new AbortError('The request was aborted by the caller', { cause: signal.reason }));
      if (signal.aborted) this.onUserAbort();
      else signal.addEventListener('abort', this.onUserAbort, { once: true });
    }
    if (details) this.gaps = [];
  }

  get priority(): number {
    return this.options.priority ?? 0;
  }

  get sessionId(): string | undefined {
    return this.options.sessionId;
  }

  /** A retry or resume goes to the front of its priority's queue. */
  get retry(): boolean {
    return this.attempts > 1;
  }

  get aborted(): boolean {
    return this.abortReason !== undefined;
  }

  get reason(): unknown {
    return this.abortReason;
  }

  /** The run as an `AbortSignal`, for those that need one (made on first use, aborted if the run already is). */
  get signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController();
      if (this.abortReason) this.controller.abort(this.abortReason);
    }
    return this.controller.signal;
  }

  /** Aborts the run wherever it is (queued, connecting, streaming, backing off); the first reason stays. */
  abort(reason: InferenceError): void {
    if (this.abortReason) return;
    this.abortReason = reason;
    this.attempt?.handleEvent();
    this.controller?.abort(reason);
  }

  attach(attempt: { handleEvent(): void }): void {
    this.attempt = attempt;
    if (this.abortReason) attempt.handleEvent();
  }

  detach(attempt: { handleEvent(): void }): void {
    if (this.attempt === attempt) this.attempt = undefined;
  }

  /** Node's timers overflow above 2^31-1 ms (firing after 1 ms): a longer deadline is re-armed in steps. */
  private armDeadline(budget: number): void {
    const leftMs = this.deadlineMs - performance.now();
    if (leftMs <= 0) {
      this.abort(new TimeoutError('total', budget));
      return;
    }
    this.timer = setTimeout(() => this.armDeadline(budget), Math.min(leftMs, MAX_TIMER_MS));
  }

  /** The reason the run was aborted, as a typed error. */
  abortError(): InferenceError {
    return this.abortReason ?? new AbortError('The request was aborted');
  }

  recordEvent(receivedAtMs: number): void {
    this.events++;
    if (this.ttftMs === undefined) this.ttftMs = receivedAtMs - this.startedAtMs - this.queueMs;
    else this.gaps?.push(receivedAtMs - this.lastEventMs);
    this.lastEventMs = receivedAtMs;
  }

  finish(): void {
    clearTimeout(this.timer);
    if (this.onUserAbort) this.options.signal?.removeEventListener('abort', this.onUserAbort);
  }

  stats(error: InferenceError | undefined): RequestStats {
    const timing = this.result?.timing;
    const serverTiming = parseServerTiming(
      this.result?.trailers['server-timing'] ?? this.result?.headers['server-timing'],
    );
    return {
      path: this.path,
      engine: this.engine,
      sessionId: this.options.sessionId,
      tag: this.options.tag,
      ok: error === undefined,
      errorCode: error?.code,
      status: this.status ?? error?.status,
      attempts: this.attempts,
      staleRetries: this.staleRetries,
      resumes: this.resumes,
      queueMs: this.queueMs,
      poolWaitMs: timing?.poolWaitMs ?? 0,
      connectMs: timing?.connectMs,
      reusedConnection: timing?.reusedConnection ?? false,
      ttfbMs: timing?.ttfbMs,
      ttftMs: this.ttftMs,
      interTokenGapsMs: this.gaps,
      events: this.events,
      totalMs: performance.now() - this.startedAtMs,
      serverQueueMs: serverTiming.queue,
      serverTtftMs: serverTiming.ttft,
      startedAt: Math.round(performance.timeOrigin + this.startedAtMs),
    };
  }
}
