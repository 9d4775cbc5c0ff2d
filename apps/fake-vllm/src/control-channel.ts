import type { IncomingMessage, Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { type WebSocket, WebSocketServer } from 'ws';
import type { FakeVllmStats } from './engine-group.js';
import type { FaultProfile } from './faults.js';
import type { CapacityOptions, LatencyOptions, RestartOptions } from './options.js';

/** What a control channel can do; `startFakeVllm(...).control` implements it in-process. */
export interface FakeVllmControl {
  /** The WebSocket URL of the control channel, when enabled. */
  readonly url: string | undefined;
  /** Ground truth of every engine. */
  stats(): Promise<FakeVllmStats>;
  /** Replaces the fault profile of every engine, or of engine `engine` (index). */
  setFaultProfile(profile: FaultProfile | string, engine?: number): Promise<void>;
  /** Changes the latency model live, of every engine or of engine `engine` (e.g. half speed: double `itlMs`). */
  setLatency(latency: LatencyOptions, engine?: number): Promise<void>;
  /** Changes running slots (`maxNumSeqs`) or the KV block pool (`kvCacheBlocks`) live, of every engine or one. */
  setCapacity(capacity: CapacityOptions, engine?: number): Promise<void>;
  /**
   * Restarts engine `engine` (every engine when omitted) as a crashed vLLM comes back: open connections reset,
   * connects refused for `downMs`, then it serves with an empty prefix cache. Resolves once it is down.
   */
  restartEngine(restart?: RestartOptions, engine?: number): Promise<void>;
  /** Restarts the high-water marks (max running / max concurrent) for a new measurement phase. */
  resetHighWaterMarks(): Promise<void>;
}

/** Requests accepted on the control channel (JSON text frames). `id` is echoed in the answer. */
export type ControlRequest =
  | { id?: number | string; type: 'stats' }
  | { id?: number | string; type: 'set-fault-profile'; profile: FaultProfile | string; engine?: number }
  | { id?: number | string; type: 'set-latency'; latency: LatencyOptions; engine?: number }
  | { id?: number | string; type: 'set-capacity'; capacity: CapacityOptions; engine?: number }
  | { id?: number | string; type: 'restart-engine'; downMs?: number; engine?: number }
  | { id?: number | string; type: 'reset-high-water-marks' };

/** Frames sent on the control channel. `stats` frames are also pushed every `statsIntervalMs` unasked. */
export type ControlResponse =
  | { id?: number | string; type: 'stats'; stats: FakeVllmStats; at: number }
  | { id?: number | string; type: 'ok' }
  | { id?: number | string; type: 'error'; message: string };

const CONTROL_TYPES = [
  'stats',
  'set-fault-profile',
  'set-latency',
  'set-capacity',
  'restart-engine',
  'reset-high-water-marks',
] as const;

/** A frame that is not a valid control request; carries the frame's `id` when it had a usable one. */
class ControlFrameError extends Error {
  constructor(
    message: string,
    readonly id: number | string | undefined,
  ) {
    super(message);
  }
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Validates one text frame into a {@link ControlRequest}; throws a {@link ControlFrameError} naming what is wrong. */
export function parseControlRequest(text: string): ControlRequest {
  let frame: unknown;
  try {
    frame = JSON.parse(text);
  } catch {
    throw new ControlFrameError('Control frames must be JSON', undefined);
  }
  if (!isPlainObject(frame)) {
    throw new ControlFrameError(
      `Expected a control frame to be a JSON object with \`type\`, got ${JSON.stringify(frame)}`,
      undefined,
    );
  }
  const rawId = frame.id;
  const id = typeof rawId === 'string' || (typeof rawId === 'number' && Number.isFinite(rawId)) ? rawId : undefined;
  const fail = (message: string): never => {
    throw new ControlFrameError(message, id);
  };
  if (rawId !== undefined && id === undefined)
    fail(`Expected \`id\` to be a number or a string, got ${JSON.stringify(rawId)}`);
  const type = frame.type;
  if (!(CONTROL_TYPES as readonly unknown[]).includes(type)) {
    fail(
      `Unknown control request type \`${typeof type === 'string' ? type : JSON.stringify(type)}\`; expected ${CONTROL_TYPES.join(', ')}`,
    );
  }
  const engine = frame.engine;
  if (engine !== undefined && !(Number.isInteger(engine) && (engine as number) >= 0)) {
    fail(`Expected \`engine\` to be an engine index (a whole number >= 0), got ${JSON.stringify(engine)}`);
  }
  if (type === 'set-fault-profile' && typeof frame.profile !== 'string' && !isPlainObject(frame.profile)) {
    fail(
      `Expected \`profile\` to be a built-in profile name or an object of fault rules, got ${JSON.stringify(frame.profile) ?? 'nothing'}`,
    );
  }
  if (type === 'set-latency' && !isPlainObject(frame.latency)) {
    fail(`Expected \`latency\` to be an object of latency options, got ${JSON.stringify(frame.latency) ?? 'nothing'}`);
  }
  if (type === 'set-capacity' && !isPlainObject(frame.capacity)) {
    fail(
      `Expected \`capacity\` to be an object of capacity options ({ maxNumSeqs?, kvCacheBlocks? }), got ${JSON.stringify(frame.capacity) ?? 'nothing'}`,
    );
  }
  return frame as ControlRequest;
}

/** Serves {@link FakeVllmControl} over WebSocket, pushing stats once per interval to every client. */
export class ControlChannelServer {
  private readonly server: WebSocketServer;
  private timer: NodeJS.Timeout | undefined;
  url = '';

  constructor(
    private readonly control: Omit<FakeVllmControl, 'url'>,
    private readonly options: { host: string; port: number; token: string | undefined; statsIntervalMs: number },
  ) {
    this.server = new WebSocketServer({
      host: options.host,
      port: options.port,
      verifyClient: (info: { req: IncomingMessage }) => this.authorized(info.req),
    });
  }

  private authorized(request: IncomingMessage): boolean {
    const token = this.options.token;
    if (token === undefined) return true;
    const query = new URL(request.url ?? '/', 'ws://control').searchParams.get('token');
    return query === token || request.headers.authorization === `Bearer ${token}`;
  }

  async start(): Promise<string> {
    const http = (this.server as unknown as { _server: Server })._server;
    if (!http.listening) {
      // A port in use or an address not on this host arrives as 'error': reject instead of an uncaught throw. The
      // error is marked as the control channel's (`listener: 'control'`): its port is often 0 like the engines', so
      // the CLI could not otherwise tell whose flags to name.
      await new Promise<void>((resolve, reject) => {
        const onError = (error: Error) => {
          this.server.off('listening', onListening);
          reject(Object.assign(error, { listener: 'control' }));
        };
        const onListening = () => {
          this.server.off('error', onError);
          resolve();
        };
        this.server.once('error', onError);
        this.server.once('listening', onListening);
      });
    }
    const { port } = this.server.address() as AddressInfo;
    const host = this.options.host.includes(':') ? `[${this.options.host}]` : this.options.host;
    this.url = `ws://${host}:${port}`;
    this.server.on('connection', (socket) => this.onConnection(socket));
    this.timer = setInterval(() => void this.push(), this.options.statsIntervalMs);
    this.timer.unref();
    return this.url;
  }

  private async push(): Promise<void> {
    if (this.server.clients.size === 0) return;
    let stats: FakeVllmStats;
    try {
      stats = await this.control.stats();
    } catch {
      return; // a stats request answers the reason; a push is simply skipped
    }
    const frame = JSON.stringify({ type: 'stats', stats, at: Date.now() });
    for (const client of this.server.clients) if (client.readyState === client.OPEN) client.send(frame);
  }

  private onConnection(socket: WebSocket): void {
    // Every frame is answered, and nothing a client sends may reject unhandled: that would end the process.
    socket.on('message', (data) => {
      this.answer(socket, String(data)).catch((error: unknown) => {
        if (socket.readyState === socket.OPEN) {
          socket.send(JSON.stringify({ type: 'error', message: String(error) } satisfies ControlResponse));
        }
      });
    });
  }

  private async answer(socket: WebSocket, text: string): Promise<void> {
    let id: number | string | undefined;
    const reply = (response: ControlResponse) => {
      if (socket.readyState === socket.OPEN)
        socket.send(JSON.stringify(id === undefined ? response : { ...response, id }));
    };
    try {
      const request = parseControlRequest(text);
      id = request.id;
      switch (request.type) {
        case 'stats':
          return reply({ type: 'stats', stats: await this.control.stats(), at: Date.now() });
        case 'set-fault-profile':
          await this.control.setFaultProfile(request.profile, request.engine);
          return reply({ type: 'ok' });
        case 'set-latency':
          await this.control.setLatency(request.latency, request.engine);
          return reply({ type: 'ok' });
        case 'set-capacity':
          await this.control.setCapacity(request.capacity, request.engine);
          return reply({ type: 'ok' });
        case 'restart-engine':
          await this.control.restartEngine(
            request.downMs === undefined ? {} : { downMs: request.downMs },
            request.engine,
          );
          return reply({ type: 'ok' });
        case 'reset-high-water-marks':
          await this.control.resetHighWaterMarks();
          return reply({ type: 'ok' });
      }
    } catch (error) {
      if (error instanceof ControlFrameError) id = error.id;
      reply({ type: 'error', message: error instanceof Error ? error.message : String(error) });
    }
  }

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    for (const client of this.server.clients) client.terminate();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** A client of the control channel: what tests and the load sweep use to read the server's ground truth. */
export class ControlClient implements FakeVllmControl {
  private nextId = 1;
  private readonly pending = new Map<
    number,
    { resolve: (frame: ControlResponse) => void; reject: (error: Error) => void }
  >();
  private readonly listeners = new Set<(stats: FakeVllmStats) => void>();

  private constructor(
    readonly url: string,
    private readonly socket: WebSocket,
  ) {
    socket.on('message', (data) => {
      const frame = JSON.parse(String(data)) as ControlResponse;
      if (frame.id !== undefined) {
        const waiter = this.pending.get(frame.id as number);
        this.pending.delete(frame.id as number);
        waiter?.resolve(frame);
      } else if (frame.type === 'stats') {
        for (const listener of this.listeners) listener(frame.stats);
      }
    });
    socket.on('close', () => {
      for (const waiter of this.pending.values()) waiter.reject(new Error('control channel closed'));
      this.pending.clear();
    });
  }

  /** Connects to a control channel URL (`ws://...`), with its token if one is required. */
  static async connect(url: string, token?: string): Promise<ControlClient> {
    const { WebSocket } = await import('ws');
    const socket = new WebSocket(url, token ? { headers: { authorization: `Bearer ${token}` } } : {});
    await new Promise<void>((resolve, reject) => {
      socket.once('open', () => resolve());
      socket.once('error', reject);
      socket.once('unexpected-response', (_request, response) =>
        reject(new Error(`control channel refused the connection: HTTP ${response.statusCode}`)),
      );
    });
    return new ControlClient(url, socket);
  }

  private async request(request: ControlRequest): Promise<ControlResponse> {
    const id = this.nextId++;
    const answer = new Promise<ControlResponse>((resolve, reject) => this.pending.set(id, { resolve, reject }));
    this.socket.send(JSON.stringify({ ...request, id }));
    const frame = await answer;
    if (frame.type === 'error') throw new Error(frame.message);
    return frame;
  }

  async stats(): Promise<FakeVllmStats> {
    const frame = await this.request({ type: 'stats' });
    return (frame as Extract<ControlResponse, { type: 'stats' }>).stats;
  }

  async setFaultProfile(profile: FaultProfile | string, engine?: number): Promise<void> {
    await this.request(
      engine === undefined ? { type: 'set-fault-profile', profile } : { type: 'set-fault-profile', profile, engine },
    );
  }

  async setLatency(latency: LatencyOptions, engine?: number): Promise<void> {
    await this.request(
      engine === undefined ? { type: 'set-latency', latency } : { type: 'set-latency', latency, engine },
    );
  }

  async setCapacity(capacity: CapacityOptions, engine?: number): Promise<void> {
    await this.request(
      engine === undefined ? { type: 'set-capacity', capacity } : { type: 'set-capacity', capacity, engine },
    );
  }

  async restartEngine(restart: RestartOptions = {}, engine?: number): Promise<void> {
    await this.request({
      type: 'restart-engine',
      ...(restart.downMs === undefined ? {} : { downMs: restart.downMs }),
      ...(engine === undefined ? {} : { engine }),
    });
  }

  async resetHighWaterMarks(): Promise<void> {
    await this.request({ type: 'reset-high-water-marks' });
  }

  /** Calls `listener` with every stats frame the server pushes (once per interval). Returns an unsubscribe. */
  onStats(listener: (stats: FakeVllmStats) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async close(): Promise<void> {
    if (this.socket.readyState === this.socket.CLOSED) return;
    const closed = new Promise((resolve) => this.socket.once('close', resolve));
    this.socket.close();
    await closed;
  }
}
