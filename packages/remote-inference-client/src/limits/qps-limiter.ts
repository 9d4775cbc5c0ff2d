import { performance } from 'node:perf_hooks';
import Bottleneck from 'bottleneck';
import { Redis as IORedis, type RedisOptions } from 'ioredis';
import { LimiterUnavailableError } from '../errors.js';
import { redisOptions } from './redis-connection.js';

/** Cluster-wide limits through Redis (Bottleneck clustering on ioredis). */
export interface RedisLimitsOptions {
  /**
   * e.g. `redis://127.0.0.1:6379`, `rediss://user:password@redis.internal:6380/2`. Read by ioredis: `rediss://`
   * turns TLS on, the path is the database, and query options ioredis knows (`?family=6&connectionName=x`) apply.
   */
  url: string;
  /** Processes and hosts using the same id share one budget. */
  id: string;
  /**
   * When Redis cannot be reached: `fail-open` falls back to a local limiter of the same rate (logged once per
   * outage); `fail-closed` rejects requests with `ERR_LIMITER_UNAVAILABLE`. @default "fail-open"
   */
  onUnavailable?: 'fail-open' | 'fail-closed';
  /** Longest wait for a Redis answer before it counts as unreachable. @default 1000 (ms) */
  timeoutMs?: number;
  /**
   * ioredis options merged over what the URL gives, e.g. TLS settings for `rediss://`
   * (`{ tls: { ca, servername } }`), a password kept out of the URL, or `connectionName`. `lazyConnect`,
   * `enableOfflineQueue`, `maxRetriesPerRequest` and `connectTimeout` are the limiter's own (it fails fast; see
   * `timeoutMs`): setting them is an `ERR_INVALID_OPTIONS`. @default none
   */
  options?: RedisOptions;
}

/** A source of request permits at a rate: sync `tryTake()` on the hot path, leases refilled in the background. */
export interface PermitGate {
  /** Takes a permit if one is on hand; never waits. */
  tryTake(): boolean;
  /** Returns a permit taken by {@link tryTake} that no request used (the grant it was for failed). */
  giveBack(): void;
  /** Called when permits arrive, so the admission queue can advance. */
  onAvailable: () => void;
  /** Error to fail waiting requests with (fail-closed Redis outage), if any. */
  readonly failure: Error | undefined;
  close(): Promise<void>;
}

/** A local token bucket: `ratePerSecond`, burst of `burst` permits. For per-engine QPS (soft limit). */
export class TokenBucket implements PermitGate {
  private tokens: number;
  private lastMs = performance.now();
  private timer: NodeJS.Timeout | undefined;
  onAvailable: () => void = () => {};
  readonly failure = undefined;

  constructor(
    private readonly ratePerSecond: number,
    private readonly burst = Math.max(1, ratePerSecond / 20),
  ) {
    this.tokens = this.burst;
  }

  /** Whether a permit is on hand, without taking it (arms a wake-up when not). */
  peek(): boolean {
    const now = performance.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.lastMs) * this.ratePerSecond) / 1000);
    this.lastMs = now;
    if (this.tokens >= 1) return true;
    this.armTimer();
    return false;
  }

  tryTake(): boolean {
    if (!this.peek()) return false;
    this.tokens -= 1;
    return true;
  }

  giveBack(): void {
    this.tokens += 1;
  }

  private armTimer(): void {
    if (!this.timer) {
      const waitMs = ((1 - this.tokens) * 1000) / this.ratePerSecond;
      this.timer = setTimeout(
        () => {
          this.timer = undefined;
          this.onAvailable();
        },
        Math.max(1, waitMs),
      );
    }
  }

  async close(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
  }
}

/**
 * The global QPS limit, owned by Bottleneck but kept off the per-request path: Bottleneck admits only a few hundred
 * jobs per second per limiter (it yields with setTimeout on every operation, ~4.5 ms per job measured here), so
 * one Bottleneck job buys a lease of k permits (50 ms of budget) that we hand out locally in O(1). Bottleneck
 * spaces leases by `minTime = k / rate` — cluster-wide when it runs on Redis. (Its reservoir refresh was measured
 * too coarse: an empty reservoir waited ~235 ms for a 100 ms refresh interval.)
 */
export class LeasedRateLimiter implements PermitGate {
  private permits = 0;
  private leasing = false;
  private closed = false;
  private lastDemandMs = 0;
  private limiter: Bottleneck;
  private local: Bottleneck | undefined;
  /** The next try of a Redis lease while Redis is unreachable. */
  private recovering: NodeJS.Timeout | undefined;
  /** Permits per lease. */
  readonly leaseSize: number;
  private readonly minTimeMs: number;
  failure: Error | undefined;
  onAvailable: () => void = () => {};
  /** Leases taken so far (each costs one Bottleneck job). */
  leases = 0;

  constructor(
    ratePerSecond: number,
    private readonly redis: RedisLimitsOptions | undefined,
  ) {
    this.leaseSize = Math.max(1, Math.round(ratePerSecond * 0.05));
    this.minTimeMs = (this.leaseSize * 1000) / ratePerSecond;
    this.limiter = this.create(redis);
    if (redis) this.limiter.on('error', (error: unknown) => this.onRedisError(error));
  }

  /**
   * A Redis that restarted lost Bottleneck's settings key, and Bottleneck does not write it again (every job then
   * fails with SETTINGS_KEY_NOT_FOUND): a new limiter on the same id writes it (`clearDatastore: false` keeps what
   * other processes wrote since).
   */
  private renewLimiter(): void {
    const old = this.limiter;
    this.limiter = this.create(this.redis);
    this.limiter.on('error', (error: unknown) => this.onRedisError(error));
    void old.disconnect(false).catch(() => {});
  }

  private create(redis: RedisLimitsOptions | undefined): Bottleneck {
    const settings: Bottleneck.ConstructorOptions = { maxConcurrent: null, minTime: this.minTimeMs };
    if (!redis) return new Bottleneck(settings);
    return new Bottleneck({
      ...settings,
      id: `remote-inference-client:${redis.id}`,
      datastore: 'ioredis',
      // Bottleneck would `require('ioredis')` from its own folder, which a strict pnpm layout does not resolve.
      Redis: IORedis,
      clearDatastore: false,
      // Leases are spaced, never held: a crashed process loses at most one lease of budget.
      clientOptions: redisOptions(redis),
    } as Bottleneck.ConstructorOptions);
  }

  private onRedisError(error: unknown): void {
    if (this.closed) return;
    const mode = this.redis?.onUnavailable ?? 'fail-open';
    if (mode === 'fail-closed') {
      this.failure = new LimiterUnavailableError(
        `Cluster limiter unreachable: ${(error as Error)?.message ?? error}`,
        error,
      );
      this.onAvailable();
    } else if (!this.local) {
      process.emitWarning(
        `remote-inference-client: Redis limiter unreachable (${(error as Error)?.message}); using a local limiter`,
      );
      this.local = this.create(undefined);
    }
    this.recoverLater();
  }

  /**
   * While Redis is unreachable (fail-open's local limiter, or fail-closed's error), one Redis lease a second: the
   * first that is granted ends the outage. Before, neither mode ever ended: fail-closed even stopped leasing (the
   * scheduler refuses before it asks for a permit), so every request failed long after Redis was back.
   */
  private recoverLater(): void {
    if (this.recovering || this.closed) return;
    this.recovering = setTimeout(() => {
      this.recovering = undefined;
      if (this.closed || (this.local === undefined && this.failure === undefined)) return;
      const { result, done } = this.bounded(this.limiter.schedule(async () => this.leaseSize));
      result
        .then(
          (granted) => {
            this.leases++;
            this.permits += granted;
            this.failure = undefined;
            this.local = undefined;
            if (!this.closed) this.onAvailable();
          },
          (error: unknown) => {
            if (String((error as Error)?.message).includes('SETTINGS_KEY_NOT_FOUND')) this.renewLimiter();
            this.recoverLater();
          },
        )
        .finally(done);
    }, 1000);
    this.recovering.unref();
  }

  /** A Redis job bounded by the limiter's timeout (Bottleneck's own may wait for ever on a silent Redis). */
  private bounded(job: Promise<number>): { result: Promise<number>; done: () => void } {
    if (!this.redis) return { result: job, done: () => {} };
    const timeoutMs = (this.redis.timeoutMs ?? 1000) + this.minTimeMs * 2;
    let timer: NodeJS.Timeout | undefined;
    const result = Promise.race([
      job,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`no answer from Redis within ${Math.round(timeoutMs)} ms`)),
          timeoutMs,
        );
      }),
    ]);
    return { result, done: () => clearTimeout(timer) };
  }

  tryTake(): boolean {
    this.lastDemandMs = performance.now();
    this.lease();
    if (this.permits > 0) {
      this.permits--;
      return true;
    }
    return false;
  }

  giveBack(): void {
    this.permits++;
  }

  private lease(): void {
    if (this.leasing || this.closed || this.permits >= this.leaseSize) return;
    this.leasing = true;
    const limiter = this.local ?? this.limiter;
    const { result, done } = this.bounded(limiter.schedule(async () => this.leaseSize));
    result
      .then((granted) => {
        this.leases++;
        this.permits += granted;
        if (limiter === this.limiter) this.failure = undefined;
      })
      .catch((error: unknown) => {
        if (this.redis) this.onRedisError(error);
      })
      .finally(() => {
        done();
        this.leasing = false;
        if (this.closed) return;
        this.onAvailable();
        // Keep one lease pending while there is demand, so Bottleneck's minTime clock keeps running.
        if (performance.now() - this.lastDemandMs < 100) this.lease();
      });
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.recovering);
    await Promise.allSettled([this.limiter.disconnect(false), this.local?.disconnect(false)]);
  }
}
