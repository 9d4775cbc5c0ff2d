import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Server as NetServer, Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { type Engine, InFlightGauge } from './engine.js';
import { EngineHost, type EngineStats } from './engine-host.js';
import { FakeVllmConfigError } from './errors.js';
import type { FaultInjector } from './faults.js';
import { type NodeConnectionControl, NodeResponseWriter } from './http/node-response-writer.js';
import { NodeRouteRequest } from './http/node-route-request.js';
import type { CapacityOptions, LatencyOptions, ResolvedEngineOptions } from './options.js';
import type { FakeRoute } from './routes/route.js';

export type { EngineStats } from './engine-host.js';
export { serverTiming, TIMING_HEADERS } from './routes/generation-route.js';

/** Per-socket bookkeeping for keep-alive emulation and the idle-close race. */
interface ConnectionState {
  inFlight: number;
  requests: number;
  idleTimer: NodeJS.Timeout | undefined;
  /** An `idle-close-race` header asked for this socket to be closed this long after it next goes idle. */
  forcedRaceMs: number | undefined;
}
const connectionStates = new WeakMap<Socket, ConnectionState>();

/**
 * One fake engine: an HTTP/1.1 server on its own port with its own scheduler. Speaks vLLM's OpenAI-compatible
 * API, its RL control plane, `/metrics`, and injects faults by header or by profile.
 */
export class EngineServer {
  /** The engine, its faults, state and routes; this server is its node:http transport. */
  readonly engineHost: EngineHost;
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  private connectionsTotal = 0;
  private port = 0;
  private refusing: NodeJS.Timeout | undefined;
  private closing = false;
  private sharedListener = false;
  private restarting = false;

  constructor(
    readonly options: ResolvedEngineOptions,
    readonly host: string,
    gauge = new InFlightGauge(),
    extraRoutes: readonly FakeRoute[] = [],
  ) {
    this.engineHost = new EngineHost(options, gauge, extraRoutes);
    const server = this;
    this.engineHost.transport = {
      get url() {
        return server.url;
      },
      get connectionsOpen() {
        return server.sockets.size;
      },
      get connectionsTotal() {
        return server.connectionsTotal;
      },
    };
    // uvicorn-like keep-alive: Node's own idle timer would also send a `Keep-Alive: timeout=` hint, which
    // uvicorn never does; we disable it (0) and run our own idle close below.
    this.server = createServer({ noDelay: true, requestTimeout: 0, headersTimeout: 60_000, keepAliveTimeout: 0 });
    this.server.keepAliveTimeout = 0;
    this.server.on('connection', (socket) => this.onConnection(socket));
    this.server.on('request', (request, response) => this.onRequest(request, response));
    this.server.on('clientError', (_error, socket) => socket.destroy());
  }

  /** Listens on `port` (0: the kernel picks a free port, so parallel starts never race). */
  async listen(port: number, shared?: Server | NetServer): Promise<string> {
    // A shared listening socket (handed over by the parent process) lets several processes accept on one port.
    this.sharedListener = shared !== undefined;
    if (shared) this.server.listen(shared);
    else this.server.listen({ port, host: this.host, backlog: this.options.backlog });
    await once(this.server, 'listening');
    this.port = (this.server.address() as AddressInfo).port;
    this.engineHost.startedAtMs = performance.now();
    if (this.options.startupMs > 0 && !this.sharedListener) {
      // The port is known (the kernel chose it) and reported at once; connects are refused until the "engine is
      // built", as vLLM's uvicorn starts only then. A shared socket keeps listening in the parent: not refused.
      this.refuseFor(this.options.startupMs);
      this.engineHost.startedAtMs += this.options.startupMs;
    }
    return this.url;
  }

  get url(): string {
    const host = this.host.includes(':') ? `[${this.host}]` : this.host;
    return `http://${host}:${this.port}`;
  }

  /** Replaces the fault profile live. */
  setFaultProfile(profile: Parameters<FaultInjector['setProfile']>[0]): void {
    this.injector.setProfile(profile);
  }

  /** Changes the latency model live. */
  setLatency(latency: LatencyOptions): void {
    this.engine.setLatency(latency);
  }

  /** Changes the engine's capacity live (`maxNumSeqs`, `kvCacheBlocks`). */
  setCapacity(capacity: CapacityOptions): void {
    this.engine.setCapacity(capacity);
  }

  /**
   * Restarts the engine as a crashed vLLM comes back: every open connection is reset (TCP RST: in-flight streams
   * end mid-way, queued requests get no answer), connects are refused for `downMs`, then the engine serves again
   * on the same port with an empty prefix cache and nothing in flight. Resolves at once (while it is down).
   */
  restart(downMs: number): void {
    if (this.closing) throw new Error(`Engine ${this.url} is closing: it cannot restart`);
    if (this.sharedListener) {
      throw new FakeVllmConfigError(
        'Cannot restart an engine served on a shared port (`sharePort`): its listening socket belongs to every process',
        { field: 'sharePort' },
      );
    }
    this.engineHost.restart();
    this.restarting = true;
    if (this.refusing) clearTimeout(this.refusing);
    this.refusing = undefined;
    if (this.server.listening) this.server.close();
    for (const socket of this.sockets) socket.resetAndDestroy();
    this.refusing = setTimeout(() => {
      this.refusing = undefined;
      this.restarting = false;
      if (this.closing) return;
      this.engineHost.startedAtMs = performance.now();
      this.server.listen({ port: this.port, host: this.host, backlog: this.options.backlog });
    }, downMs);
  }

  /** The scheduler. */
  get engine(): Engine {
    return this.engineHost.engine;
  }

  /** The fault injector. */
  get injector(): FaultInjector {
    return this.engineHost.injector;
  }

  /** This engine's ground truth. */
  stats(): EngineStats {
    return { ...this.engineHost.stats(), restarting: this.restarting };
  }

  /** Resets the high-water marks (`maxRunning`, `maxConcurrent`) so a test can measure one phase. */
  resetHighWaterMarks(): void {
    this.engine.counters.maxRunning = this.engine.counters.running;
    this.engine.counters.maxInFlight = this.engine.inFlight;
  }

  /**
   * Stops accepting connections. `drain` lets in-flight requests finish (up to `drainTimeoutMs`), `abort` ends
   * them with `finish_reason: "abort"`. Then every socket is closed.
   */
  async close(mode: 'drain' | 'abort' = 'abort', drainTimeoutMs = 30_000): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    if (this.refusing) clearTimeout(this.refusing);
    const closed = this.server.listening ? new Promise((resolve) => this.server.close(resolve)) : Promise.resolve();
    if (mode === 'drain') {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        this.engine.whenIdle(),
        new Promise((resolve) => {
          timer = setTimeout(resolve, drainTimeoutMs);
        }),
      ]);
      clearTimeout(timer);
    }
    this.engine.abortAll();
    this.engine.stop();
    for (const socket of this.sockets) socket.destroy();
    await closed;
  }

  private onConnection(socket: Socket): void {
    this.connectionsTotal++;
    this.sockets.add(socket);
    connectionStates.set(socket, { inFlight: 0, requests: 0, idleTimer: undefined, forcedRaceMs: undefined });
    this.armIdleClose(socket);
    socket.on('close', () => {
      this.sockets.delete(socket);
      const state = connectionStates.get(socket);
      if (state?.idleTimer) clearTimeout(state.idleTimer);
    });
  }

  private armIdleClose(socket: Socket): void {
    const state = connectionStates.get(socket);
    if (!state || state.inFlight > 0 || socket.destroyed) return;
    if (state.idleTimer) clearTimeout(state.idleTimer);
    const keepAlive = this.options.keepAliveTimeoutMs;
    let delay = keepAlive;
    let race = false;
    const rate = this.injector.idleCloseRate();
    if (state.forcedRaceMs !== undefined) {
      delay = state.forcedRaceMs;
      state.forcedRaceMs = undefined;
      race = true;
    } else if (rate > 0 && state.requests > 0 && this.injector.roll() < rate) {
      // The race real fleets see: the server closes an idle socket at a moment the client cannot predict.
      delay = this.injector.roll() * keepAlive;
      race = true;
    }
    state.idleTimer = setTimeout(() => {
      state.idleTimer = undefined;
      if (state.inFlight > 0) return;
      if (race) this.injector.count('idle-close-race');
      socket.destroy();
    }, delay);
  }

  private onRequest(request: IncomingMessage, response: ServerResponse): void {
    const socket = request.socket;
    const state = connectionStates.get(socket);
    if (state) {
      if (state.idleTimer) clearTimeout(state.idleTimer);
      state.idleTimer = undefined;
      state.inFlight++;
      state.requests++;
      const rate = this.injector.idleCloseRate();
      if (state.requests > 1 && rate > 0 && this.injector.roll() < rate) {
        // The other half of the race: the request arrives on a reused socket just as the server closes it.
        this.engineHost.requests++;
        this.injector.count('idle-close-race');
        socket.destroy();
        return;
      }
      response.on('close', () => {
        state.inFlight--;
        this.armIdleClose(socket);
      });
    }
    if (this.options.keepAliveHint) {
      response.setHeader('keep-alive', `timeout=${Math.floor(this.options.keepAliveTimeoutMs / 1000)}`);
    }
    const routeRequest = new NodeRouteRequest(request, this.options.requestBodyTimeoutMs);
    const writer = new NodeResponseWriter(response, this.connectionControl);
    void this.engineHost.dispatch(routeRequest, writer).finally(() => routeRequest.discardUnreadBody());
  }

  private readonly connectionControl: NodeConnectionControl = {
    closeWhenIdle: (response, delayMs) => {
      const state = response.socket ? connectionStates.get(response.socket) : undefined;
      if (state) state.forcedRaceMs = delayMs;
    },
    refuseFor: (windowMs) => this.refuseFor(windowMs),
  };

  /** Stops listening for `windowMs` (new connects get ECONNREFUSED), then listens again on the same port. */
  private refuseFor(windowMs: number): void {
    if (this.refusing || this.closing || this.sharedListener) return;
    this.server.close();
    this.refusing = setTimeout(() => {
      this.refusing = undefined;
      if (this.closing) return;
      this.server.listen({ port: this.port, host: this.host, backlog: this.options.backlog });
    }, windowMs);
  }
}
