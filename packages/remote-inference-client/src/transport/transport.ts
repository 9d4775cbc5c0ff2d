import { threadId } from 'node:worker_threads';
import { ClientClosedError } from '../errors.js';
import { ConnectionPool, type PoolSettings, type PoolStats } from './connection-pool.js';

/**
 * The connection pools of one event loop, keyed by engine origin. Clients with the same transport settings in
 * the same thread share one (reference-counted); a worker thread has its own, because module state is per thread
 * in Node, and terminating the worker destroys its sockets without touching the main thread's.
 */
export class Transport {
  private readonly pools = new Map<string, ConnectionPool>();
  private references = 0;
  private released = false;
  private sourceOffset = 0;

  constructor(
    readonly settings: PoolSettings,
    private readonly key: string,
  ) {}

  /** The pool of an engine origin (created on first use). */
  pool(origin: string): ConnectionPool {
    let pool = this.pools.get(origin);
    if (!pool) {
      // After the last release nothing would close it: a call after close() used to open a connection for good.
      if (this.released) throw new ClientClosedError();
      // Each engine starts at a different source IP so that small fleets still spread over all of them.
      pool = new ConnectionPool(origin, this.settings, this.sourceOffset++);
      this.pools.set(origin, pool);
    }
    return pool;
  }

  /** Closes and forgets the pool of an origin (an engine removed from the fleet). */
  async drop(origin: string): Promise<void> {
    const pool = this.pools.get(origin);
    if (!pool) return;
    this.pools.delete(origin);
    await pool.close();
  }

  /** Closes every idle connection of every engine. Returns how many were closed. */
  evictIdle(): number {
    let evicted = 0;
    for (const pool of this.pools.values()) evicted += pool.evictIdle();
    return evicted;
  }

  /** Pool counters by origin. */
  stats(): Map<string, PoolStats> {
    return new Map([...this.pools].map(([origin, pool]) => [origin, pool.stats()]));
  }

  /** @internal */
  retain(): this {
    this.references++;
    return this;
  }

  /** Drops one reference; the last one closes every connection. */
  async release(): Promise<void> {
    this.references--;
    if (this.references > 0) return;
    shared.delete(this.key);
    this.released = true;
    await Promise.all([...this.pools.values()].map((pool) => pool.close()));
    this.pools.clear();
  }
}

const shared = new Map<string, Transport>();

/** The shared transport of this event loop for these settings (one per thread, created lazily). */
export function sharedTransport(settings: PoolSettings): Transport {
  const key = `${threadId}:${JSON.stringify(settings)}`;
  let transport = shared.get(key);
  if (!transport) {
    transport = new Transport(settings, key);
    shared.set(key, transport);
  }
  return transport.retain();
}
