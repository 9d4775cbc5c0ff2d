import { InvalidOptionsError } from '../errors.js';

/**
 * The adaptive per-engine cap: instead of a constant (512, as reference trainers), each engine gets about as many
 * requests as it can run at once — its running batch full, its waiting queue near empty — and the rest wait in the
 * client's one fair queue for whichever engine frees a slot first (late binding). The cap is learned from the
 * engine's own Prometheus gauges (`GET /metrics`), polled every `intervalMs`.
 */
export interface AdaptiveCapOptions {
  /** Cap of an engine before anything is learned, and again after it restarts. @default 32, or maxCap if less (requests) */
  initialCap?: number;
  /** The learned cap never goes below this. @default 1 (requests) */
  minCap?: number;
  /**
   * The learned cap never goes above this. @default `limits.perEngine.maxConcurrency` when given, else 4096
   * (requests)
   */
  maxCap?: number;
  /**
   * Requests sent beyond what the engine runs, as a fraction of it (at least 1), so that a slot freed on the engine
   * finds the next request already there instead of waiting a round trip. @default 0.05 (fraction)
   */
  headroom?: number;
  /** `GET /metrics` on each busy engine this often (idle engines are not polled). @default 500 (ms) */
  intervalMs?: number;
  /**
   * This often instead while a cap is still learning (doubling per poll from `initialCap`), so a cold burst to an
   * engine of 1,024 slots reaches them in under a second, not ~2.5 s. @default 100 (ms)
   */
  learningIntervalMs?: number;
  /** One poll's deadline. @default 2000 (ms) */
  timeoutMs?: number;
  /** A `/metrics` body larger than this is not read (the engine falls back to the fixed cap). @default 4194304 (bytes) */
  maxBodyBytes?: number;
  /** KV-cache usage at or above which an engine counts as full even with an empty waiting queue. @default 0.95 (fraction) */
  kvCacheFull?: number;
}

/** Validated adaptive-cap options. */
export type ResolvedAdaptiveCapOptions = Required<AdaptiveCapOptions>;

/** Applies defaults to `limits.perEngine.adaptive` and validates it. `fixedCap`: `perEngine.maxConcurrency` if set. */
export function resolveAdaptiveCapOptions(
  options: boolean | AdaptiveCapOptions | undefined,
  fixedCap: number | undefined,
): ResolvedAdaptiveCapOptions | undefined {
  if (options === undefined || options === false) return undefined;
  if (options !== true && (typeof options !== 'object' || options === null || Array.isArray(options))) {
    throw new InvalidOptionsError(
      `Expected \`limits.perEngine.adaptive\` to be true, false or an object, got \`${JSON.stringify(options)}\``,
    );
  }
  const given: AdaptiveCapOptions = options === true ? {} : options;
  const maxCap = given.maxCap ?? (fixedCap !== undefined && Number.isFinite(fixedCap) ? fixedCap : 4096);
  const resolved: ResolvedAdaptiveCapOptions = {
    initialCap: given.initialCap ?? Math.min(32, maxCap),
    minCap: given.minCap ?? 1,
    maxCap,
    headroom: given.headroom ?? 0.05,
    intervalMs: given.intervalMs ?? 500,
    learningIntervalMs: given.learningIntervalMs ?? Math.min(100, given.intervalMs ?? 500),
    timeoutMs: given.timeoutMs ?? 2000,
    maxBodyBytes: given.maxBodyBytes ?? 4 * 1024 * 1024,
    kvCacheFull: given.kvCacheFull ?? 0.95,
  };
  const field = (name: keyof AdaptiveCapOptions, ok: boolean, expected: string) => {
    if (!ok) {
      throw new InvalidOptionsError(
        `Expected \`limits.perEngine.adaptive.${name}\` to be ${expected}, got \`${JSON.stringify(resolved[name])}\``,
      );
    }
  };
  const whole = (value: unknown) => typeof value === 'number' && Number.isInteger(value) && value >= 1;
  const ms = (value: unknown) => typeof value === 'number' && value >= 1 && value <= 2 ** 31 - 1;
  field('minCap', whole(resolved.minCap), 'a whole number >= 1');
  field('maxCap', whole(resolved.maxCap) && resolved.maxCap >= resolved.minCap, 'a whole number >= minCap');
  field(
    'initialCap',
    whole(resolved.initialCap) && resolved.initialCap >= resolved.minCap && resolved.initialCap <= resolved.maxCap,
    `a whole number in minCap..maxCap (${resolved.minCap}..${resolved.maxCap})`,
  );
  field(
    'headroom',
    typeof resolved.headroom === 'number' && resolved.headroom >= 0 && resolved.headroom <= 1,
    'a fraction in 0..1',
  );
  field('intervalMs', ms(resolved.intervalMs), 'a number of ms in 1..2147483647');
  field('learningIntervalMs', ms(resolved.learningIntervalMs), 'a number of ms in 1..2147483647');
  field('timeoutMs', ms(resolved.timeoutMs), 'a number of ms in 1..2147483647');
  field('maxBodyBytes', whole(resolved.maxBodyBytes), 'a whole number of bytes >= 1');
  field(
    'kvCacheFull',
    typeof resolved.kvCacheFull === 'number' && resolved.kvCacheFull > 0 && resolved.kvCacheFull <= 1,
    'a fraction in (0, 1]',
  );
  return resolved;
}

/** One reading of an engine's scheduler gauges, as vLLM exports them (`vllm/v1/metrics/loggers.py`). */
export interface EngineLoadSample {
  /** `vllm:num_requests_running`: requests in the running batch (summed over the endpoint's engines). */
  running: number;
  /** `vllm:num_requests_waiting`: requests in the engine's waiting queue. */
  waiting: number;
  /** `vllm:kv_cache_usage_perc` (0..1), the fullest engine behind the endpoint; undefined when not exported. */
  kvCacheUsage: number | undefined;
  /** A monotonic counter (`vllm:prompt_tokens_total`): going backwards means the engine restarted. */
  counter: number | undefined;
}

/** Where a learned cap stands: never seen full yet, learned, or no vLLM gauges (the fixed cap applies). */
export type CapState = 'learning' | 'learned' | 'no-metrics';

/**
 * What the client knows of one engine's capacity, and the cap it derives. Pure (no I/O, no clock), so that the
 * learning rule has exact unit tests; the client feeds it samples.
 *
 * The rule, per sample, with `share = outstanding / (running + waiting)` turning the engine's counts into this
 * client's requests (a request with `n` choices is `n` requests to vLLM; other clients' requests are not ours):
 * - waiting > 0, or KV cache >= `kvCacheFull`: the engine is full, so what runs is its capacity now:
 *   `capacity = running x share` (down as well as up).
 * - otherwise, if more of ours run than the capacity says: it can run more. Before the first full reading
 *   (learning), the capacity doubles (after a restart, only up to what it was before); after, it takes what ran
 *   (growth by the headroom per poll).
 * - the cap is `capacity + max(1, headroom x capacity)`, within minCap..maxCap.
 * An engine that restarts (unreachable, or its counter went backwards) starts again from `initialCap`.
 */
export class EngineCapacity {
  private capacityEstimate: number;
  private capValue: number;
  private stateValue: CapState = 'learning';
  /** Nothing learned since the start or a restart: the cap is `initialCap` exactly. */
  private starting = true;
  private lastCounter: number | undefined;
  /** The capacity learned before the last restart: doubling stops there. */
  private beforeRestart: number | undefined;
  /** Samples used, restarts seen: for stats and tests. */
  samples = 0;
  restarts = 0;
  last: EngineLoadSample | undefined;

  constructor(
    private readonly options: ResolvedAdaptiveCapOptions,
    private readonly fallbackCap: number,
    private readonly onChange: () => void = () => {},
  ) {
    this.capacityEstimate = this.startingCapacity();
    this.capValue = this.derive();
  }

  /** In flight this engine may have now. */
  get cap(): number {
    return this.capValue;
  }

  /** Requests of this client the engine can run at once, as learned (in this client's requests). */
  get capacity(): number {
    return this.capacityEstimate;
  }

  get state(): CapState {
    return this.stateValue;
  }

  /** A reading of the engine's gauges; `outstanding` is this client's requests on it when the reading arrived. */
  observe(sample: EngineLoadSample, outstanding: number): void {
    this.last = sample;
    if (sample.counter !== undefined) {
      if (this.lastCounter !== undefined && sample.counter < this.lastCounter) this.restart();
      this.lastCounter = sample.counter;
    }
    this.samples++;
    if (this.stateValue === 'no-metrics') this.stateValue = 'learning';
    const engineTotal = sample.running + sample.waiting;
    if (outstanding <= 0 || sample.running <= 0 || engineTotal <= 0) {
      // Nothing of ours there, or a paused/sleeping engine (waiting, none running): no evidence either way.
      this.update();
      return;
    }
    const share = Math.min(1, outstanding / engineTotal);
    const running = sample.running * share;
    const full =
      sample.waiting > 0 || (sample.kvCacheUsage !== undefined && sample.kvCacheUsage >= this.options.kvCacheFull);
    if (full) {
      this.capacityEstimate = Math.max(1, Math.round(running));
      this.stateValue = 'learned';
      this.starting = false;
    } else if (running > this.capacityEstimate || (this.starting && running >= this.options.initialCap)) {
      // (At the start the cap is initialCap, which may not exceed the floored starting capacity: all of it
      // running is the evidence to grow on.)
      this.capacityEstimate = this.grow(running);
      this.starting = false;
    }
    this.update();
  }

  /**
   * Learning doubles, but not past what the engine ran before it restarted (most restarts come back with the same
   * slots: doubling past them would bind up to that many requests to its queue at once); learned, or past that,
   * it takes what ran.
   */
  private grow(running: number): number {
    const ran = Math.round(running);
    if (this.stateValue !== 'learning') return ran;
    const threshold = this.beforeRestart;
    if (threshold !== undefined && this.capacityEstimate >= threshold) return ran;
    const doubled = Math.max(ran, this.capacityEstimate * 2);
    return threshold === undefined ? doubled : Math.max(ran, Math.min(doubled, threshold));
  }

  /** The endpoint did not answer `/metrics` (down, restarting): start again when it is back. */
  unreachable(): void {
    if (this.stateValue !== 'learning' || this.capacityEstimate !== this.startingCapacity()) this.restart();
  }

  /** The endpoint answers but exports no vLLM gauges (404, another server): use the fixed cap. */
  noMetrics(): void {
    this.stateValue = 'no-metrics';
    this.update();
  }

  private restart(): void {
    if (this.stateValue === 'learned') this.beforeRestart = this.capacityEstimate;
    this.restarts++;
    this.starting = true;
    this.capacityEstimate = this.startingCapacity();
    this.stateValue = 'learning';
    this.lastCounter = undefined;
    this.update();
  }

  private startingCapacity(): number {
    const { initialCap, headroom } = this.options;
    // The cap starts at initialCap: the capacity that derives it.
    return Math.max(1, Math.floor(initialCap / (1 + headroom)));
  }

  private derive(): number {
    if (this.stateValue === 'no-metrics') return this.fallbackCap;
    // (Derived from the starting capacity, a small initialCap came out one higher: 1 gave a cap of 2.)
    if (this.starting && this.stateValue === 'learning') return this.options.initialCap;
    const { headroom, minCap, maxCap } = this.options;
    const capacity = this.capacityEstimate;
    return Math.min(maxCap, Math.max(minCap, capacity + Math.max(1, Math.ceil(capacity * headroom))));
  }

  private update(): void {
    const before = this.capValue;
    this.capValue = this.derive();
    if (this.capValue !== before) this.onChange();
  }
}
