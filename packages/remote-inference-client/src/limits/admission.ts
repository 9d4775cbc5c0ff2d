import { performance } from 'node:perf_hooks';
import { Semaphore } from 'async-mutex';
import {
  AbortError,
  EngineUnavailableError,
  InvalidOptionsError,
  QueueFullError,
  TimeoutError,
  UnexpectedError,
} from '../errors.js';
import { EngineHealth, type HealthOptions, resolveHealthOptions } from '../routing/engine-health.js';
import type { EngineView, RoutingPolicy } from '../routing/policies.js';
import { MAX_TIMER_MS } from '../timers.js';
import { ClusterConcurrency } from './cluster-concurrency.js';
import {
  type AdaptiveCapOptions,
  EngineCapacity,
  type ResolvedAdaptiveCapOptions,
  resolveAdaptiveCapOptions,
} from './engine-capacity.js';
import { LeasedRateLimiter, type RedisLimitsOptions, TokenBucket } from './qps-limiter.js';

/** Admission limits: hard totals and soft per-engine protections, for concurrency and for requests per second. */
export interface LimitsOptions {
  /** Requests in flight across all engines at most (hard cap). @default unlimited */
  maxConcurrency?: number;
  /** Requests started per second across all engines at most (hard cap, Bottleneck-owned). @default unlimited */
  maxQps?: number;
  /** Requests waiting for admission at most; beyond it requests fail with ERR_QUEUE_FULL. @default unlimited */
  maxQueued?: number;
  perEngine?: {
    /**
     * In flight per engine (async-mutex semaphore). Given without `adaptive`: a fixed cap (512 is what reference
     * trainers use). With `adaptive`, the most the learned cap may reach. Not given: the cap is learned (up to 4096),
     * and 512 is the fixed cap for engines without vLLM's gauges. @default learned (see `adaptive`)
     */
    maxConcurrency?: number;
    /** Started per second per engine. @default unlimited */
    maxQps?: number;
    /**
     * Late binding: learn each engine's capacity from its `/metrics` gauges and send it about as many requests as
     * it can run; the rest wait in the client's queue for the engine that frees a slot first. `true` for the
     * defaults ({@link AdaptiveCapOptions}); `false` for the fixed `maxConcurrency` (512 when not given).
     * @default true when `maxConcurrency` is not given, else false
     */
    adaptive?: boolean | AdaptiveCapOptions;
  };
  /** Share `maxQps` and `maxConcurrency` with every process and host using the same Redis id. */
  redis?: RedisLimitsOptions;
}

/** Per-engine concurrency permits. The scheduler takes one only after checking `available()`: it never waits. */
interface EnginePermits {
  available(): boolean;
  take(): void;
  give(): void;
}

/** async-mutex's Semaphore as the permit store. */
class SemaphorePermits implements EnginePermits {
  private readonly semaphore: Semaphore;
  constructor(capacity: number) {
    this.semaphore = new Semaphore(capacity);
  }
  available(): boolean {
    return this.semaphore.getValue() > 0;
  }
  take(): void {
    void this.semaphore.acquire(); // dispatched synchronously: available() was checked
  }
  give(): void {
    this.semaphore.release();
  }
}

/** Permits up to a learned cap that moves (see {@link EngineCapacity}); a cap that shrinks takes effect as requests end. */
class LearnedPermits implements EnginePermits {
  private held = 0;
  constructor(private readonly capacity: EngineCapacity) {}
  available(): boolean {
    return this.held < this.capacity.cap;
  }
  take(): void {
    this.held++;
  }
  give(): void {
    this.held--;
  }
}

/** A plain counter, for caps too large for async-mutex (see {@link createPermits}). */
class CounterPermits implements EnginePermits {
  private free: number;
  constructor(capacity: number) {
    this.free = capacity;
  }
  available(): boolean {
    return this.free > 0;
  }
  take(): void {
    this.free--;
  }
  give(): void {
    this.free++;
  }
}

/**
 * async-mutex 0.5's `release()` walks every free permit (`for (weight = value; weight > 0; weight--)`) even with no
 * waiter: O(free permits) per request. Profiled in the load sweep with a 1,000,000 cap it took 5 of 13 s of worker
 * CPU. Up to 4,096 (the default is 512) the walk is cheap and the semaphore is used; above, a counter.
 */
function createPermits(capacity: number): EnginePermits {
  return capacity <= 4096 ? new SemaphorePermits(capacity) : new CounterPermits(capacity);
}

/** One engine as the scheduler tracks it. */
export class EngineEntry implements EngineView {
  outstanding = 0;
  draining = false;
  readonly errors: Record<string, number> = {};
  requests = 0;
  readonly permits: EnginePermits;
  readonly health: EngineHealth;
  readonly qps: TokenBucket | undefined;
  /** The learned cap, with `limits.perEngine.adaptive`; undefined: the fixed cap. */
  readonly capacity: EngineCapacity | undefined;

  constructor(
    readonly endpoint: string,
    public index: number,
    private readonly fixedCap: number,
    maxQps: number | undefined,
    health: Required<HealthOptions>,
    adaptive?: { options: ResolvedAdaptiveCapOptions; onChange: () => void },
  ) {
    if (adaptive) {
      this.capacity = new EngineCapacity(adaptive.options, fixedCap, adaptive.onChange);
      this.permits = new LearnedPermits(this.capacity);
    } else {
      this.permits = createPermits(fixedCap);
    }
    this.health = new EngineHealth(health);
    this.qps = maxQps === undefined ? undefined : new TokenBucket(maxQps);
  }

  get capIsLearned(): boolean {
    return this.capacity !== undefined && this.capacity.state !== 'no-metrics';
  }

  /** In flight this engine may have now: the learned cap, or the fixed one. */
  get maxConcurrency(): number {
    return this.capacity ? this.capacity.cap : this.fixedCap;
  }

  /** Can take one more request right now. */
  hasRoom(): boolean {
    return !this.draining && this.permits.available() && this.health.available();
  }

  /** Neither draining nor in cooldown (it may still be full). */
  isUp(): boolean {
    return !this.draining && this.health.available();
  }
}

/** Per-request admission input. */
export interface AdmissionRequest {
  signal: AbortSignal | undefined;
  /** `performance.now()` deadline, or Infinity. */
  deadlineMs: number;
  /** Higher first; FIFO within a priority. @default 0 */
  priority: number;
  sessionId: string | undefined;
  /**
   * Engines to avoid (failover): used only when no other engine has room, and then only after waiting the
   * scheduler's `maxAvoidWaitMs` for another one that is up but full.
   */
  avoid: ReadonlySet<string> | undefined;
  /** A retry or resume: it has waited once already, so it goes to the front of its priority's queue. */
  retry?: boolean;
}

/** Keeps, in place and in order, the items for which `keep` is true. */
function keepWhere<T>(items: T[], keep: (item: T) => boolean): void {
  let kept = 0;
  for (const item of items) if (keep(item)) items[kept++] = item;
  items.length = kept;
}

/** What {@link Scheduler.tryGrant} says when a request waits for its session's engine and others may go first. */
const WAIT_FOR_PREFERRED = Symbol('wait-for-preferred');

interface Waiter {
  request: AdmissionRequest;
  enqueuedAtMs: number;
  resolve: (engine: EngineEntry) => void;
  reject: (error: Error) => void;
  settled: boolean;
  cleanup: () => void;
}

/** Validated limits. */
export interface ResolvedLimits {
  maxConcurrency: number;
  maxQps: number | undefined;
  maxQueued: number;
  perEngineConcurrency: number;
  perEngineQps: number | undefined;
  /** The learned per-engine cap's settings; undefined: the fixed cap. */
  perEngineAdaptive: ResolvedAdaptiveCapOptions | undefined;
  redis: RedisLimitsOptions | undefined;
}

/** Applies defaults to limits and validates them. */
export function resolveLimits(limits: LimitsOptions = {}): ResolvedLimits {
  if (typeof limits !== 'object' || limits === null) {
    throw new InvalidOptionsError(`Expected \`limits\` to be an object, got \`${JSON.stringify(limits)}\``);
  }
  const check = (value: unknown, field: string, integer: boolean) => {
    if (value === undefined) return;
    if (
      typeof value !== 'number' ||
      !(value > 0) ||
      (integer && !Number.isInteger(value) && value !== Number.POSITIVE_INFINITY)
    ) {
      throw new InvalidOptionsError(
        `Expected \`limits.${field}\` to be a ${integer ? 'whole ' : ''}number > 0, got \`${JSON.stringify(value)}\``,
      );
    }
  };
  check(limits.maxConcurrency, 'maxConcurrency', true);
  check(limits.maxQps, 'maxQps', false);
  check(limits.maxQueued, 'maxQueued', true);
  check(limits.perEngine?.maxConcurrency, 'perEngine.maxConcurrency', true);
  check(limits.perEngine?.maxQps, 'perEngine.maxQps', false);
  if (limits.redis) {
    if (typeof limits.redis.url !== 'string' || !/^rediss?:\/\//.test(limits.redis.url)) {
      throw new InvalidOptionsError(
        `Expected \`limits.redis.url\` to be a redis:// URL, got \`${JSON.stringify(limits.redis.url)}\``,
      );
    }
    if (typeof limits.redis.id !== 'string' || limits.redis.id === '') {
      throw new InvalidOptionsError(
        `Expected \`limits.redis.id\` to be a non-empty string, got \`${JSON.stringify(limits.redis.id)}\``,
      );
    }
    if (limits.maxQps === undefined && limits.maxConcurrency === undefined) {
      throw new InvalidOptionsError(
        '`limits.redis` shares `limits.maxQps` and `limits.maxConcurrency` across processes: set at least one',
      );
    }
  }
  return {
    maxConcurrency: limits.maxConcurrency ?? Number.POSITIVE_INFINITY,
    maxQps: limits.maxQps,
    maxQueued: limits.maxQueued ?? Number.POSITIVE_INFINITY,
    perEngineConcurrency: limits.perEngine?.maxConcurrency ?? 512,
    perEngineQps: limits.perEngine?.maxQps,
    // Late binding is the default; a fixed cap the caller gives is kept as given.
    perEngineAdaptive: resolveAdaptiveCapOptions(
      limits.perEngine?.adaptive ?? limits.perEngine?.maxConcurrency === undefined,
      limits.perEngine?.maxConcurrency,
    ),
    redis: limits.redis,
  };
}

/**
 * Admission and routing in one place: a single fair queue (priorities, FIFO within one) grants a request only when
 * the global concurrency cap, the global QPS budget and some engine's per-engine semaphore and QPS all allow it,
 * then the routing policy picks among the engines with room. Every cap holds at every instant; whichever binds first
 * decides. A waiting request leaves at once on abort or deadline. The hot path with room everywhere is O(engines).
 */
/** A deadline reached with every engine removed, draining or in cooldown: said so, rather than "timeout". */
export function noEngineBeforeDeadline(cause?: unknown): EngineUnavailableError {
  return new EngineUnavailableError('No engine available before the deadline (all removed, draining or in cooldown)', {
    ...(cause === undefined ? {} : { cause }),
    hint: "Check the engines; stats().engines shows each one's cooldown state.",
  });
}

export class Scheduler {
  private engines: EngineEntry[] = [];
  /** Scratch list of the engines that may take the request being granted, and its routing context. */
  private readonly candidates: EngineEntry[] = [];
  private readonly context: { sessionId: string | undefined } = { sessionId: undefined };
  private readonly byEndpoint = new Map<string, EngineEntry>();
  /** Removed engines whose requests still run, by endpoint. */
  private readonly drainingByEndpoint = new Map<string, EngineEntry>();
  private readonly queues = new Map<number, Waiter[]>();
  private priorities: number[] = [];
  private queued = 0;
  private inFlight = 0;
  private readonly qps: LeasedRateLimiter | undefined;
  private readonly cluster: ClusterConcurrency | undefined;
  private readonly health: Required<HealthOptions>;
  private wakeTimer: NodeJS.Timeout | undefined;
  /** When {@link wakeTimer} fires (`performance.now()` ms). */
  private wakeAtMs = Number.POSITIVE_INFINITY;
  /** Holds the process open while requests wait in the queue. */
  private keepAlive: NodeJS.Timeout | undefined;
  private preferredTimer: NodeJS.Timeout | undefined;
  private preferredWakeAtMs = Number.POSITIVE_INFINITY;
  private pumping = false;
  readonly counters = { admitted: 0, rejectedQueueFull: 0, maxInFlight: 0, maxQueued: 0 };
  /** @internal Called when a grant fills an engine whose cap is still learning (the poller then polls at once). */
  onLearningCapReached: (() => void) | undefined;

  /**
   * @param maxAvoidWaitMs how long a retry whose only engines with room are those it failed on waits for another
   *   one that is up but full (the client's `retry.maxBackoffMs`).
   */
  constructor(
    readonly limits: ResolvedLimits,
    private readonly policy: RoutingPolicy,
    health: HealthOptions | undefined,
    private readonly maxAvoidWaitMs = 0,
  ) {
    this.health = resolveHealthOptions(health);
    if (limits.maxQps !== undefined) {
      this.qps = new LeasedRateLimiter(limits.maxQps, limits.redis);
      this.qps.onAvailable = () => this.pump();
    }
    if (limits.redis && Number.isFinite(limits.maxConcurrency)) {
      this.cluster = new ClusterConcurrency(limits.maxConcurrency, limits.redis);
      this.cluster.onAvailable = () => this.pump();
      this.cluster.usage = () => ({ inFlight: this.inFlight, queued: this.queued });
    }
  }

  /**
   * Replaces the engine set: new engines join, removed ones drain (in-flight requests finish). An engine added back
   * while it still drains is the same entry again, so its cap counts the requests it still runs (a fresh entry
   * beside the draining one gave the engine twice its cap, and lost its health state).
   */
  setEngines(endpoints: readonly string[]): EngineEntry[] {
    const keep = new Set(endpoints);
    const removed: EngineEntry[] = [];
    for (const entry of this.engines) {
      if (!keep.has(entry.endpoint)) {
        entry.draining = true;
        removed.push(entry);
        this.byEndpoint.delete(entry.endpoint);
        this.drainingByEndpoint.set(entry.endpoint, entry);
      }
    }
    this.engines = endpoints.map((endpoint, index) => {
      let entry = this.byEndpoint.get(endpoint);
      const back = entry ? undefined : this.drainingByEndpoint.get(endpoint);
      if (back) {
        this.drainingByEndpoint.delete(endpoint);
        back.draining = false;
        entry = back;
        this.byEndpoint.set(endpoint, entry);
      }
      if (!entry) {
        entry = new EngineEntry(
          endpoint,
          index,
          this.limits.perEngineConcurrency,
          this.limits.perEngineQps,
          this.health,
          this.limits.perEngineAdaptive && { options: this.limits.perEngineAdaptive, onChange: () => this.pump() },
        );
        if (entry.qps) entry.qps.onAvailable = () => this.pump();
        this.byEndpoint.set(endpoint, entry);
      }
      entry.index = index;
      return entry;
    });
    this.pump();
    return removed;
  }

  /** A removed engine finished its requests: a later add of its endpoint starts fresh. */
  forgetDrained(entry: EngineEntry): void {
    if (this.drainingByEndpoint.get(entry.endpoint) === entry) this.drainingByEndpoint.delete(entry.endpoint);
  }

  /** Whether some engine is neither in cooldown nor draining. */
  anyEngineAvailable(): boolean {
    return this.engines.some((engine) => engine.health.available() && !engine.draining);
  }

  /** Every engine currently in the set. */
  list(): readonly EngineEntry[] {
    return this.engines;
  }

  get queuedCount(): number {
    return this.queued;
  }

  get inFlightCount(): number {
    return this.inFlight;
  }

  /**
   * Waits for admission and an engine: the engine granted holds one of the request's slots (every cap counted) until
   * {@link settle} gives it back, once. No object per grant: a long request would hold it for seconds.
   */
  admit(request: AdmissionRequest): EngineEntry | Promise<EngineEntry> {
    if (this.queued === 0) {
      const engine = this.tryGrant(request, performance.now());
      if (engine && engine !== WAIT_FOR_PREFERRED) return engine;
    }
    if (this.queued >= this.limits.maxQueued) {
      this.counters.rejectedQueueFull++;
      return Promise.reject(new QueueFullError(this.limits.maxQueued));
    }
    return this.enqueue(request);
  }

  private enqueue(request: AdmissionRequest): Promise<EngineEntry> {
    return new Promise<EngineEntry>((resolve, reject) => {
      // Aborted before it could wait: never counted as queued (leaving would uncount it, taking `queued` below 0).
      if (request.signal?.aborted) {
        reject(new AbortError('Aborted while queued for admission', { cause: request.signal.reason }));
        return;
      }
      const waiter: Waiter = {
        request,
        enqueuedAtMs: performance.now(),
        resolve,
        reject,
        settled: false,
        cleanup: () => {},
      };
      const leave = (error: Error) => {
        if (waiter.settled) return;
        waiter.settled = true;
        this.queued--;
        this.queueEmptied();
        waiter.cleanup();
        reject(error);
        this.pump();
      };
      const onAbort = () =>
        leave(new AbortError('Aborted while queued for admission', { cause: request.signal?.reason }));
      let timer: NodeJS.Timeout | undefined;
      const expire = () => {
        const leftMs = request.deadlineMs - performance.now();
        if (leftMs > 0) {
          // A deadline past Node's timer range is reached in steps.
          timer = setTimeout(expire, Math.min(leftMs, MAX_TIMER_MS));
          return;
        }
        leave(
          this.anyEngineAvailable()
            ? new TimeoutError('queue', Math.round(performance.now() - waiter.enqueuedAtMs))
            : noEngineBeforeDeadline(),
        );
      };
      if (Number.isFinite(request.deadlineMs)) {
        timer = setTimeout(expire, Math.min(Math.max(0, request.deadlineMs - performance.now()), MAX_TIMER_MS));
      }
      request.signal?.addEventListener('abort', onAbort, { once: true });
      waiter.cleanup = () => {
        clearTimeout(timer);
        request.signal?.removeEventListener('abort', onAbort);
      };
      let queue = this.queues.get(request.priority);
      if (!queue) {
        queue = [];
        this.queues.set(request.priority, queue);
        this.priorities = [...this.queues.keys()].sort((a, b) => b - a);
      }
      // A retry has waited its turn once: behind a step's whole queue it would end the step last.
      if (request.retry) queue.unshift(waiter);
      else queue.push(waiter);
      this.queued++;
      this.counters.maxQueued = Math.max(this.counters.maxQueued, this.queued);
      // While requests wait, the process stays alive: a queued request with no deadline is work in progress, and
      // what wakes it (a cooldown's end, a recovery probe) is timers that do not hold the process. It used to exit
      // with the request still queued, its promise never settled.
      this.keepAlive ??= setInterval(() => {}, 2 ** 30);
      this.scheduleWake();
      // A request waiting for its session's engine keeps its place but lets others take free engines: this one
      // may be granted at once (it used to wait behind it, an engine idle meanwhile).
      if (this.preferredTimer !== undefined) this.pump();
    });
  }

  /**
   * Grants waiting requests in order (priorities, FIFO within one) while some engine has room. The head that cannot
   * be granted blocks everyone behind it (no overtaking), except a request waiting for its session's engine
   * (`RoutingPolicy.preferred`): it keeps its place and lets others take the engines that are free.
   */
  pump(): void {
    if (this.pumping) return;
    this.pumping = true;
    try {
      this.pumpOnce();
    } finally {
      this.pumping = false;
    }
  }

  private pumpOnce(): void {
    let emptied = false;
    try {
      emptied = this.serveQueues();
    } finally {
      // A priority's queue lives while requests wait in it: callers that number priorities by step or by time
      // made every pump walk every priority ever used (3,492 after 3,500 requests, 123 µs per pump).
      if (emptied) this.priorities = [...this.queues.keys()].sort((a, b) => b - a);
    }
  }

  /** One pass over the queues; true when it emptied (and dropped) a priority's queue. */
  private serveQueues(): boolean {
    const now = performance.now();
    let emptied = false;
    for (const priority of this.priorities) {
      const queue = this.queues.get(priority);
      if (!queue) continue;
      // Waiters before `index` are settled, except those kept (waiting for their engine), moved to [0, kept).
      let kept = -1;
      let index = 0;
      let blocked = false;
      for (; index < queue.length; index++) {
        const waiter = queue[index]!;
        if (waiter.settled) continue;
        const failure = this.qps?.failure ?? this.cluster?.failure;
        if (failure) {
          waiter.settled = true;
          this.queued--;
          this.queueEmptied();
          waiter.cleanup();
          waiter.reject(failure);
          continue;
        }
        let engine: ReturnType<Scheduler['tryGrant']>;
        try {
          engine = this.tryGrant(waiter.request, now, waiter.enqueuedAtMs);
        } catch (error) {
          // A custom policy's `pick()` threw: this waiter's request fails with it (typed by the request path). It
          // used to escape from the settle() of whichever request ended last, failing that finished request and
          // leaving this one queued for good.
          waiter.settled = true;
          this.queued--;
          this.queueEmptied();
          waiter.cleanup();
          waiter.reject(new UnexpectedError(error));
          continue;
        }
        if (engine === undefined) {
          blocked = true; // FIFO: nobody behind the head may overtake it
          break;
        }
        if (engine === WAIT_FOR_PREFERRED) {
          if (kept < 0) kept = 0;
          queue[kept++] = waiter;
          continue;
        }
        waiter.settled = true;
        this.queued--;
        this.queueEmptied();
        waiter.cleanup();
        waiter.resolve(engine);
      }
      if (kept < 0) {
        queue.splice(0, index);
      } else {
        const rest = queue.length - index;
        queue.copyWithin(kept, index);
        queue.length = kept + rest;
      }
      if (queue.length === 0) {
        this.queues.delete(priority);
        emptied = true;
      }
      if (blocked) {
        this.scheduleWake();
        return emptied; // a blocked higher priority blocks lower ones: no starvation of the head
      }
    }
    return emptied;
  }

  /** Wakes the queue when the first request waiting for its session's engine may stop waiting. */
  private schedulePreferredWake(atMs: number): void {
    if (atMs >= this.preferredWakeAtMs && this.preferredTimer) return;
    clearTimeout(this.preferredTimer);
    this.preferredWakeAtMs = atMs;
    this.preferredTimer = setTimeout(
      () => {
        this.preferredTimer = undefined;
        this.preferredWakeAtMs = Number.POSITIVE_INFINITY;
        this.pump();
      },
      Math.max(0, atMs - performance.now()) + 1,
    );
    this.preferredTimer.unref();
  }

  /**
   * Wakes the queue when the first cooldown ends (nothing else would). A sooner end re-arms the timer: it used to
   * keep the first one, so a retry waited out a 3.2 s cooldown while another engine was back after 0.1 s.
   */
  private scheduleWake(): void {
    let soonest = Number.POSITIVE_INFINITY;
    for (const engine of this.engines) {
      const wait = engine.health.msUntilAvailable();
      if (wait > 0) soonest = Math.min(soonest, wait);
    }
    if (!Number.isFinite(soonest)) return;
    const atMs = performance.now() + soonest + 1;
    if (this.wakeTimer && this.wakeAtMs <= atMs) return;
    clearTimeout(this.wakeTimer);
    this.wakeAtMs = atMs;
    this.wakeTimer = setTimeout(() => {
      this.wakeTimer = undefined;
      this.wakeAtMs = Number.POSITIVE_INFINITY;
      this.pump();
    }, soonest + 1);
    this.wakeTimer.unref();
  }

  /** Nothing waits any more: the process may exit. */
  private queueEmptied(): void {
    if (this.queued === 0 && this.keepAlive) {
      clearInterval(this.keepAlive);
      this.keepAlive = undefined;
    }
  }

  /**
   * The engine a session's request should wait for, while it is full and the wait is not over: the policy's
   * preference among the engines that are up and not to be avoided.
   */
  private waitsForPreferred(request: AdmissionRequest, now: number, enqueuedAtMs: number): boolean {
    if (request.sessionId === undefined || this.policy.preferred === undefined) return false;
    const up = this.engines.filter((engine) => engine.isUp() && !request.avoid?.has(engine.endpoint));
    if (up.length < 2) return false;
    const preference = this.policy.preferred(up, { sessionId: request.sessionId });
    if (!preference) return false;
    const engine = preference.engine as EngineEntry;
    if (engine.hasRoom() && (engine.qps === undefined || engine.qps.peek())) return false;
    const until = enqueuedAtMs + preference.maxWaitMs;
    if (now >= until) return false;
    this.schedulePreferredWake(until);
    return true;
  }

  /**
   * A retry whose only engines with room are those it failed on waits for another engine that is up but full, for
   * at most the scheduler's `maxAvoidWaitMs`, while others may use the free ones. With caps that bind (late binding)
   * the engine that just failed is often the only one with room — its failed request freed the slot — and without
   * this the retry went straight back to it.
   */
  private waitsForAnother(request: AdmissionRequest, now: number, enqueuedAtMs: number): boolean {
    const until = enqueuedAtMs + this.maxAvoidWaitMs;
    if (now >= until) return false;
    if (!this.engines.some((engine) => engine.isUp() && !request.avoid!.has(engine.endpoint))) return false;
    this.schedulePreferredWake(until);
    return true;
  }

  private tryGrant(
    request: AdmissionRequest,
    now: number,
    enqueuedAtMs = now,
  ): EngineEntry | typeof WAIT_FOR_PREFERRED | undefined {
    if (this.inFlight >= this.limits.maxConcurrency) return undefined;
    if (this.cluster) {
      if (this.cluster.failure) throw this.cluster.failure;
      if (this.inFlight >= this.cluster.limit) {
        this.cluster.want(this.inFlight + this.queued + 1);
        return undefined;
      }
    }
    if (this.qps?.failure) throw this.qps.failure;
    // The engines with room, in one scratch array reused by every grant (a policy sees it only during `pick`).
    const candidates = this.candidates;
    candidates.length = 0;
    for (const engine of this.engines) if (engine.hasRoom()) candidates.push(engine);
    if (candidates.length === 0) return undefined;
    if (this.waitsForPreferred(request, now, enqueuedAtMs)) return WAIT_FOR_PREFERRED;
    const avoid = request.avoid;
    if (avoid && avoid.size > 0) {
      if (candidates.some((engine) => !avoid.has(engine.endpoint))) {
        keepWhere(candidates, (engine) => !avoid.has(engine.endpoint));
      } else if (this.waitsForAnother(request, now, enqueuedAtMs)) {
        return WAIT_FOR_PREFERRED;
      }
    }
    // Per-engine QPS is soft: an engine out of tokens is skipped, others may take the request. It is off by
    // default: no third pass over the engines on every request then.
    if (this.limits.perEngineQps !== undefined) keepWhere(candidates, (engine) => engine.qps!.peek());
    if (candidates.length === 0) return undefined;
    if (this.qps && !this.qps.tryTake()) return undefined;
    this.context.sessionId = request.sessionId;
    let engine: EngineEntry;
    try {
      engine = this.policy.pick(candidates, this.context) as EngineEntry;
    } catch (error) {
      // A custom policy threw: the request is not granted, and the global permit it took goes back.
      this.qps?.giveBack();
      throw error;
    }
    engine.qps?.tryTake();
    engine.permits.take();
    engine.outstanding++;
    engine.requests++;
    engine.health.onSend();
    if (engine.capacity?.state === 'learning' && engine.outstanding >= engine.capacity.cap) {
      this.onLearningCapReached?.();
    }
    this.inFlight++;
    this.counters.admitted++;
    this.counters.maxInFlight = Math.max(this.counters.maxInFlight, this.inFlight);
    return engine;
  }

  /** A granted request ended: call once per engine {@link admit} granted. */
  settle(engine: EngineEntry): void {
    engine.health.onSettled();
    engine.permits.give();
    engine.outstanding--;
    this.inFlight--;
    this.pump();
    this.cluster?.settle(this.inFlight, this.queued);
  }

  async close(): Promise<void> {
    if (this.wakeTimer) clearTimeout(this.wakeTimer);
    clearTimeout(this.preferredTimer);
    for (const queue of this.queues.values()) {
      for (const waiter of queue) {
        if (waiter.settled) continue;
        waiter.settled = true;
        waiter.cleanup();
        waiter.reject(new AbortError('The client was closed'));
      }
    }
    this.queues.clear();
    this.priorities = [];
    this.queued = 0;
    this.queueEmptied();
    await Promise.all([this.qps?.close(), this.cluster?.close(), ...this.engines.map((engine) => engine.qps?.close())]);
  }
}
