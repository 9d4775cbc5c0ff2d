import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  AbortError,
  EngineUnavailableError,
  type InferenceError,
  InvalidOptionsError,
  isInferenceError,
  UnexpectedError,
} from '../errors.js';
import { type EngineEntry, resolveLimits, Scheduler } from '../limits/admission.js';
import type { CapState } from '../limits/engine-capacity.js';
import { resolvePolicy } from '../routing/policies.js';
import type { ChunkStream } from '../streaming/chunk-stream.js';
import { type SendAttempt, sendAttempt } from '../transport/attempt.js';
import type { PoolStats } from '../transport/pool-stats.js';
import { sharedTransport, Transport } from '../transport/transport.js';
import { RecoveryProber, startActiveHealthChecks } from './active-health.js';
import { RequestExecutor } from './attempt-loop.js';
import { ControlPlane } from './control-plane.js';
import { EngineLoadPoller } from './engine-metrics.js';
import {
  normalizeEngine,
  type RemoteInferenceClientOptions,
  type ResolvedClientOptions,
  resolveClientOptions,
  withModel,
} from './options.js';
import { type GenerateOptions, NO_OPTIONS, type RequestOptions } from './request-run.js';
import { Chat, Completions } from './resources.js';
import { ResumeState } from './resume.js';
import { RetryBudget } from './retry-policy.js';
import type {
  DetokenizeRequest,
  DetokenizeResponse,
  GenerateChunk,
  GenerateRequest,
  GenerateResponse,
  TokenizeRequest,
  TokenizeResponse,
} from './wire-types.js';

export type { GenerateOptions, RequestOptions } from './request-run.js';

/** One item's outcome in {@link RemoteInferenceClient.generateBatch}: nothing is dropped. */
export type BatchResult<T> = { ok: true; value: T } | { ok: false; error: InferenceError };

/** The connections of one engine's pool. */
export type EngineConnectionStats = PoolStats;

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
    connections: EngineConnectionStats;
    /** In flight this engine may have now: the fixed `perEngine.maxConcurrency`, or the learned cap. */
    maxConcurrency: number;
    /**
     * With `limits.perEngine.adaptive`: where the cap stands (`learning` until the engine was seen full, `learned`,
     * `no-metrics` when it exports no vLLM gauges and the fixed cap applies), the capacity learned (this client's
     * requests it runs at once), the last gauges read, and restarts seen. Absent with a fixed cap.
     */
    capacity?: {
      state: CapState;
      learned: number;
      samples: number;
      restarts: number;
      running: number | undefined;
      waiting: number | undefined;
      kvCacheUsage: number | undefined;
    };
  }>;
  limits: { maxInFlightSeen: number; maxQueuedSeen: number; rejectedQueueFull: number };
}

/**
 * The client RL trainers use against vLLM-compatible engines: pooled transport shared per event loop, admission
 * limits, routing with health, retries that are safe for generation, and streaming with resume. A facade over one
 * request path (a single attempt loop for whole and streamed responses), the resources {@link Completions} and
 * {@link Chat}, and the control plane.
 */
export class RemoteInferenceClient {
  private readonly options: ResolvedClientOptions;
  private readonly transport: Transport;
  private readonly scheduler: Scheduler;
  private readonly budget: RetryBudget;
  private readonly executor: RequestExecutor;
  private closing: Promise<void> | undefined;
  private healthTimer: NodeJS.Timeout | undefined;
  private readonly loadPoller: EngineLoadPoller | undefined;
  private readonly prober: RecoveryProber;

  /** `/v1/completions`. */
  readonly completions: Completions;
  /** `/v1/chat/completions`. */
  readonly chat: Chat;
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
    this.scheduler = new Scheduler(
      resolveLimits(options.limits),
      resolvePolicy(options.routing),
      options.health,
      this.options.retry.maxBackoffMs,
    );
    this.scheduler.setEngines(engines);
    this.budget = new RetryBudget(this.options.retry.budgetRatio, this.options.retry.minRetriesPerSecond);
    const send: SendAttempt =
      options.sendAttempt ?? ((engine, request, sink) => sendAttempt(this.transport.pool(engine), request, sink));
    this.prober = new RecoveryProber(this.scheduler, send, this.options.headers, this.options.timeouts.connectMs);
    this.executor = new RequestExecutor({
      options: this.options,
      scheduler: this.scheduler,
      budget: this.budget,
      send,
      linksRuns: options.sendAttempt === undefined,
      hook: options.onRequestEnd,
      prober: this.prober,
    });
    this.completions = new Completions(this.executor);
    this.chat = new Chat(this.executor);
    this.control = new ControlPlane(
      () => this.scheduler.list().map((engine) => engine.endpoint),
      send, // the `sendAttempt` seam too, as the /metrics polls and /health probes
      this.options,
      () => this.evictIdleConnections(),
      () => this.executor.closed,
    );
    const adaptive = this.scheduler.limits.perEngineAdaptive;
    if (adaptive) {
      this.loadPoller = new EngineLoadPoller(
        this.scheduler,
        send, // through the `sendAttempt` seam too: a mocked network must not be polled for real
        adaptive,
        this.options.headers,
        this.options.timeouts.connectMs,
      );
    }
    const activeCheckMs = options.health?.activeCheckIntervalMs ?? 0;
    if (activeCheckMs > 0) {
      this.healthTimer = startActiveHealthChecks(
        this.control,
        this.scheduler,
        activeCheckMs,
        () => this.executor.closed,
      );
    }
  }

  /**
   * `/inference/v1/generate`: token ids in, token ids (and logprobs) out. With `stream: true` returns a stream of
   * chunks holding the new tokens; with `resume: true` a cut stream continues seamlessly.
   */
  generate(body: GenerateRequest & { stream: true }, options?: GenerateOptions): Promise<ChunkStream<GenerateChunk>>;
  generate(body: GenerateRequest & { stream?: false }, options?: GenerateOptions): Promise<GenerateResponse>;
  generate(body: GenerateRequest, options?: GenerateOptions): Promise<GenerateResponse | ChunkStream<GenerateChunk>>;
  generate(
    body: GenerateRequest,
    options: GenerateOptions = NO_OPTIONS,
  ): Promise<GenerateResponse | ChunkStream<GenerateChunk>> {
    // Not `async`: a long request would hold this frame and its promise for seconds (bench/rl-burst.mjs). A body
    // that is not an object is the executor's to reject; a caller's mistake is a rejected promise either way.
    if (typeof body === 'object' && body !== null && !(Array.isArray(body.token_ids) && body.token_ids.length > 0)) {
      return Promise.reject(
        new InvalidOptionsError(
          `Expected \`token_ids\` to be a non-empty array of token ids, got \`${JSON.stringify(body.token_ids)}\``,
        ),
      );
    }
    if (!options?.resume) {
      return body?.stream === true
        ? this.executor.stream<GenerateChunk>('/inference/v1/generate', body, options, undefined)
        : this.executor.call<GenerateResponse>('POST', '/inference/v1/generate', body, options);
    }
    return this.generateResumable(body, options);
  }

  /** @internal */
  private async generateResumable(
    body: GenerateRequest,
    options: GenerateOptions,
  ): Promise<GenerateResponse | ChunkStream<GenerateChunk>> {
    // The model goes into every resumed body too, which ResumeState builds from this one.
    const request = withModel(body, this.options.model);
    const resume = new ResumeState(request);
    const stream = await this.executor.stream<GenerateChunk>(
      '/inference/v1/generate',
      { ...request, stream: true },
      options,
      resume,
    );
    // Non-streamed with resume: stream internally so a cut can be resumed, and hand back one whole response.
    return request.stream === true ? stream : resume.collect(stream);
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
            error: isInferenceError(error) ? error : new UnexpectedError(error),
          };
        }
        onResult?.(index, result);
        return result;
      }),
    );
  }

  /** `POST /tokenize`. */
  tokenize(body: TokenizeRequest, options: RequestOptions = NO_OPTIONS): Promise<TokenizeResponse> {
    return this.executor.call<TokenizeResponse>('POST', '/tokenize', body, options);
  }

  /** `POST /detokenize`. */
  detokenize(body: DetokenizeRequest, options: RequestOptions = NO_OPTIONS): Promise<DetokenizeResponse> {
    return this.executor.call<DetokenizeResponse>('POST', '/detokenize', body, options);
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
      // Each round bounded by what is left (it used to take up to 5 s whatever the caller's timeoutMs).
      const results = await this.control.health(Math.max(1, Math.min(5000, deadline - performance.now())));
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
    // An engine added back while it drained may still await its recovery probe, which stopped while it drained.
    for (const entry of this.scheduler.list()) this.prober.watch(entry);
    for (const entry of removed) {
      const dropWhenDrained = () => {
        if (!entry.draining) return; // added back before it drained: it serves again, with its connections
        if (entry.outstanding > 0) {
          setTimeout(dropWhenDrained, 50).unref();
          return;
        }
        this.scheduler.forgetDrained(entry);
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
          spare: 0,
          waiting: 0,
          opened: 0,
          reused: 0,
          staleDiscarded: 0,
          connectErrors: 0,
        },
        maxConcurrency: entry.maxConcurrency,
        ...(entry.capacity && {
          capacity: {
            state: entry.capacity.state,
            learned: entry.capacity.capacity,
            samples: entry.capacity.samples,
            restarts: entry.capacity.restarts,
            running: entry.capacity.last?.running,
            waiting: entry.capacity.last?.waiting,
            kvCacheUsage: entry.capacity.last?.kvCacheUsage,
          },
        }),
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
      ...this.executor.counters,
      retryBudgetDenied: this.budget.denied,
      errors: { ...this.executor.errors },
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
      this.executor.closed = true;
      clearInterval(this.healthTimer);
      this.loadPoller?.close();
      this.prober.close();
      for (const run of this.executor.runs) run.abort(new AbortError('The client was closed'));
      await this.scheduler.close();
      await this.transport.release();
    })();
    return this.closing;
  }
}
