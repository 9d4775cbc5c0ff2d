import { performance } from 'node:perf_hooks';
import { Histogram, ITL_BUCKETS_S, TTFT_BUCKETS_S } from './histogram.js';
import { BLOCK_SIZE, type BlockAllocation, KvBlockPool } from './kv-block-pool.js';
import type { CapacityOptions, LatencyOptions, ResolvedEngineOptions } from './options.js';
import { createRandom, SequenceState, type StopOptions, tokenLogprob } from './tokens.js';

/** Why a sequence ended, as vLLM reports it. */
export type FinishReason = 'length' | 'stop' | 'abort';

/** One generated sequence (one choice) of a request. */
export class Sequence {
  readonly logprobs: number[] = [];
  finishReason: FinishReason | undefined;
  /** The stop string or stop token id that ended the sequence (vLLM's `stop_reason`); null otherwise. */
  stopReason: string | number | null = null;
  /** The token model's state: token ids, detokenized text, stop criteria. */
  readonly state: SequenceState;
  /** The KV blocks it holds while running (set at admission). */
  blocks: BlockAllocation | undefined;

  constructor(
    readonly index: number,
    readonly seed: number,
    readonly promptTokenIds: readonly number[],
    readonly maxTokens: number,
    vocabSize: number,
    stopOptions: StopOptions = {},
    /** The drawn natural length (`outputLengths`): EOS is the token at this position. */
    readonly naturalLength?: number,
  ) {
    this.state = new SequenceState(seed, promptTokenIds, maxTokens, vocabSize, stopOptions, naturalLength);
  }

  /** Every emitted token, EOS and stop tokens included. */
  get tokenIds(): readonly number[] {
    return this.state.tokenIds;
  }

  /** Generates the next token (EOS and stop tokens are tokens too), then ends the sequence if it should. */
  step(eosProbability: number, wantLogprobs: boolean): void {
    if (this.finishReason) return;
    if (wantLogprobs) this.logprobs.push(tokenLogprob(this.seed, this.state.context));
    this.state.step(eosProbability);
    const result = this.state.result;
    if (result) {
      this.finishReason = result.finishReason;
      this.stopReason = result.stopReason;
    }
  }
}

/** Receives a request's progress; the HTTP layer implements it per endpoint and stream mode. */
export interface RequestSink {
  /** New tokens were appended to some sequences in this engine step. */
  onProgress(request: EngineRequest): void;
  /** Every sequence has a finish reason (including `abort`). Called exactly once, unless cancelled. */
  onFinish(request: EngineRequest): void;
}

/** Where a request is in the engine. */
export type RequestState = 'waiting' | 'prefill' | 'decode' | 'finished' | 'cancelled';

/** One request inside the engine: its sequences, timestamps (performance.now() ms) and per-request fault knobs. */
export class EngineRequest {
  state: RequestState = 'waiting';
  admittedAtMs = -1;
  firstTokenDueMs = 0;
  firstTokenAtMs = -1;
  finishedAtMs = -1;
  /** Prompt tokens its sequences found in the prefix cache at admission (their `vllm:prefix_cache_hits`). */
  cachedTokens = 0;
  /** Prefill the engine charged at admission, from admission to the first token: TTFT minus queueing. (ms) */
  prefillMs = -1;
  /** The engine skips this request until then (stall faults, keep-mode pause). */
  pausedUntilMs = 0;
  /** Emit tokens only every Nth step (slow-stream fault). */
  stepEvery = 1;
  private stepCount = 0;

  constructor(
    readonly id: string,
    readonly sequences: Sequence[],
    readonly promptTokenCount: number,
    readonly wantLogprobs: boolean,
    readonly sink: RequestSink,
    readonly arrivedAtMs = performance.now(),
  ) {}

  /** @internal whether this step should emit for a slowed request */
  takesStep(): boolean {
    this.stepCount++;
    return this.stepCount % this.stepEvery === 0;
  }

  get slotCount(): number {
    return this.sequences.length;
  }

  /** Queue wait in ms (admission minus arrival), or -1 before admission. */
  get queueMs(): number {
    return this.admittedAtMs < 0 ? -1 : this.admittedAtMs - this.arrivedAtMs;
  }

  /** Server-side TTFT in ms (first token minus arrival), or -1 before the first token. */
  get ttftMs(): number {
    return this.firstTokenAtMs < 0 ? -1 : this.firstTokenAtMs - this.arrivedAtMs;
  }
}

/** In-flight requests across every engine of one process, for an exact process-wide high-water mark. */
export class InFlightGauge {
  current = 0;
  max = 0;
  add(delta: number): void {
    this.current += delta;
    if (this.current > this.max) this.max = this.current;
  }
}

/** How in-flight requests are treated while the engine is paused (vLLM's `/pause?mode=`). */
export type PauseMode = 'abort' | 'wait' | 'keep';

/** Counters one engine keeps; all monotonic except the gauges `running` and `waiting`. */
export interface EngineCounters {
  running: number;
  waiting: number;
  maxRunning: number;
  maxInFlight: number;
  admitted: number;
  completed: number;
  aborted: number;
  cancelled: number;
  promptTokens: number;
  generationTokens: number;
  steps: number;
  /** Times the engine restarted (control plane `restartEngine`). */
  restarts: number;
  /** In-flight requests a restart dropped (their connections were reset). */
  droppedByRestart: number;
}

/**
 * A vLLM-like continuous-batching scheduler: `maxNumSeqs` running slots, a FIFO waiting queue, and ONE timer
 * per engine. Each tick is one decode step that advances every running sequence by one token, so the cost at
 * 10,000 streams is one timer and one write per stream per step, not one timer per token per request.
 */
export class Engine {
  private readonly running = new Set<EngineRequest>();
  private readonly waitingQueue: EngineRequest[] = [];
  private waitingHead = 0;
  private usedSlots = 0;
  private timer: NodeJS.Timeout | undefined;
  private nextStepAtMs = 0;
  private lastStepAtMs = 0;
  private readonly random: () => number;
  private pausedMode: PauseMode | undefined;
  private sleepingLevel = 0;
  private idleWaiters: Array<() => void> = [];
  readonly ttftHistogram = new Histogram(TTFT_BUCKETS_S);
  readonly itlHistogram = new Histogram(ITL_BUCKETS_S);
  readonly e2eHistogram = new Histogram(TTFT_BUCKETS_S);
  readonly queueHistogram = new Histogram(TTFT_BUCKETS_S);
  readonly counters: EngineCounters = {
    running: 0,
    waiting: 0,
    maxRunning: 0,
    maxInFlight: 0,
    admitted: 0,
    completed: 0,
    aborted: 0,
    cancelled: 0,
    promptTokens: 0,
    generationTokens: 0,
    steps: 0,
    restarts: 0,
    droppedByRestart: 0,
  };
  /** The KV-cache block pool with prefix caching. */
  readonly kv: KvBlockPool;

  constructor(
    readonly options: ResolvedEngineOptions,
    private readonly gauge = new InFlightGauge(),
  ) {
    this.random = createRandom(options.seed ^ 0x7e57);
    this.kv = new KvBlockPool(options.kvCacheBlocks, options.enablePrefixCaching);
  }

  /**
   * Changes the engine's capacity live: more `maxNumSeqs` admits waiting requests at once; fewer lets the running
   * ones finish and admits again only below the new limit. A smaller `kvCacheBlocks` evicts cached blocks.
   */
  setCapacity(capacity: CapacityOptions): void {
    if (capacity.maxNumSeqs !== undefined) this.options.maxNumSeqs = capacity.maxNumSeqs;
    if (capacity.kvCacheBlocks !== undefined) {
      this.options.kvCacheBlocks = capacity.kvCacheBlocks;
      this.kv.resize(capacity.kvCacheBlocks);
    }
    this.admit(performance.now());
    this.schedule();
  }

  /**
   * What a crashed and restarted vLLM leaves: every in-flight request gone without a word to its sink (the
   * transport resets the connections), no prefix cache, not paused or asleep. Returns the requests dropped.
   */
  dropAll(): number {
    let dropped = 0;
    const drop = (request: EngineRequest) => {
      request.state = 'cancelled';
      dropped++;
      this.gauge.add(-1);
    };
    for (let index = this.waitingHead; index < this.waitingQueue.length; index++) {
      const request = this.waitingQueue[index]!;
      if (request.state === 'waiting') drop(request);
    }
    for (const request of this.running) drop(request);
    this.waitingQueue.length = 0;
    this.waitingHead = 0;
    this.running.clear();
    this.usedSlots = 0;
    this.counters.running = 0;
    this.counters.waiting = 0;
    this.counters.restarts++;
    this.counters.droppedByRestart += dropped;
    this.kv.clear();
    this.stop();
    this.nextStepAtMs = 0;
    this.lastStepAtMs = 0;
    this.pausedMode = undefined;
    this.sleepingLevel = 0;
    this.notifyIfIdle();
    return dropped;
  }

  /** Changes the latency model live; running requests keep their already-computed first-token time. */
  setLatency(latency: LatencyOptions): void {
    for (const [key, value] of Object.entries(latency)) {
      if (value !== undefined) (this.options as unknown as Record<string, number>)[key] = value;
    }
  }

  get isPaused(): boolean {
    return this.pausedMode !== undefined;
  }

  get isSleeping(): boolean {
    return this.sleepingLevel > 0;
  }

  /** Requests admitted or waiting. */
  get inFlight(): number {
    return this.counters.running + this.counters.waiting;
  }

  /** Adds a request to the waiting queue, or rejects it (returns false) when `maxWaiting` is reached. */
  submit(request: EngineRequest): boolean {
    if (this.counters.waiting >= this.options.maxWaiting) return false;
    this.waitingQueue.push(request);
    this.counters.waiting++;
    this.gauge.add(1);
    this.counters.promptTokens += request.promptTokenCount * request.slotCount;
    this.counters.maxInFlight = Math.max(this.counters.maxInFlight, this.inFlight);
    this.admit(performance.now());
    this.schedule();
    return true;
  }

  /** Removes a request whose client went away, freeing its slot at once. */
  cancel(request: EngineRequest): void {
    if (request.state === 'finished' || request.state === 'cancelled') return;
    if (request.state === 'waiting') {
      this.counters.waiting--;
    } else {
      this.running.delete(request);
      this.usedSlots -= request.slotCount;
      this.counters.running--;
      this.releaseBlocks(request);
    }
    request.state = 'cancelled';
    this.counters.cancelled++;
    this.gauge.add(-1);
    this.admit(performance.now());
    this.schedule();
    this.notifyIfIdle();
  }

  /**
   * Pauses generation. New requests wait until {@link resume}. `abort` ends in-flight requests with
   * `finish_reason: "abort"`; `wait` resolves once in-flight requests have finished; `keep` freezes them.
   */
  async pause(mode: PauseMode): Promise<void> {
    this.pausedMode = mode;
    if (mode === 'abort') {
      this.abortAll();
    } else if (mode === 'wait') {
      await this.whenNoneRunning();
    }
  }

  /** Resumes after {@link pause}: frozen requests continue, held requests are admitted. */
  resume(): void {
    this.pausedMode = undefined;
    this.admit(performance.now());
    this.schedule();
  }

  /** Sleeps (vLLM frees weights/KV cache): waiting requests are held until {@link wakeUp}. */
  sleep(level: number): void {
    this.sleepingLevel = level;
  }

  /** Wakes up after {@link sleep}. */
  wakeUp(): void {
    this.sleepingLevel = 0;
    this.admit(performance.now());
    this.schedule();
  }

  /** Ends every in-flight request with `finish_reason: "abort"` (pause abort, shutdown). */
  abortAll(): void {
    const now = performance.now();
    for (let index = this.waitingHead; index < this.waitingQueue.length; index++) {
      const request = this.waitingQueue[index]!;
      if (request.state !== 'waiting') continue;
      this.counters.waiting--;
      this.finishAborted(request, now);
    }
    this.waitingQueue.length = 0;
    this.waitingHead = 0;
    for (const request of this.running) {
      this.running.delete(request);
      this.usedSlots -= request.slotCount;
      this.counters.running--;
      this.releaseBlocks(request);
      this.finishAborted(request, now);
    }
    this.notifyIfIdle();
  }

  /** Resolves when no request is running or waiting. */
  whenIdle(): Promise<void> {
    if (this.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Stops the timer; in-flight requests are left to the caller. */
  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private whenNoneRunning(): Promise<void> {
    if (this.counters.running === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const check = () => (this.counters.running === 0 ? resolve() : setTimeout(check, 5));
      check();
    });
  }

  private finishAborted(request: EngineRequest, now: number): void {
    for (const sequence of request.sequences) sequence.finishReason ??= 'abort';
    request.state = 'finished';
    request.finishedAtMs = now;
    this.counters.aborted++;
    this.gauge.add(-1);
    request.sink.onFinish(request);
  }

  private admit(now: number): void {
    if (this.pausedMode !== undefined || this.sleepingLevel > 0) return;
    const options = this.options;
    while (this.waitingHead < this.waitingQueue.length) {
      const request = this.waitingQueue[this.waitingHead]!;
      if (request.state !== 'waiting') {
        this.waitingHead++;
        continue;
      }
      // A request larger than every slot still runs alone rather than blocking the queue forever.
      if (this.usedSlots > 0 && this.usedSlots + request.slotCount > options.maxNumSeqs) break;
      this.waitingHead++;
      this.counters.waiting--;
      this.counters.running++;
      this.counters.admitted++;
      this.usedSlots += request.slotCount;
      this.running.add(request);
      request.state = 'prefill';
      request.admittedAtMs = now;
      // Prefix caching, once per request: prefill is charged for the longest uncached prompt part.
      let uncachedTokens = 0;
      for (const sequence of request.sequences) {
        const blocks = this.kv.allocate(sequence.promptTokenIds);
        sequence.blocks = blocks;
        request.cachedTokens += blocks.hitTokens;
        uncachedTokens = Math.max(uncachedTokens, sequence.promptTokenIds.length - blocks.hitTokens);
      }
      const prefill = options.ttftMs + options.prefillMsPerToken * uncachedTokens;
      request.prefillMs = Math.max(0, prefill * this.jitterFactor());
      request.firstTokenDueMs = now + request.prefillMs;
      this.queueHistogram.observe((now - request.arrivedAtMs) / 1000);
    }
    if (this.waitingHead > 1024 && this.waitingHead * 2 > this.waitingQueue.length) {
      this.waitingQueue.splice(0, this.waitingHead);
      this.waitingHead = 0;
    }
    this.counters.maxRunning = Math.max(this.counters.maxRunning, this.counters.running);
  }

  private jitterFactor(): number {
    const jitter = this.options.jitter;
    if (jitter === 0) return 1;
    // Box-Muller: one Gaussian draw from the seeded RNG; clamp so a step is never negative.
    const u = 1 - this.random();
    const v = this.random();
    const gaussian = Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
    return Math.max(0.1, 1 + jitter * gaussian);
  }

  private stepDurationMs(): number {
    const options = this.options;
    const load = options.maxNumSeqs > 1 ? (this.usedSlots - 1) / (options.maxNumSeqs - 1) : 0;
    const slowdown = 1 + (options.loadSlowdown - 1) * Math.max(0, load);
    return options.itlMs * slowdown * this.jitterFactor();
  }

  private schedule(): void {
    if (this.timer || this.running.size === 0) return;
    const now = performance.now();
    if (this.nextStepAtMs < now) {
      // Idle until now: the first step of a new batch is due at the earliest first-token time.
      let due = Number.POSITIVE_INFINITY;
      for (const request of this.running) due = Math.min(due, request.firstTokenDueMs);
      this.nextStepAtMs = Math.max(now, Number.isFinite(due) ? due : now + this.stepDurationMs());
    }
    this.timer = setTimeout(this.tick, Math.max(0, this.nextStepAtMs - now));
  }

  private readonly tick = (): void => {
    this.timer = undefined;
    const now = performance.now();
    this.counters.steps++;
    const frozen = this.pausedMode === 'keep';
    const { eosProbability } = this.options;
    let decoding = 0;
    if (!frozen) {
      for (const request of this.running) {
        if (request.pausedUntilMs > now) continue;
        if (request.state === 'prefill') {
          if (now < request.firstTokenDueMs) continue;
          request.state = 'decode';
          request.firstTokenAtMs = now;
          this.ttftHistogram.observe((now - request.arrivedAtMs) / 1000);
        } else if (!request.takesStep()) {
          continue;
        } else {
          decoding += request.slotCount;
        }
        let done = true;
        for (const sequence of request.sequences) {
          const before = sequence.tokenIds.length;
          sequence.step(eosProbability, request.wantLogprobs);
          const after = sequence.tokenIds.length;
          if (after !== before) {
            this.counters.generationTokens += after - before;
            // O(1): a token that opens a new KV block takes one from the pool.
            if ((sequence.promptTokenIds.length + after - 1) % BLOCK_SIZE === 0) this.kv.grow(sequence.blocks!);
          }
          if (!sequence.finishReason) done = false;
        }
        request.sink.onProgress(request);
        // The sink may have cancelled the request (a reset fault) while handling progress.
        if (done && request.state === 'decode') this.finish(request, now);
      }
    }
    if (decoding > 0 && this.lastStepAtMs > 0) this.itlHistogram.observe((now - this.lastStepAtMs) / 1000, decoding);
    this.lastStepAtMs = now;
    this.admit(now);
    this.nextStepAtMs = Math.max(now, this.nextStepAtMs) + this.stepDurationMs();
    if (this.running.size === 0) this.lastStepAtMs = 0;
    this.schedule();
  };

  /** Hands a running request's KV blocks back; the full blocks it computed stay cached. */
  private releaseBlocks(request: EngineRequest): void {
    for (const sequence of request.sequences) {
      if (!sequence.blocks) continue;
      this.kv.free(sequence.blocks, sequence.promptTokenIds, sequence.tokenIds);
      sequence.blocks = undefined;
    }
  }

  private finish(request: EngineRequest, now: number): void {
    this.running.delete(request);
    this.usedSlots -= request.slotCount;
    this.counters.running--;
    this.releaseBlocks(request);
    this.counters.completed++;
    this.gauge.add(-1);
    request.state = 'finished';
    request.finishedAtMs = now;
    this.e2eHistogram.observe((now - request.arrivedAtMs) / 1000);
    request.sink.onFinish(request);
    this.notifyIfIdle();
  }

  private notifyIfIdle(): void {
    if (this.inFlight !== 0 || this.idleWaiters.length === 0) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const waiter of waiters) waiter();
  }
}
