import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  AbortError,
  ClientClosedError,
  EngineUnavailableError,
  HttpStatusError,
  type InferenceError,
  InvalidOptionsError,
  isInferenceError,
  RetriesExhaustedError,
  ServerStreamError,
  StreamInterruptedError,
  StreamParseError,
  StreamTruncatedError,
  TimeoutError,
} from '../errors.js';
import { type EngineEntry, resolveLimits, Scheduler, type Ticket } from '../limits/admission.js';
import { resolvePolicy } from '../routing/policies.js';
import { ChunkStream } from '../streaming/chunk-stream.js';
import { type SseEvent, SseParser } from '../streaming/sse-parser.js';
import {
  type AttemptFlow,
  type AttemptRequest,
  type AttemptResult,
  isAttemptFailure,
  sendAttempt,
} from '../transport/attempt.js';
import type { PoolStats } from '../transport/connection-pool.js';
import { sharedTransport, Transport } from '../transport/transport.js';
import { ControlPlane } from './control-plane.js';
import {
  checkRequestOptions,
  MAX_TIMER_MS,
  normalizeEngine,
  type RemoteInferenceClientOptions,
  type ResolvedClientOptions,
  resolveClientOptions,
  serializeBody,
} from './options.js';
import { publishRequestStats, type RequestStats, wantsDetails } from './request-stats.js';
import { backoffMs, isRetryable, parseRetryAfter, RetryBudget } from './retry-policy.js';
import { parseServerTiming } from './server-timing.js';
import type {
  ChatCompletion,
  ChatCompletionChunk,
  ChatCompletionRequest,
  Completion,
  CompletionChunk,
  CompletionRequest,
  DetokenizeRequest,
  DetokenizeResponse,
  GenerateChunk,
  GenerateRequest,
  GenerateResponse,
  TokenizeRequest,
  TokenizeResponse,
} from './wire-types.js';

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

/** One item's outcome in {@link RemoteInferenceClient.generateBatch}: nothing is dropped. */
export type BatchResult<T> = { ok: true; value: T } | { ok: false; error: InferenceError };

/** Counters of the whole client; see README for each field. */
export interface ClientStats {
  inFlight: number;
  queued: number;
  requests: number;
  completed: number;
  failed: number;
  retries: number;
  staleRetries: number;
  resumes: number;
  retryBudgetDenied: number;
  errors: Record<string, number>;
  connections: { open: number; idle: number; busy: number; connecting: number; opened: number; reused: number };
  engines: Array<{
    endpoint: string;
    inFlight: number;
    state: string;
    draining: boolean;
    requests: number;
    errors: Record<string, number>;
    connections: PoolStats;
  }>;
  limits: { maxInFlightSeen: number; maxQueuedSeen: number; rejectedQueueFull: number };
}

const GENERATION_PATHS = new Set(['/v1/completions', '/v1/chat/completions', '/inference/v1/generate']);

/** State of one logical request across its attempts. */
class RequestRun {
  readonly controller = new AbortController();
  readonly startedAtMs = performance.now();
  readonly startedAt = Date.now();
  readonly deadlineMs: number;
  readonly errors: InferenceError[] = [];
  readonly avoid = new Set<string>();
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
  private readonly onUserAbort: () => void;

  constructor(
    readonly path: string,
    readonly options: RequestOptions,
    totalMs: number | undefined,
    details: boolean,
  ) {
    const budget = options.timeoutMs ?? totalMs;
    this.deadlineMs = budget === undefined ? Number.POSITIVE_INFINITY : this.startedAtMs + budget;
    if (budget !== undefined && Number.isFinite(budget)) this.armDeadline(budget);
    this.onUserAbort = () =>
      this.controller.abort(new AbortError('The request was aborted by the caller', { cause: options.signal?.reason }));
    if (options.signal?.aborted) this.onUserAbort();
    else options.signal?.addEventListener('abort', this.onUserAbort, { once: true });
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
    this.options.signal?.removeEventListener('abort', this.onUserAbort);
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

interface ResumeState {
  prompt: number[];
  maxTokens: number;
  received: number[];
  logprobs: unknown[];
  hasLogprobs: boolean;
}

/**
 * The client RL trainers use against vLLM-compatible engines: pooled transport shared per event loop, admission
 * limits, routing with health, retries that are safe for generation, and streaming with resume.
 */
export class RemoteInferenceClient {
  private readonly options: ResolvedClientOptions;
  private readonly transport: Transport;
  private readonly scheduler: Scheduler;
  private readonly budget: RetryBudget;
  private readonly hook: ((stats: RequestStats) => void) | undefined;
  private readonly runs = new Set<RequestRun>();
  private closed = false;
  private closing: Promise<void> | undefined;
  private healthTimer: NodeJS.Timeout | undefined;
  private readonly counters = { requests: 0, completed: 0, failed: 0, retries: 0, staleRetries: 0, resumes: 0 };
  private readonly errors: Record<string, number> = {};

  /** `/v1/completions`. */
  readonly completions: {
    create(body: CompletionRequest & { stream: true }, options?: RequestOptions): Promise<ChunkStream<CompletionChunk>>;
    create(body: CompletionRequest & { stream?: false }, options?: RequestOptions): Promise<Completion>;
    create(body: CompletionRequest, options?: RequestOptions): Promise<Completion | ChunkStream<CompletionChunk>>;
  };
  /** `/v1/chat/completions`. */
  readonly chat: {
    completions: {
      create(
        body: ChatCompletionRequest & { stream: true },
        options?: RequestOptions,
      ): Promise<ChunkStream<ChatCompletionChunk>>;
      create(body: ChatCompletionRequest & { stream?: false }, options?: RequestOptions): Promise<ChatCompletion>;
      create(
        body: ChatCompletionRequest,
        options?: RequestOptions,
      ): Promise<ChatCompletion | ChunkStream<ChatCompletionChunk>>;
    };
  };
  /** The RL control plane, fanned out to every engine: a result or an error per engine. */
  readonly control: ControlPlane;

  constructor(options: RemoteInferenceClientOptions) {
    this.options = resolveClientOptions(options);
    const { transport, engines, sourceIps } = this.options;
    const settings = {
      maxConnectionsPerEngine: this.options.connectionsPerEngine,
      ceilingIsPortBudget: this.options.ceilingIsPortBudget,
      maxConnecting: transport.maxConnecting,
      keepAliveTimeoutMs: transport.keepAliveTimeoutMs,
      keepAliveTimeoutThresholdMs: transport.keepAliveTimeoutThresholdMs,
      keepAliveMaxTimeoutMs: transport.keepAliveMaxTimeoutMs,
      connectTimeoutMs: this.options.timeouts.connectMs,
      sourceIps,
    };
    this.transport = transport.shared ? sharedTransport(settings) : new Transport(settings, 'private').retain();
    this.scheduler = new Scheduler(resolveLimits(options.limits), resolvePolicy(options.routing), options.health);
    this.scheduler.setEngines(engines);
    this.budget = new RetryBudget(this.options.retry.budgetRatio, this.options.retry.minRetriesPerSecond);
    this.hook = options.onRequestEnd;
    this.completions = {
      create: ((body: CompletionRequest, requestOptions?: RequestOptions) =>
        body.stream === true
          ? this.openStream<CompletionChunk>('/v1/completions', this.withModel(body), requestOptions ?? {}, undefined)
          : this.call<Completion>('POST', '/v1/completions', this.withModel(body), requestOptions ?? {})) as never,
    };
    this.chat = {
      completions: {
        create: ((body: ChatCompletionRequest, requestOptions?: RequestOptions) =>
          body.stream === true
            ? this.openStream<ChatCompletionChunk>(
                '/v1/chat/completions',
                this.withModel(body),
                requestOptions ?? {},
                undefined,
              )
            : this.call<ChatCompletion>(
                'POST',
                '/v1/chat/completions',
                this.withModel(body),
                requestOptions ?? {},
              )) as never,
      },
    };
    this.control = new ControlPlane(
      () => this.scheduler.list().map((engine) => engine.endpoint),
      (endpoint) => this.transport.pool(endpoint),
      this.options,
      () => this.evictIdleConnections(),
    );
    const activeCheckMs = options.health?.activeCheckIntervalMs ?? 0;
    if (activeCheckMs > 0) this.startActiveHealthChecks(activeCheckMs);
  }

  /** Polls `GET /health` on every engine: a failed check counts like a connection failure, a 200 heals. */
  private startActiveHealthChecks(intervalMs: number): void {
    let running = false;
    this.healthTimer = setInterval(async () => {
      if (running || this.closed) return;
      running = true;
      try {
        const results = await this.control.health(Math.min(5000, intervalMs));
        for (const result of results) {
          const entry = this.scheduler.list().find((engine) => engine.endpoint === result.engine);
          if (!entry) continue;
          if (result.ok) entry.health.onSuccess();
          else entry.health.onConnectionFailure();
        }
        this.scheduler.pump();
      } finally {
        running = false;
      }
    }, intervalMs);
    this.healthTimer.unref();
  }

  private withModel<T extends { model?: string }>(body: T): T {
    if (typeof body !== 'object' || body === null) {
      throw new InvalidOptionsError(`Expected the request body to be an object, got \`${JSON.stringify(body)}\``);
    }
    return body.model === undefined && this.options.model !== undefined ? { ...body, model: this.options.model } : body;
  }

  /**
   * `/inference/v1/generate`: token ids in, token ids (and logprobs) out. With `stream: true` returns a stream of
   * chunks holding the new tokens; with `resume: true` a cut stream continues seamlessly.
   */
  generate(body: GenerateRequest & { stream: true }, options?: GenerateOptions): Promise<ChunkStream<GenerateChunk>>;
  generate(body: GenerateRequest & { stream?: false }, options?: GenerateOptions): Promise<GenerateResponse>;
  generate(body: GenerateRequest, options?: GenerateOptions): Promise<GenerateResponse | ChunkStream<GenerateChunk>>;
  async generate(
    body: GenerateRequest,
    options: GenerateOptions = {},
  ): Promise<GenerateResponse | ChunkStream<GenerateChunk>> {
    const request = this.withModel(body);
    if (!Array.isArray(request.token_ids) || request.token_ids.length === 0) {
      throw new InvalidOptionsError(
        `Expected \`token_ids\` to be a non-empty array of token ids, got \`${JSON.stringify(request.token_ids)}\``,
      );
    }
    if (!options.resume) {
      return request.stream === true
        ? this.openStream<GenerateChunk>('/inference/v1/generate', request, options, undefined)
        : this.call<GenerateResponse>('POST', '/inference/v1/generate', request, options);
    }
    const sampling = request.sampling_params ?? {};
    if (!Number.isInteger(sampling.max_tokens) || (sampling.max_tokens as number) < 1) {
      throw new InvalidOptionsError(
        `\`resume: true\` needs \`sampling_params.max_tokens\` (an integer >= 1), got \`${JSON.stringify(sampling.max_tokens)}\``,
      );
    }
    if ((sampling.n ?? 1) !== 1) {
      throw new InvalidOptionsError(
        `\`resume: true\` needs \`sampling_params.n\` = 1, got \`${JSON.stringify(sampling.n)}\``,
      );
    }
    const resume: ResumeState = {
      prompt: [...request.token_ids],
      maxTokens: sampling.max_tokens as number,
      received: [],
      logprobs: [],
      hasLogprobs: false,
    };
    const stream = await this.openStream<GenerateChunk>(
      '/inference/v1/generate',
      { ...request, stream: true },
      options,
      resume,
    );
    if (request.stream === true) return stream;
    // Non-streamed with resume: stream internally so a cut can be resumed, and hand back one whole response.
    let requestId = '';
    let finishReason: string | null = null;
    for await (const chunk of stream) {
      requestId ||= chunk.request_id;
      finishReason = chunk.choices[0]?.finish_reason ?? finishReason;
    }
    return {
      request_id: requestId,
      choices: [
        {
          index: 0,
          token_ids: resume.received,
          logprobs: resume.hasLogprobs ? { content: resume.logprobs as never } : null,
          finish_reason: finishReason,
        },
      ],
    };
  }

  /**
   * A rollout batch: every item through {@link generate}, results in input order, one outcome per item (nothing
   * dropped). `onResult` sees each as it lands. Concurrency is governed by `limits`.
   */
  async generateBatch(
    items: readonly GenerateRequest[],
    options: GenerateOptions & { onResult?: (index: number, result: BatchResult<GenerateResponse>) => void } = {},
  ): Promise<BatchResult<GenerateResponse>[]> {
    const { onResult, ...rest } = options;
    return Promise.all(
      items.map(async (item, index) => {
        let result: BatchResult<GenerateResponse>;
        try {
          result = { ok: true, value: await this.generate({ ...item, stream: false }, rest) };
        } catch (error) {
          result = {
            ok: false,
            error: isInferenceError(error) ? error : new AbortError(String(error), { cause: error }),
          };
        }
        onResult?.(index, result);
        return result;
      }),
    );
  }

  /** `POST /tokenize`. */
  tokenize(body: TokenizeRequest, options: RequestOptions = {}): Promise<TokenizeResponse> {
    return this.call<TokenizeResponse>('POST', '/tokenize', this.withModel(body), options);
  }

  /** `POST /detokenize`. */
  detokenize(body: DetokenizeRequest, options: RequestOptions = {}): Promise<DetokenizeResponse> {
    return this.call<DetokenizeResponse>('POST', '/detokenize', this.withModel(body), options);
  }

  /** Resolves when every engine answers `GET /health` with 200; throws ERR_ENGINE_UNAVAILABLE naming the others. */
  async waitUntilHealthy({
    timeoutMs = 60_000,
    intervalMs = 200,
  }: {
    timeoutMs?: number;
    intervalMs?: number;
  } = {}): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    let unhealthy: string[] = [];
    for (;;) {
      const results = await this.control.health();
      unhealthy = results.filter((result) => !result.ok).map((result) => result.engine);
      if (unhealthy.length === 0) return;
      if (performance.now() + intervalMs > deadline) break;
      await sleep(intervalMs);
    }
    throw new EngineUnavailableError(`Engines not healthy after ${timeoutMs} ms: ${unhealthy.join(', ')}`, {
      hint: 'Check that the engines are up and reachable from this host.',
    });
  }

  /** Replaces the engine set at run time: new engines are used at once; removed ones drain, their requests finish. */
  setEngines(engines: readonly string[]): void {
    if (!Array.isArray(engines) || engines.length === 0) {
      throw new InvalidOptionsError(
        `Expected \`engines\` to be a non-empty array of URLs, got \`${JSON.stringify(engines)}\``,
      );
    }
    const normalized = [...new Set(engines.map((engine, index) => normalizeEngine(engine, `engines[${index}]`)))];
    const removed = this.scheduler.setEngines(normalized);
    for (const entry of removed) {
      const dropWhenDrained = () => {
        if (entry.outstanding > 0) {
          setTimeout(dropWhenDrained, 50).unref();
          return;
        }
        void this.transport.drop(entry.endpoint);
      };
      dropWhenDrained();
    }
  }

  /** Closes every idle pooled connection (done for you on control-plane phase changes). Returns how many. */
  evictIdleConnections(): number {
    return this.transport.evictIdle();
  }

  /** Counters of the client and of each engine. */
  stats(): ClientStats {
    const pools = this.transport.stats();
    const engines = this.scheduler.list().map((entry: EngineEntry) => {
      const pool = pools.get(entry.endpoint);
      return {
        endpoint: entry.endpoint,
        inFlight: entry.outstanding,
        state: entry.health.state,
        draining: entry.draining,
        requests: entry.requests,
        errors: { ...entry.errors },
        connections: pool ?? {
          open: 0,
          idle: 0,
          busy: 0,
          connecting: 0,
          waiting: 0,
          opened: 0,
          reused: 0,
          staleDiscarded: 0,
          connectErrors: 0,
        },
      };
    });
    const connections = { open: 0, idle: 0, busy: 0, connecting: 0, opened: 0, reused: 0 };
    for (const pool of pools.values()) {
      connections.open += pool.open;
      connections.idle += pool.idle;
      connections.busy += pool.busy;
      connections.connecting += pool.connecting;
      connections.opened += pool.opened;
      connections.reused += pool.reused;
    }
    return {
      inFlight: this.scheduler.inFlightCount,
      queued: this.scheduler.queuedCount,
      ...this.counters,
      retryBudgetDenied: this.budget.denied,
      errors: { ...this.errors },
      connections,
      engines,
      limits: {
        maxInFlightSeen: this.scheduler.counters.maxInFlight,
        maxQueuedSeen: this.scheduler.counters.maxQueued,
        rejectedQueueFull: this.scheduler.counters.rejectedQueueFull,
      },
    };
  }

  /** Aborts in-flight requests, closes every connection this client holds (the shared pool when it is the last user). */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.closed = true;
      clearInterval(this.healthTimer);
      for (const run of this.runs) run.controller.abort(new AbortError('The client was closed'));
      await this.scheduler.close();
      await this.transport.release();
    })();
    return this.closing;
  }

  // ---- request execution ------------------------------------------------------------------------------------

  private startRun(path: string, options: RequestOptions): RequestRun {
    if (this.closed) throw new ClientClosedError();
    checkRequestOptions(options);
    const run = new RequestRun(path, options, this.options.timeouts.totalMs, wantsDetails(this.hook));
    this.runs.add(run);
    this.counters.requests++;
    this.budget.recordRequest();
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
    publishRequestStats(run.stats(error), this.hook);
  }

  private attemptRequest(run: RequestRun, method: 'GET' | 'POST', body: string | undefined): AttemptRequest {
    const headers: Record<string, string> = { ...this.options.headers, ...run.options.headers };
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (run.options.sessionId !== undefined) headers['x-session-id'] = run.options.sessionId;
    const { timeouts } = this.options;
    return {
      method,
      path: run.path,
      headers,
      body,
      ttfbTimeoutMs: timeouts.ttfbMs,
      maxResponseBytes: this.options.transport.maxResponseBytes,
      idleTimeoutMs: timeouts.idleMs,
      connectTimeoutMs: timeouts.connectMs,
      signal: run.signal,
    };
  }

  private async admit(run: RequestRun): Promise<Ticket> {
    if (run.signal.aborted) throw run.abortError();
    const admitted = performance.now();
    try {
      const granted = this.scheduler.admit({
        signal: run.signal,
        deadlineMs: run.deadlineMs,
        priority: run.options.priority ?? 0,
        sessionId: run.options.sessionId,
        avoid: this.options.retry.failover ? run.avoid : undefined,
      });
      const ticket = granted instanceof Promise ? await granted : granted;
      run.queueMs += performance.now() - admitted;
      run.engine = ticket.engine.endpoint;
      return ticket;
    } catch (error) {
      if (run.signal.aborted && error instanceof AbortError) {
        const reason = run.abortError();
        // The total deadline and the queue deadline race; with no engine up, say so rather than "timeout".
        if (reason instanceof TimeoutError && !this.scheduler.anyEngineAvailable()) {
          throw new EngineUnavailableError(
            'No engine available before the deadline (all removed, draining or in cooldown)',
            {
              cause: reason,
              hint: "Check the engines; stats().engines shows each one's cooldown state.",
            },
          );
        }
        throw reason;
      }
      throw error;
    }
  }

  /** Records a failed attempt and decides: throw the final error, or sleep and go again. */
  private async afterFailure(
    run: RequestRun,
    ticket: Ticket | undefined,
    error: InferenceError,
    bytesReachedCaller: boolean,
  ): Promise<void> {
    run.errors.push(error);
    if (ticket) {
      const entry = ticket.engine;
      entry.errors[error.code] = (entry.errors[error.code] ?? 0) + 1;
      if (
        error.code === 'ERR_CONNECTION' ||
        error.code === 'ERR_PORTS_EXHAUSTED' ||
        (error instanceof TimeoutError && error.phase === 'connect')
      ) {
        entry.health.onConnectionFailure();
      }
      run.avoid.add(entry.endpoint);
    }
    error.attempts = run.attempts;
    if (run.signal.aborted) throw run.abortError();
    if (bytesReachedCaller || !isRetryable(error)) throw error;
    const { retry } = this.options;
    if (run.attempts >= retry.maxAttempts) throw new RetriesExhaustedError(run.errors, 'Retries exhausted');
    const waitMs = backoffMs(run.attempts + 1, retry, error);
    if (
      error instanceof HttpStatusError &&
      error.retryAfterMs !== undefined &&
      error.retryAfterMs > retry.maxRetryAfterMs
    ) {
      throw new RetriesExhaustedError(
        run.errors,
        `Retry-After of ${error.retryAfterMs} ms exceeds retry.maxRetryAfterMs`,
      );
    }
    if (performance.now() + waitMs >= run.deadlineMs) throw new RetriesExhaustedError(run.errors, 'Deadline reached');
    if (!this.budget.tryRetry())
      throw new RetriesExhaustedError(run.errors, 'Retry budget spent (the fleet is failing)');
    this.counters.retries++;
    if (waitMs > 0) {
      try {
        await sleep(waitMs, undefined, { signal: run.signal });
      } catch {
        throw run.abortError();
      }
    }
  }

  private toError(run: RequestRun, failure: unknown): InferenceError {
    if (isAttemptFailure(failure)) {
      run.result = { status: 0, headers: {}, body: undefined, trailers: {}, timing: failure.timing };
      run.staleRetries += failure.timing.staleRetries;
      this.counters.staleRetries += failure.timing.staleRetries;
      if (run.signal.aborted) return run.abortError();
      return failure.error;
    }
    if (isInferenceError(failure)) return failure;
    return new AbortError(String(failure), { cause: failure });
  }

  private statusError(run: RequestRun, result: AttemptResult): HttpStatusError {
    const retryAfterMs = parseRetryAfter(result.headers['retry-after']);
    return new HttpStatusError(result.status, result.body?.toString('utf8') ?? '', {
      engine: run.engine,
      attempts: run.attempts,
      retryAfterMs,
    });
  }

  private noteAttempt(run: RequestRun, result: AttemptResult): void {
    run.result = result;
    run.status = result.status;
    run.staleRetries += result.timing.staleRetries;
    this.counters.staleRetries += result.timing.staleRetries;
  }

  /** A non-streamed call: JSON in, JSON out, retried while safe. */
  private async call<T>(method: 'GET' | 'POST', path: string, body: unknown, options: RequestOptions): Promise<T> {
    const payload = body === undefined ? undefined : serializeBody(body);
    const run = this.startRun(path, options);
    try {
      for (;;) {
        run.attempts++;
        let ticket: Ticket | undefined;
        let error: InferenceError | undefined;
        let bytesReachedCaller = false;
        let value: T | undefined;
        try {
          ticket = await this.admit(run);
          const result = await sendAttempt(
            this.transport.pool(ticket.engine.endpoint),
            this.attemptRequest(run, method, payload),
            undefined,
          );
          this.noteAttempt(run, result);
          if (result.status < 200 || result.status >= 300) {
            error = this.statusError(run, result);
          } else {
            ticket.engine.health.onSuccess();
            try {
              value = JSON.parse(result.body?.toString('utf8') ?? '') as T;
            } catch (parseError) {
              bytesReachedCaller = true;
              error = new StreamParseError(`Response body is not valid JSON: ${(parseError as Error).message}`, {
                engine: run.engine,
                status: result.status,
                cause: parseError,
              });
            }
          }
        } catch (failure) {
          error = this.toError(run, failure);
          // Admission failures (abort, queue deadline, queue full, no engine) are final: they already waited.
          if (ticket === undefined) throw error;
        } finally {
          ticket?.release();
        }
        if (error === undefined) {
          this.endRun(run, undefined);
          return value as T;
        }
        await this.afterFailure(run, ticket, error, bytesReachedCaller);
      }
    } catch (error) {
      const typed = isInferenceError(error) ? error : new AbortError(String(error), { cause: error });
      typed.attempts = run.attempts;
      this.endRun(run, typed);
      throw typed;
    }
  }

  /**
   * A streamed call. Resolves once the first attempt that got a 2xx is streaming (failures before that reject,
   * after retries); the returned stream yields chunks and throws a typed error if the stream breaks later.
   */
  private async openStream<T>(
    path: string,
    body: Record<string, unknown>,
    options: RequestOptions,
    resume: ResumeState | undefined,
  ): Promise<ChunkStream<T>> {
    if (!GENERATION_PATHS.has(path)) throw new InvalidOptionsError(`Streaming is not supported on ${path}`);
    const payload = serializeBody(body);
    const run = this.startRun(path, options);
    // The current attempt's socket flow: a stream the caller does not read stops reading the socket.
    const flow: { current: AttemptFlow | undefined; paused: boolean } = { current: undefined, paused: false };
    const stream = new ChunkStream<T>(
      (reason) =>
        run.controller.abort(isInferenceError(reason) ? reason : new AbortError(reason.message, { cause: reason })),
      (paused) => {
        flow.paused = paused;
        if (paused) flow.current?.pause();
        else flow.current?.resume();
      },
    );
    let opened!: () => void;
    let failedToOpen!: (error: InferenceError) => void;
    const open = new Promise<void>((resolve, reject) => {
      opened = resolve;
      failedToOpen = reject;
    });
    let isOpen = false;
    const markOpen = () => {
      if (isOpen) return;
      isOpen = true;
      opened();
    };
    void this.streamLoop(run, body, payload, stream, flow, resume, markOpen).then((error) => {
      if (!isOpen) {
        isOpen = true;
        if (error) failedToOpen(error);
        else opened();
      }
    });
    await open;
    return stream;
  }

  /** Runs attempts for one stream; returns the final error (already delivered to the stream), if any. */
  private async streamLoop<T>(
    run: RequestRun,
    body: Record<string, unknown>,
    payload: string,
    stream: ChunkStream<T>,
    flow: { current: AttemptFlow | undefined; paused: boolean },
    resume: ResumeState | undefined,
    markOpen: () => void,
  ): Promise<InferenceError | undefined> {
    let delivered = 0;
    let requestBody = body;
    let requestPayload = payload;
    for (;;) {
      run.attempts++;
      let ticket: Ticket | undefined;
      let streamError: InferenceError | undefined;
      let sawDone = false;
      const attemptAbort = new AbortController();
      const onRunAbort = () => attemptAbort.abort(run.signal.reason);
      run.signal.addEventListener('abort', onRunAbort, { once: true });
      const failAttempt = (error: InferenceError) => {
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
          const badEvent = (what: string, cause?: unknown) =>
            failAttempt(
              new StreamParseError(`Stream event ${what}: ${event.data.slice(0, 200)}`, { engine: run.engine, cause }),
            );
          let chunk: Record<string, unknown>;
          try {
            chunk = JSON.parse(event.data) as Record<string, unknown>;
          } catch (error) {
            badEvent('is not valid JSON', error);
            return;
          }
          if (typeof chunk !== 'object' || chunk === null || Array.isArray(chunk)) {
            badEvent('is not a JSON object');
            return;
          }
          if ('error' in chunk) {
            const detail = chunk.error as { message?: unknown } | null;
            const message = typeof detail?.message === 'string' ? detail.message : JSON.stringify(chunk.error);
            failAttempt(new ServerStreamError(message, { engine: run.engine, body: event.data }));
            return;
          }
          const choices = chunk.choices as Array<Record<string, unknown>> | undefined;
          if (choices !== undefined && !Array.isArray(choices)) {
            badEvent('has `choices` that is not an array');
            return;
          }
          if (choices && choices.length > 0) run.recordEvent(event.receivedAtMs);
          if (resume && choices?.[0]) {
            // Resume re-sends what it received as prompt tokens: anything but token ids would be sent back as such.
            const choice = choices[0];
            const ids = choice.token_ids ?? [];
            if (!Array.isArray(ids) || !ids.every((id) => Number.isInteger(id) && id >= 0)) {
              badEvent('has `token_ids` that are not an array of token ids');
              return;
            }
            for (const id of ids) resume.received.push(id as number);
            const logprobs = choice.logprobs as { content?: unknown } | null | undefined;
            if (Array.isArray(logprobs?.content)) {
              resume.hasLogprobs = true;
              for (const entry of logprobs.content) resume.logprobs.push(entry);
            }
          }
          delivered++;
          markOpen();
          stream.push(chunk as T);
        },
        (error) => failAttempt(new StreamParseError(error.message, { engine: run.engine, cause: error })),
        { maxEventBytes: this.options.transport.maxEventBytes },
      );
      let error: InferenceError | undefined;
      try {
        ticket = await this.admit(run);
        const request = {
          ...this.attemptRequest(run, 'POST', requestPayload),
          signal: attemptAbort.signal,
        };
        const result = await sendAttempt(this.transport.pool(ticket.engine.endpoint), request, {
          onData: (chunk, receivedAtMs) => parser.push(chunk, receivedAtMs),
          onFlow: (attemptFlow) => {
            flow.current = attemptFlow;
            if (flow.paused) attemptFlow.pause();
          },
        });
        this.noteAttempt(run, result);
        if (result.status < 200 || result.status >= 300) error = this.statusError(run, result);
        else {
          ticket.engine.health.onSuccess();
          error = streamError ?? (sawDone ? undefined : new StreamTruncatedError({ engine: run.engine }));
        }
      } catch (failure) {
        error = streamError ?? this.toError(run, failure);
        if (ticket === undefined) return this.failStream(run, stream, error);
      } finally {
        run.signal.removeEventListener('abort', onRunAbort);
        ticket?.release();
      }
      if (error === undefined) {
        stream.end();
        this.endRun(run, undefined);
        return undefined;
      }
      if (run.signal.aborted) return this.failStream(run, stream, run.abortError());
      const resumable =
        resume !== undefined &&
        delivered > 0 &&
        (error instanceof StreamInterruptedError ||
          error instanceof StreamTruncatedError ||
          error.code === 'ERR_CONNECTION');
      if (resumable) {
        run.errors.push(error);
        const remaining = resume.maxTokens - resume.received.length;
        if (remaining <= 0) {
          stream.end();
          this.endRun(run, undefined);
          return undefined;
        }
        if (run.attempts >= this.options.retry.maxAttempts) {
          return this.failStream(run, stream, new RetriesExhaustedError(run.errors, 'Resume attempts exhausted'));
        }
        run.resumes++;
        this.counters.resumes++;
        const sampling = (body.sampling_params ?? {}) as Record<string, unknown>;
        requestBody = {
          ...body,
          token_ids: [...resume.prompt, ...resume.received],
          sampling_params: { ...sampling, max_tokens: remaining },
        };
        requestPayload = JSON.stringify(requestBody);
        continue;
      }
      if (delivered > 0 && error.code === 'ERR_CONNECTION') {
        error = new StreamInterruptedError(`Connection lost mid-stream: ${error.message}`, {
          engine: run.engine,
          cause: error,
        });
      }
      try {
        await this.afterFailure(run, ticket, error, delivered > 0);
      } catch (final) {
        return this.failStream(run, stream, isInferenceError(final) ? final : error);
      }
    }
  }

  private failStream<T>(run: RequestRun, stream: ChunkStream<T>, error: InferenceError): InferenceError {
    error.attempts = run.attempts;
    stream.fail(error);
    this.endRun(run, error);
    return error;
  }
}
