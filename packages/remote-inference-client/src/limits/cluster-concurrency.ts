import { randomUUID } from 'node:crypto';
import { Redis as IORedis } from 'ioredis';
import { LimiterUnavailableError } from '../errors.js';
import type { RedisLimitsOptions } from './qps-limiter.js';
import { redisOptions } from './redis-connection.js';

// Grants up to ARGV[2] slots to process ARGV[1] while the live holders' total stays <= ARGV[3]. Holders whose
// heartbeat key (ARGV[4] .. id) has expired are evicted first: a crashed process's slots come back.
const ACQUIRE = `
redis.call('SET', ARGV[4] .. ARGV[1], '1', 'PX', ARGV[5])
local held = redis.call('HGETALL', KEYS[1])
local total = 0
for i = 1, #held, 2 do
  if redis.call('EXISTS', ARGV[4] .. held[i]) == 0 then
    redis.call('HDEL', KEYS[1], held[i])
  else
    total = total + tonumber(held[i + 1])
  end
end
local grant = math.min(tonumber(ARGV[2]), tonumber(ARGV[3]) - total)
if grant <= 0 then return 0 end
redis.call('HINCRBY', KEYS[1], ARGV[1], grant)
return grant`;

const RELEASE = `
local left = redis.call('HINCRBY', KEYS[1], ARGV[1], -tonumber(ARGV[2]))
if left <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
return left`;

/**
 * A concurrency budget shared by every process using the same Redis id. Each process leases slots in batches
 * (one Redis round trip buys many requests) and the scheduler admits while in-flight < slots held; surplus slots
 * go back when idle. A heartbeat key with a TTL marks the holder alive; when a process dies its slots return
 * within `heartbeatTtlMs`.
 */
export class ClusterConcurrency {
  private readonly redis: IORedis;
  private readonly id = randomUUID();
  private readonly key: string;
  private readonly alivePrefix: string;
  private readonly batch: number;
  private readonly heartbeatTtlMs = 3000;
  private heartbeat: NodeJS.Timeout;
  private pending = false;
  private closed = false;
  private local = false;
  /** Slots this process holds. */
  held = 0;
  failure: Error | undefined;
  onAvailable: () => void = () => {};

  constructor(
    private readonly max: number,
    private readonly options: RedisLimitsOptions,
  ) {
    this.redis = new IORedis(redisOptions(options));
    this.redis.on('error', (error: Error) => this.onRedisError(error));
    this.key = `remote-inference-client:${options.id}:concurrency`;
    this.alivePrefix = `remote-inference-client:${options.id}:alive:`;
    this.batch = Math.max(1, Math.min(64, Math.ceil(max / 32)));
    this.heartbeat = setInterval(() => {
      if (this.held > 0 && !this.local) {
        this.redis
          .set(this.alivePrefix + this.id, '1', 'PX', this.heartbeatTtlMs)
          .catch((error: Error) => this.onRedisError(error));
      }
    }, this.heartbeatTtlMs / 3);
    this.heartbeat.unref();
  }

  private onRedisError(error: Error): void {
    if (this.closed) return;
    if ((this.options.onUnavailable ?? 'fail-open') === 'fail-closed') {
      this.failure = new LimiterUnavailableError(`Cluster concurrency limiter unreachable: ${error.message}`, error);
    } else if (!this.local) {
      // Fail open: this process alone may use the whole budget until Redis is back.
      this.local = true;
      this.held = this.max;
    }
    this.onAvailable();
  }

  /** Asks Redis for more slots when `inFlight + queued` exceeds what is held (one request at a time). */
  want(demand: number): void {
    if (this.pending || this.closed || this.local || demand <= this.held) return;
    this.pending = true;
    if (this.redis.status !== 'ready') {
      // Commands are not queued while connecting (so an outage fails fast): wait for the connection, bounded.
      const timer = setTimeout(() => {
        this.pending = false;
        this.onRedisError(new Error(`not connected within ${this.options.timeoutMs ?? 1000} ms`));
      }, this.options.timeoutMs ?? 1000);
      this.redis.once('ready', () => {
        clearTimeout(timer);
        this.pending = false;
        this.want(demand);
      });
      return;
    }
    const ask = Math.min(this.batch, demand - this.held);
    (
      this.redis.eval(
        ACQUIRE,
        1,
        this.key,
        this.id,
        ask,
        this.max,
        this.alivePrefix,
        this.heartbeatTtlMs,
      ) as Promise<number>
    )
      .then((granted) => {
        this.held += Number(granted);
        this.failure = undefined;
        // Nothing granted: the budget is in use elsewhere; ask again shortly.
        if (Number(granted) === 0) {
          setTimeout(() => {
            if (!this.closed) this.onAvailable();
          }, 20).unref();
        }
      })
      .catch((error: Error) => this.onRedisError(error))
      .finally(() => {
        this.pending = false;
        if (!this.closed) this.onAvailable();
      });
  }

  /** Gives back slots beyond what `inFlight + queued` needs, keeping one batch of headroom. */
  trim(demand: number): void {
    if (this.local || this.closed) return;
    const surplus = this.held - demand - this.batch;
    // Hysteresis: only give back a whole batch or more, so a busy process does not pay a round trip per request.
    if (surplus < this.batch) return;
    this.held -= surplus;
    this.redis.eval(RELEASE, 1, this.key, this.id, surplus).catch((error: Error) => this.onRedisError(error));
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.heartbeat);
    if (this.held > 0 && !this.local) {
      await (this.redis.eval(RELEASE, 1, this.key, this.id, this.held) as Promise<unknown>).catch(() => undefined);
    }
    this.redis.disconnect();
  }
}
