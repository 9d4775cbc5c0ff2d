import { performance } from 'node:perf_hooks';
import { Engine, InFlightGauge, type PauseMode } from './engine.js';
import { EngineMetrics } from './engine-metrics.js';
import { FakeVllmConfigError } from './errors.js';
import { FAULT_HEADER, FaultInjector, type FaultName, type FaultSpec, parseFaultHeader } from './faults.js';
import { MultiModalCache } from './multimodal.js';
import type { ResolvedEngineOptions } from './options.js';
import { presetRoutes } from './presets/presets.js';
import { HttpError, type ParseContext } from './protocol.js';
import { builtinRoutes } from './routes/builtin-routes.js';
import { SLEEP_TAGS } from './routes/control-routes.js';
import type { FakeRoute, ResponseWriter, RouteRequest } from './routes/route.js';
import { RouteTable } from './routes/route-table.js';

/** What one engine reports as its own ground truth (the "engine stats" of this project). */
export interface EngineStats {
  url: string;
  connectionsOpen: number;
  connectionsTotal: number;
  running: number;
  waiting: number;
  /** Highest running requests seen at once. */
  maxRunning: number;
  /** Highest running + waiting requests seen at once: what a concurrency cap is checked against. */
  maxConcurrent: number;
  requests: number;
  completed: number;
  aborted: number;
  cancelled: number;
  promptTokens: number;
  generationTokens: number;
  faults: Record<FaultName, number>;
  /**
   * Requests by the label a client gave them in {@link TALLY_HEADER}, so a load generator can reconcile what it
   * sent in a window with what this engine saw, whatever else was in flight. The last {@link MAX_TALLIES} labels.
   */
  tallies: Record<string, TallyCounters>;
  paused: boolean;
  sleeping: boolean;
  /** Running sequence slots in force (`maxNumSeqs`, changed live by `setCapacity`). */
  maxNumSeqs: number;
  /** Decode step and fixed TTFT in force (ms; changed live by `setLatency`). */
  itlMs: number;
  ttftMs: number;
  /** The KV block pool's size in force (`kvCacheBlocks`, blocks of 16 tokens). */
  kvCacheBlocks: number;
  /** `vllm:kv_cache_usage_perc`: blocks held by running sequences over the pool (0..1). */
  kvCacheUsage: number;
  /** Hashed blocks in the prefix cache, in use or free. */
  cachedBlocks: number;
  /** Cached blocks evicted to make room (LRU). */
  evictedBlocks: number;
  /** `vllm:prefix_cache_queries`: prompt tokens looked up in the prefix cache. */
  prefixCacheQueryTokens: number;
  /** `vllm:prefix_cache_hits`: prompt tokens found there. */
  prefixCacheHitTokens: number;
  /** Restarts (`restartEngine`), and the in-flight requests they dropped. */
  restarts: number;
  droppedByRestart: number;
  /** Down after a restart: refusing connections until `downMs` has passed. */
  restarting: boolean;
  /** The process serving this engine. */
  pid: number;
  /** The engine's process died: it serves nothing, and its counters are the last ones read before. */
  down: boolean;
}

/** Header naming the tally a request counts in: `x-fake-tally: step-3`. */
export const TALLY_HEADER = 'x-fake-tally';

/** Labels one engine keeps (oldest dropped first), so a client cannot grow its memory without bound. */
export const MAX_TALLIES = 64;

/** What one engine counted for the requests of one {@link TALLY_HEADER} label. */
export interface TallyCounters {
  /** Requests received with this label, any route, whatever happened to them next. */
  received: number;
  /**
   * Generation requests answered whole: a 200 whose last byte (a stream's `[DONE]`, a JSON body) was handed to the
   * transport. Not counted: faults, errors, requests cut or cancelled, bodies truncated on purpose.
   */
  answered: number;
}

/** What a transport knows about its connections, for stats and metrics. */
export interface TransportInfo {
  readonly url: string;
  readonly connectionsOpen: number;
  readonly connectionsTotal: number;
}

/**
 * One fake engine, whatever serves it: the scheduler, the fault injector, the control-plane state (weights,
 * sessions) and the route table. The node:http server ({@link EngineServer}) and the msw handlers each wrap one
 * and hand every request to {@link EngineHost.dispatch} with their own {@link ResponseWriter}.
 */
export class EngineHost {
  readonly engine: Engine;
  readonly injector: FaultInjector;
  readonly parseContext: ParseContext;
  /**
   * State that extra routes keep per session (SkyRL's router sends `X-Session-ID`; its `/finish_session` ends
   * one). fake-vllm's own routes do not use it.
   */
  readonly sessions = new Map<string, unknown>();
  /** Weight updates applied so far (`/update_weights`). */
  weightVersion = 0;
  /** Between `/start_weight_update` and `/finish_weight_update`. */
  weightUpdateActive = false;
  /** LoRA adapters loaded at run time, by name (`/v1/load_lora_adapter`). */
  readonly loras = new Map<string, { path: string }>();
  /**
   * The sleep vLLM's engine core is in (`/sleep`): its level and the parts still asleep (from level 1, the weights
   * and the KV cache). Scheduling stays paused until every part is awake again.
   */
  private sleepState: { level: number; asleep: Set<string> } | undefined;
  /** What vLLM's Prometheus logger records per finished request (`/metrics`). */
  readonly metrics: EngineMetrics;
  /** Requests received, any route. */
  requests = 0;
  /** When the engine started serving (performance.now() ms); set by the transport when it listens. */
  startedAtMs = performance.now();
  /** Set by the transport. */
  transport: TransportInfo = { url: '', connectionsOpen: 0, connectionsTotal: 0 };
  private readonly table: RouteTable;
  private readonly tallies = new Map<string, TallyCounters>();

  constructor(
    readonly options: ResolvedEngineOptions,
    gauge = new InFlightGauge(),
    extraRoutes: readonly FakeRoute[] = [],
  ) {
    this.engine = new Engine(options, gauge);
    this.injector = new FaultInjector(options.faultProfile, options.seed);
    this.metrics = new EngineMetrics(options.maxModelLen);
    this.parseContext = {
      model: options.model,
      maxModelLen: options.maxModelLen,
      vocabSize: options.vocabSize,
      seed: options.seed,
      eosProbability: options.eosProbability,
      maxRequestTokens: options.maxRequestTokens,
      loraNames: this.loras,
      mmCache: new MultiModalCache(),
    };
    // A preset's routes, then extra routes, come last so they replace a built-in route with the same method and path.
    const routes = [...builtinRoutes, ...presetRoutes(options.preset), ...extraRoutes];
    this.table = new RouteTable(routes, { devMode: options.devMode });
  }

  /** Whether `/sleep` put the engine to sleep and it is not fully awake (`/is_sleeping`). */
  get isSleeping(): boolean {
    return this.sleepState !== undefined;
  }

  /** The sleep level in force (0 when awake). */
  get sleepLevel(): number {
    return this.sleepState?.level ?? 0;
  }

  /**
   * `/sleep?level=&mode=`, as vLLM's engine core does it (`vllm/v1/engine/core.py` sleep): pause scheduling with
   * `mode` (abort ends in-flight requests, wait lets them finish first, keep freezes them), then from level 1 put
   * the weights and KV cache to sleep. Level 0 only pauses scheduling.
   */
  async sleep(level: number, mode: PauseMode): Promise<void> {
    await this.engine.pause(mode);
    this.sleepState = { level, asleep: new Set(level >= 1 ? SLEEP_TAGS : []) };
  }

  /**
   * `/wake_up?tags=`: wakes the given parts (all when none given; `scheduling` names none of them), and resumes
   * scheduling once nothing is asleep (`vllm/v1/engine/core.py` wake_up). Like vLLM, a fully awake engine also
   * resumes a `/pause`.
   */
  wakeUp(tags: readonly string[] | undefined): void {
    const parts = tags?.filter((tag) => tag !== 'scheduling');
    if (parts === undefined || parts.length > 0) {
      if (parts === undefined) this.sleepState?.asleep.clear();
      else for (const part of parts) this.sleepState?.asleep.delete(part);
    }
    if (this.sleepState && this.sleepState.asleep.size > 0) return;
    this.sleepState = undefined;
    this.engine.resume();
  }

  /**
   * What a crashed vLLM process loses when it comes back: every in-flight request (dropped without an answer;
   * the transport resets their connections), the prefix cache, pause and sleep, runtime LoRA adapters and session
   * state. Counters and `/metrics` keep counting (a real restart zeroes them; a benchmark's deltas stay valid here).
   */
  restart(): number {
    const dropped = this.engine.dropAll();
    this.sleepState = undefined;
    this.weightUpdateActive = false;
    this.loras.clear();
    this.sessions.clear();
    return dropped;
  }

  /** The fault for a request: its `x-fake-fault` header, else a roll of the profile. */
  pickFault(request: RouteRequest): FaultSpec | undefined {
    const header = request.header(FAULT_HEADER);
    if (header !== undefined && header !== '') return parseFaultHeader(header);
    return this.injector.rollRequest();
  }

  /** The tally `request` counts in (its {@link TALLY_HEADER}), if any. */
  tallyOf(request: RouteRequest): TallyCounters | undefined {
    const label = request.header(TALLY_HEADER);
    return label === undefined || label === '' ? undefined : this.tallies.get(label);
  }

  /** Routes one request and answers it; errors become vLLM's error bodies. Never rejects. */
  async dispatch(request: RouteRequest, response: ResponseWriter): Promise<void> {
    this.requests++;
    const label = request.header(TALLY_HEADER);
    if (label !== undefined && label !== '') {
      let tally = this.tallies.get(label);
      if (tally === undefined) {
        if (this.tallies.size >= MAX_TALLIES) this.tallies.delete(this.tallies.keys().next().value!);
        tally = { received: 0, answered: 0 };
        this.tallies.set(label, tally);
      }
      tally.received++;
    }
    try {
      const match = this.table.match(request.method, request.path);
      if (match.kind === 'route') {
        await match.route.handler!({ request, response, host: this });
        return;
      }
      // Starlette's router, behind FastAPI's default HTTPException handler: vLLM registers its own handler for
      // FastAPI's HTTPException subclass only, so routing errors keep FastAPI's `{"detail": ...}` body.
      await request.body();
      if (match.kind === 'method-not-allowed') {
        response.send(
          405,
          { 'content-type': 'application/json', allow: match.allow },
          '{"detail":"Method Not Allowed"}',
        );
      } else {
        response.send(404, { 'content-type': 'application/json' }, '{"detail":"Not Found"}');
      }
    } catch (error) {
      this.fail(response, error);
    }
  }

  private fail(response: ResponseWriter, error: unknown): void {
    if (response.headersSent) {
      response.destroy();
      return;
    }
    if (response.closed) return;
    const json = { 'content-type': 'application/json' };
    if (error instanceof HttpError) {
      // The rest of a timed-out or oversized body is not read: answer, then close the connection.
      const close = error.status === 408 || error.status === 413;
      response.send(error.status, close ? { ...json, connection: 'close' } : json, error.body());
    } else if (error instanceof FakeVllmConfigError) {
      response.send(400, json, new HttpError(400, error.message).body());
    } else {
      const message = error instanceof Error ? error.message : String(error);
      response.send(500, json, new HttpError(500, message, 'InternalServerError').body());
    }
  }

  /** This engine's ground truth. */
  stats(): EngineStats {
    const counters = this.engine.counters;
    return {
      url: this.transport.url,
      connectionsOpen: this.transport.connectionsOpen,
      connectionsTotal: this.transport.connectionsTotal,
      running: counters.running,
      waiting: counters.waiting,
      maxRunning: counters.maxRunning,
      maxConcurrent: counters.maxInFlight,
      requests: this.requests,
      completed: counters.completed,
      aborted: counters.aborted,
      cancelled: counters.cancelled,
      promptTokens: counters.promptTokens,
      generationTokens: counters.generationTokens,
      faults: { ...this.injector.injected },
      tallies: Object.fromEntries([...this.tallies].map(([label, tally]) => [label, { ...tally }])),
      paused: this.engine.isPaused,
      sleeping: this.isSleeping,
      maxNumSeqs: this.options.maxNumSeqs,
      itlMs: this.options.itlMs,
      ttftMs: this.options.ttftMs,
      kvCacheBlocks: this.options.kvCacheBlocks,
      kvCacheUsage: this.engine.kv.usage,
      cachedBlocks: this.engine.kv.cachedBlocks,
      evictedBlocks: this.engine.kv.evictedBlocks,
      prefixCacheQueryTokens: this.engine.kv.queryTokens,
      prefixCacheHitTokens: this.engine.kv.hitTokens,
      restarts: counters.restarts,
      droppedByRestart: counters.droppedByRestart,
      restarting: false,
      pid: process.pid,
      down: false,
    };
  }
}
