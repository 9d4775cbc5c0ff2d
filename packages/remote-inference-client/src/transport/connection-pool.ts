import { performance } from 'node:perf_hooks';
import { Client } from 'undici';
import { AbortError, PortsExhaustedError } from '../errors.js';
import type { PoolStats } from './pool-stats.js';

/** Transport settings shared by every engine's pool. */
export interface PoolSettings {
  maxConnectionsPerEngine: number;
  maxConnecting: number;
  keepAliveTimeoutMs: number;
  keepAliveTimeoutThresholdMs: number;
  keepAliveMaxTimeoutMs: number;
  connectTimeoutMs: number;
  /** Local addresses new connections bind to, in turn; empty: the kernel chooses. */
  sourceIps: readonly string[];
  /**
   * The ceiling is the kernel's port budget: reaching it fails at once with ERR_PORTS_EXHAUSTED instead of
   * queueing (a wait for a port would hide in latency). False when the user chose a lower ceiling.
   */
  ceilingIsPortBudget: boolean;
}

/** One TCP connection, as one undici `Client` with pipelining 1. */
export class PooledConnection {
  idleSinceMs = 0;
  served = 0;
  dead = false;
  /** Handed to a request and not yet released. */
  busy = false;
  /** On the idle stack (a closed one stays there until popped, then becomes a spare). */
  idle = false;
  /** `Client.destroy()` was called: never reused. */
  destroyed = false;
  /** Its connect ended (connected or failed): it no longer counts in the pool's `connecting`. */
  connected = false;
  /** `performance.now()` when TCP connected. */
  connectedAtMs: number | undefined;

  constructor(
    readonly client: Client,
    readonly localAddress: string | undefined,
  ) {}

  /** Makes a spare (its socket closed, its `Client` kept) ready for a new socket. */
  reuse(): void {
    this.idleSinceMs = 0;
    this.served = 0;
    this.dead = false;
    this.busy = false;
    this.connected = false;
    this.connectedAtMs = undefined;
  }
}

interface Waiter {
  resolve: (connection: PooledConnection) => void;
  reject: (error: Error) => void;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
}

export type { PoolStats } from './pool-stats.js';

/** Who asks for a connection: a wait for one ends when the signal it makes (only when a wait begins) aborts. */
export interface ConnectionClaim {
  waitSignal(): AbortSignal | undefined;
}

/** Margin below the client keep-alive at which an idle socket is no longer trusted (timer skew, GC pauses). */
const STALE_MARGIN_MS = 250;

/**
 * The reason handed to `Client.destroy()` for connections this pool closes itself (idle, stale, not reusable): none
 * has a request on it, so nobody sees it. One shared instance because undici builds a `ClientDestroyedError` per
 * destroy otherwise and Node formats its stack when destroying the socket: ~60 µs a connection, measured in the
 * RL-burst profile (bench/rl-burst.mjs), where every socket closes after the idle gap.
 */
const CLOSED_BY_POOL = new Error('Connection closed by the pool (idle, stale or not reusable)');
const ignore = (): void => {};

/**
 * The connections to one engine. Picking an idle connection is O(1): a stack, most-recently-used on top (the
 * socket least likely to have been closed by the server). undici's `Pool` instead scans every connection per
 * request, which costs ~1 s of client time for a 10,000-request burst (measured, see measured-facts).
 * New connections are paced: at most `maxConnecting` connects in flight, so a burst of thousands cannot overflow
 * the server's accept queue (dropped SYNs come back after 1 s and 3 s and look like TTFT).
 */
export class ConnectionPool {
  private readonly idle: PooledConnection[] = [];
  private readonly all = new Set<PooledConnection>();
  /**
   * Connections whose socket closed while idle (undici's keep-alive timer or the server), their `Client` kept: the
   * next new connection reuses one instead of building a `Client` (the pattern of an RL step: every socket closes
   * during training, then thousands connect again at once). They hold no socket. Kept by the source address they
   * bind: the round robin picks the address, then a spare of it (a spare popped whatever its address kept every new
   * connection on the one address that happened to be on top). Open and spare together never exceed the most
   * connections this pool had open: a new `Client` retires a spare of another address.
   */
  private readonly spares = new Map<string | undefined, PooledConnection[]>();
  private spareCount = 0;
  private readonly waiters: Waiter[] = [];
  private waitersHead = 0;
  private connecting = 0;
  private busy = 0;
  private sourceIndex = 0;
  private closed = false;
  readonly counters = { opened: 0, reused: 0, staleDiscarded: 0, connectErrors: 0 };

  constructor(
    readonly origin: string,
    private readonly settings: PoolSettings,
    sourceIpOffset = 0,
  ) {
    this.sourceIndex = sourceIpOffset;
  }

  /**
   * A connection for one request: an idle one if any is fresh, else a new one, else wait in FIFO order, until the
   * claim's signal aborts (asked for only when a wait begins: most acquisitions never wait).
   */
  acquire(claim?: ConnectionClaim, preferNew = false): PooledConnection | Promise<PooledConnection> {
    if (this.closed) return Promise.reject(new AbortError('The connection pool is closed', { engine: this.origin }));
    // `preferNew`: a re-send after a stale socket goes on a new connection when one can be opened now.
    const connection = preferNew ? (this.tryCreate() ?? this.takeIdle()) : (this.takeIdle() ?? this.tryCreate());
    if (connection) {
      this.busy++;
      connection.busy = true;
      return connection;
    }
    if (this.settings.ceilingIsPortBudget && this.all.size >= this.settings.maxConnectionsPerEngine) {
      return Promise.reject(
        new PortsExhaustedError({
          engine: this.origin,
          hint: `All ${this.settings.maxConnectionsPerEngine} connections the port budget allows to this engine are busy: add source IPs (\`sourceIps\`) or spread over more processes.`,
        }),
      );
    }
    const signal = claim?.waitSignal();
    return new Promise<PooledConnection>((resolve, reject) => {
      const waiter: Waiter = { resolve, reject, signal, onAbort: undefined };
      if (signal) {
        if (signal.aborted) {
          reject(
            new AbortError('Aborted while waiting for a connection', { engine: this.origin, cause: signal.reason }),
          );
          return;
        }
        waiter.onAbort = () => {
          const index = this.waiters.indexOf(waiter, this.waitersHead);
          if (index !== -1) this.waiters.splice(index, 1);
          reject(
            new AbortError('Aborted while waiting for a connection', { engine: this.origin, cause: signal.reason }),
          );
        };
        signal.addEventListener('abort', waiter.onAbort, { once: true });
      }
      this.waiters.push(waiter);
    });
  }

  /** Returns a connection after its response ended. `reusable` is false when the request failed or was aborted. */
  release(connection: PooledConnection, reusable: boolean): void {
    this.busy--;
    connection.busy = false;
    connection.served++;
    if (!reusable || connection.dead || this.closed) {
      this.discard(connection);
    } else if (!this.handToWaiter(connection)) {
      connection.idleSinceMs = performance.now();
      connection.idle = true;
      this.idle.push(connection);
    }
    this.pump();
  }

  /** Closes every idle connection (phase changes, long idle); busy ones finish their request first. */
  evictIdle(): number {
    let evicted = 0;
    for (const connection of this.idle.splice(0)) {
      connection.idle = false;
      if (connection.dead) {
        this.keepSpare(connection);
        continue;
      }
      evicted++;
      this.discard(connection);
    }
    return evicted;
  }

  stats(): PoolStats {
    let idle = 0;
    // A closed connection stays on the idle stack until popped; it is a spare already.
    let spare = this.spareCount;
    for (const connection of this.idle) {
      if (!connection.dead) idle++;
      else if (!connection.destroyed) spare++;
    }
    return {
      open: this.all.size,
      idle,
      busy: this.busy,
      connecting: this.connecting,
      spare,
      waiting: this.waiters.length - this.waitersHead,
      ...this.counters,
    };
  }

  /** Destroys every connection and rejects waiters. */
  async close(): Promise<void> {
    this.closed = true;
    for (let index = this.waitersHead; index < this.waiters.length; index++) {
      const waiter = this.waiters[index]!;
      if (waiter.onAbort) waiter.signal?.removeEventListener('abort', waiter.onAbort);
      waiter.reject(new AbortError('The client was closed', { engine: this.origin }));
    }
    this.waiters.length = 0;
    this.waitersHead = 0;
    for (const connection of this.idle) if (connection.dead && !connection.destroyed) this.pushSpare(connection);
    this.idle.length = 0;
    const spares = [...this.spares.values()].flat();
    this.spares.clear();
    this.spareCount = 0;
    const clients = [...this.all, ...spares].map((connection) => connection.client);
    this.all.clear();
    await Promise.all(clients.map((client) => client.destroy().catch(ignore)));
  }

  private takeIdle(): PooledConnection | undefined {
    const now = performance.now();
    const trustedForMs = this.settings.keepAliveTimeoutMs - STALE_MARGIN_MS;
    while (this.idle.length > 0) {
      const connection = this.idle.pop()!;
      connection.idle = false;
      if (connection.dead) {
        this.keepSpare(connection);
        continue;
      }
      // A socket idle close to our keep-alive may be closed by undici's timer or the server at any moment.
      if (now - connection.idleSinceMs >= trustedForMs) {
        this.counters.staleDiscarded++;
        this.discard(connection);
        continue;
      }
      this.counters.reused++;
      return connection;
    }
    return undefined;
  }

  private tryCreate(): PooledConnection | undefined {
    if (this.all.size >= this.settings.maxConnectionsPerEngine || this.connecting >= this.settings.maxConnecting) {
      return undefined;
    }
    const { sourceIps } = this.settings;
    const localAddress = sourceIps.length > 0 ? sourceIps[this.sourceIndex++ % sourceIps.length] : undefined;
    const spare = this.spares.get(localAddress)?.pop();
    if (spare) {
      this.spareCount--;
      spare.reuse();
      this.all.add(spare);
      this.connecting++;
      this.counters.opened++;
      return spare;
    }
    this.retireSpare();
    const settings = this.settings;
    const client = new Client(this.origin, {
      pipelining: 1,
      keepAliveTimeout: settings.keepAliveTimeoutMs,
      keepAliveTimeoutThreshold: settings.keepAliveTimeoutThresholdMs,
      keepAliveMaxTimeout: settings.keepAliveMaxTimeoutMs,
      connectTimeout: settings.connectTimeoutMs,
      // Our own per-request timeouts replace undici's 300 s defaults, which would kill long generations.
      headersTimeout: 0,
      bodyTimeout: 0,
      // `localAddress` must be a Client option: inside `connect: {}` undici's connector overrides it.
      ...(localAddress === undefined ? {} : { localAddress }),
    });
    const connection = new PooledConnection(client, localAddress);
    this.all.add(connection);
    this.connecting++;
    this.counters.opened++;
    const connectDone = () => {
      if (this.connectEnded(connection)) this.pump();
    };
    client.on('connect', () => {
      connection.connectedAtMs = performance.now();
      connectDone();
    });
    client.on('connectionError', () => {
      this.counters.connectErrors++;
      connection.dead = true;
      connectDone();
    });
    client.on('disconnect', () => {
      // undici's idle timer, the server's close, or an error: never hand this connection out again. A connection
      // handed to a request is left to undici, which fails that request with the socket's own error (a stale
      // socket, retried) or sends it on a fresh socket; destroying it here instead turned the race into
      // UND_ERR_DESTROYED, which is not retried (seen against real uvicorn). release() discards it afterwards.
      connection.dead = true;
      connectDone();
      if (!connection.busy && this.all.delete(connection) && !connection.idle) this.keepSpare(connection);
    });
    return connection;
  }

  /** Counts a connection's connect as over, once. */
  private connectEnded(connection: PooledConnection): boolean {
    if (connection.connected) return false;
    connection.connected = true;
    this.connecting--;
    return true;
  }

  private discard(connection: PooledConnection): void {
    connection.dead = true;
    // Destroyed while connecting (an abort or a deadline during the connect): undici emits no event for it, so
    // its connect ends here, or it would hold a place under `maxConnecting` for good.
    this.connectEnded(connection);
    if (this.all.delete(connection)) {
      connection.destroyed = true;
      connection.client.destroy(CLOSED_BY_POOL, ignore);
    }
  }

  /** A connection whose socket closed while nobody used it: its `Client` waits for the next new connection. */
  private keepSpare(connection: PooledConnection): void {
    if (connection.destroyed) return;
    if (this.closed) {
      connection.destroyed = true;
      connection.client.destroy(CLOSED_BY_POOL, ignore);
    } else {
      this.pushSpare(connection);
    }
  }

  /** Destroys one spare (of another address than the one wanted): a new `Client` takes its place. */
  private retireSpare(): void {
    if (this.spareCount === 0) return;
    for (const list of this.spares.values()) {
      const spare = list.pop();
      if (!spare) continue;
      this.spareCount--;
      spare.destroyed = true;
      spare.client.destroy(CLOSED_BY_POOL, ignore);
      return;
    }
  }

  private pushSpare(connection: PooledConnection): void {
    let list = this.spares.get(connection.localAddress);
    if (!list) {
      list = [];
      this.spares.set(connection.localAddress, list);
    }
    list.push(connection);
    this.spareCount++;
  }

  private handToWaiter(connection: PooledConnection): boolean {
    if (this.waitersHead >= this.waiters.length) return false;
    const waiter = this.waiters[this.waitersHead++]!;
    if (this.waitersHead > 1024 && this.waitersHead * 2 > this.waiters.length) {
      this.waiters.splice(0, this.waitersHead);
      this.waitersHead = 0;
    }
    if (waiter.onAbort) waiter.signal?.removeEventListener('abort', waiter.onAbort);
    this.busy++;
    connection.busy = true;
    waiter.resolve(connection);
    return true;
  }

  private pump(): void {
    while (this.waitersHead < this.waiters.length) {
      const connection = this.takeIdle() ?? this.tryCreate();
      if (!connection) return;
      this.handToWaiter(connection);
    }
  }
}
