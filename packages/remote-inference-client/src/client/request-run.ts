import { performance } from 'node:perf_hooks';
import { AbortError, type InferenceError, isInferenceError, TimeoutError } from '../errors.js';
import type { AttemptResult } from '../transport/attempt.js';
import { MAX_TIMER_MS } from './options.js';
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

/** @internal State of one logical request across its attempts: its deadline, abort, errors and timing. */
export class RequestRun {
  readonly controller = new AbortController();
  readonly startedAtMs = performance.now();
  readonly startedAt = Date.now();
  readonly deadlineMs: number;
  readonly errors: InferenceError[] = [];
  /** Engines this request failed on (failover); created on the first failure, as most requests have none. */
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
        this.controller.abort(new AbortError('The request was aborted by the caller', { cause: signal.reason }));
      if (signal.aborted) this.onUserAbort();
      else signal.addEventListener('abort', this.onUserAbort, { once: true });
    }
    if (details) this.gaps = [];
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /** Node's timers overflow above 2^31-1 ms (firing after 1 ms): a longer deadline is re-armed in steps. */
  private armDeadline(budget: number): void {
    const leftMs = this.deadlineMs - performance.now();
    if (leftMs <= 0) {
      this.controller.abort(new TimeoutError('total', budget));
      return;
    }
    this.timer = setTimeout(() => this.armDeadline(budget), Math.min(leftMs, MAX_TIMER_MS));
  }

  /** The reason the run was aborted, as a typed error. */
  abortError(): InferenceError {
    const reason = this.controller.signal.reason;
    return isInferenceError(reason) ? reason : new AbortError('The request was aborted', { cause: reason });
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
      startedAt: this.startedAt,
    };
  }
}
