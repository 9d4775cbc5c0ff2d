import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Server as NetServer, Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { Engine, type EngineRequest, InFlightGauge, type PauseMode } from './engine.js';
import { FakeVllmConfigError } from './errors.js';
import {
  FAULT_HEADER,
  FaultInjector,
  type FaultName,
  type FaultSpec,
  numberParam,
  parseFaultHeader,
} from './faults.js';
import { createGeneration, type Generation, StreamAssembler } from './generation.js';
import { renderEngineMetrics } from './metrics.js';
import type { LatencyOptions, ResolvedEngineOptions } from './options.js';
import {
  checkJsonContentType,
  type GenerationJob,
  HttpError,
  invalidJsonError,
  type ParseContext,
  parseChatRequest,
  parseCompletionRequest,
  parseGenerateRequest,
  ResponseFormatter,
  renderChatPrompt,
} from './protocol.js';
import { checkPromptText } from './request-bounds.js';
import { detokenize, tokenize } from './tokens.js';

const MAX_BODY_BYTES = 64 * 1024 * 1024;

/** Per-socket bookkeeping for keep-alive emulation and the idle-close race. */
interface ConnectionState {
  inFlight: number;
  requests: number;
  idleTimer: NodeJS.Timeout | undefined;
  /** An `idle-close-race` header asked for this socket to be closed this long after it next goes idle. */
  forcedRaceMs: number | undefined;
}
const connectionStates = new WeakMap<Socket, ConnectionState>();

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
  paused: boolean;
  sleeping: boolean;
  /** The process serving this engine. */
  pid: number;
  /** The engine's process died: it serves nothing, and its counters are the last ones read before. */
  down: boolean;
}

/** Timing headers every generation response carries: the server's own view, for clients to subtract. */
export const TIMING_HEADERS = {
  requestId: 'x-fake-request-id',
  queueMs: 'x-fake-queue-ms',
  ttftMs: 'x-fake-ttft-ms',
  e2eMs: 'x-fake-e2e-ms',
} as const;

function sendJson(response: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  response.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    ...headers,
  });
  response.end(text);
}

/**
 * One fake engine: an HTTP/1.1 server on its own port with its own scheduler. Speaks vLLM's OpenAI-compatible
 * API, its RL control plane, `/metrics`, and injects faults by header or by profile.
 */
export class EngineServer {
  readonly engine: Engine;
  readonly injector: FaultInjector;
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  private connectionsTotal = 0;
  private requests = 0;
  private port = 0;
  private startedAtMs = performance.now();
  private refusing: NodeJS.Timeout | undefined;
  private closing = false;
  private weightVersion = 0;
  private sharedListener = false;
  private readonly parseContext: ParseContext;

  constructor(
    readonly options: ResolvedEngineOptions,
    readonly host: string,
    gauge = new InFlightGauge(),
  ) {
    this.engine = new Engine(options, gauge);
    this.injector = new FaultInjector(options.faultProfile, options.seed);
    this.parseContext = {
      model: options.model,
      maxModelLen: options.maxModelLen,
      vocabSize: options.vocabSize,
      seed: options.seed,
      eosProbability: options.eosProbability,
      maxRequestTokens: options.maxRequestTokens,
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
    this.startedAtMs = performance.now();
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

  /** This engine's ground truth. */
  stats(): EngineStats {
    const counters = this.engine.counters;
    return {
      url: this.url,
      connectionsOpen: this.sockets.size,
      connectionsTotal: this.connectionsTotal,
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
      paused: this.engine.isPaused,
      sleeping: this.engine.isSleeping,
      pid: process.pid,
      down: false,
    };
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
    this.requests++;
    if (state) {
      if (state.idleTimer) clearTimeout(state.idleTimer);
      state.idleTimer = undefined;
      state.inFlight++;
      state.requests++;
      const rate = this.injector.idleCloseRate();
      if (state.requests > 1 && rate > 0 && this.injector.roll() < rate) {
        // The other half of the race: the request arrives on a reused socket just as the server closes it.
        this.injector.count('idle-close-race');
        socket.destroy();
        return;
      }
      const header = request.headers[FAULT_HEADER];
      if (typeof header === 'string' && header.trimStart().startsWith('idle-close-race')) {
        // Given per request, the race is armed for this socket: once the response is done and the socket idle,
        // the server closes it after `delay_ms` (default: a random moment within the keep-alive), and counts it.
        try {
          const keepAlive = this.options.keepAliveTimeoutMs;
          state.forcedRaceMs = numberParam(parseFaultHeader(header), 'delay_ms', this.injector.roll() * keepAlive);
        } catch {
          // A malformed header is answered with a 400 by the route that parses it again.
        }
      }
      response.on('close', () => {
        state.inFlight--;
        this.armIdleClose(socket);
      });
    }
    if (this.options.keepAliveHint) {
      response.setHeader('keep-alive', `timeout=${Math.floor(this.options.keepAliveTimeoutMs / 1000)}`);
    }
    this.route(request, response).catch((error: unknown) => this.fail(response, error));
  }

  private fail(response: ServerResponse, error: unknown): void {
    if (response.headersSent) {
      response.destroy();
      return;
    }
    if (error instanceof HttpError) {
      // The rest of a timed-out or oversized body is not read: answer, then close the connection.
      const close = error.status === 408 || error.status === 413;
      sendJson(response, error.status, error.body(), close ? { connection: 'close' } : {});
    } else if (error instanceof FakeVllmConfigError) {
      sendJson(response, 400, new HttpError(400, error.message).body());
    } else {
      const message = error instanceof Error ? error.message : String(error);
      sendJson(response, 500, new HttpError(500, message, 'InternalServerError').body());
    }
  }

  private async readJson(request: IncomingMessage): Promise<unknown> {
    const chunks = await this.readBody(request);
    let size = 0;
    for (const chunk of chunks) size += chunk.length;
    if (size === 0) return {};
    try {
      return JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch (error) {
      throw invalidJsonError((error as Error).message);
    }
  }

  /**
   * The body's chunks, within {@link MAX_BODY_BYTES} and `requestBodyTimeoutMs`: a client trickling a body (one
   * byte every few seconds) would otherwise hold the connection and its request open forever.
   */
  private readBody(request: IncomingMessage): Promise<Buffer[]> {
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      let timer: NodeJS.Timeout | undefined;
      const settle = (error?: Error) => {
        clearTimeout(timer);
        request.off('data', onData).off('end', onEnd).off('error', settle).off('close', onClose);
        if (error) {
          request.pause();
          reject(error);
        } else resolve(chunks);
      };
      const onData = (chunk: Buffer) => {
        size += chunk.length;
        if (size > MAX_BODY_BYTES) settle(new HttpError(413, `Request body exceeds ${MAX_BODY_BYTES} bytes`));
        else chunks.push(chunk);
      };
      const onEnd = () => settle();
      const onClose = () => settle(new Error('The client closed the connection before sending the whole body'));
      request.on('data', onData).on('end', onEnd).on('error', settle).on('close', onClose);
      const timeoutMs = this.options.requestBodyTimeoutMs;
      if (timeoutMs > 0 && !request.complete) {
        timer = setTimeout(
          () =>
            settle(
              new HttpError(
                408,
                `The request body did not arrive within ${timeoutMs} ms (requestBodyTimeoutMs)`,
                'RequestTimeoutError',
              ),
            ),
          timeoutMs,
        );
      }
    });
  }

  private async route(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const url = new URL(request.url ?? '/', 'http://fake');
    const route = `${request.method} ${url.pathname}`;
    const engine = this.engine;
    switch (route) {
      case 'POST /v1/completions':
        return this.generation(request, response, parseCompletionRequest, 'cmpl');
      case 'POST /v1/chat/completions':
        return this.generation(request, response, parseChatRequest, 'chatcmpl');
      case 'POST /inference/v1/generate':
        return this.generation(request, response, parseGenerateRequest, 'generate-tokens');
      case 'GET /health':
        request.resume();
        if (performance.now() - this.startedAtMs < this.options.readyAfterMs) {
          return sendJson(response, 503, new HttpError(503, 'Engine is starting', 'ServiceUnavailableError').body());
        }
        response.writeHead(200, { 'content-length': 0 });
        return void response.end();
      case 'GET /v1/models':
        request.resume();
        return sendJson(response, 200, {
          object: 'list',
          data: [
            {
              id: this.options.model,
              object: 'model',
              created: Math.floor(Date.now() / 1000),
              owned_by: 'vllm',
              root: this.options.model,
              parent: null,
              max_model_len: this.options.maxModelLen,
              permission: [],
            },
          ],
        });
      case 'GET /version':
        request.resume();
        return sendJson(response, 200, { version: '0.0.0+fake-vllm' });
      case 'POST /tokenize':
        return this.tokenizeRoute(request, response);
      case 'POST /detokenize': {
        const body = (await this.readJson(request)) as { tokens?: unknown };
        if (!Array.isArray(body.tokens) || !body.tokens.every((token) => Number.isInteger(token) && token >= 0)) {
          throw new HttpError(400, '`tokens` must be an array of token ids', 'BadRequestError', 'tokens');
        }
        let maxId = -1;
        for (const token of body.tokens as number[]) if (token > maxId) maxId = token;
        if (maxId >= this.options.vocabSize) {
          // vLLM's wording for an id the tokenizer does not have (vllm/v1/engine/input_processor.py).
          throw new HttpError(400, `Token id ${maxId} is out of vocabulary`, 'BadRequestError', 'tokens');
        }
        return sendJson(response, 200, { prompt: detokenize(body.tokens as number[], this.options.vocabSize) });
      }
      case 'GET /metrics':
        request.resume();
        response.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' });
        return void response.end(renderEngineMetrics([this]));
      case 'GET /fake/stats':
        request.resume();
        return sendJson(response, 200, this.stats());
      case 'POST /pause': {
        request.resume();
        const mode = url.searchParams.get('mode') ?? 'abort';
        if (mode !== 'abort' && mode !== 'wait' && mode !== 'keep') {
          throw new HttpError(400, `\`mode\` must be abort, wait or keep, got \`${mode}\``, 'BadRequestError', 'mode');
        }
        await engine.pause(mode as PauseMode);
        return sendJson(response, 200, { status: 'paused', mode });
      }
      case 'POST /resume':
        request.resume();
        engine.resume();
        return sendJson(response, 200, { status: 'resumed' });
      case 'GET /is_paused':
        request.resume();
        return sendJson(response, 200, { is_paused: engine.isPaused });
      case 'POST /sleep': {
        request.resume();
        const level = Number(url.searchParams.get('level') ?? '1');
        if (level !== 1 && level !== 2) throw new HttpError(400, '`level` must be 1 or 2', 'BadRequestError', 'level');
        engine.sleep(level);
        response.writeHead(200, { 'content-length': 0 });
        return void response.end();
      }
      case 'POST /wake_up':
        request.resume();
        engine.wakeUp();
        response.writeHead(200, { 'content-length': 0 });
        return void response.end();
      case 'GET /is_sleeping':
        request.resume();
        return sendJson(response, 200, { is_sleeping: engine.isSleeping });
      case 'POST /reset_prefix_cache':
      case 'POST /init_weight_transfer_engine':
        await this.readJson(request);
        response.writeHead(200, { 'content-length': 0 });
        return void response.end();
      case 'POST /update_weights':
        await this.readJson(request);
        this.weightVersion++;
        return sendJson(response, 200, { status: 'ok', weight_version: this.weightVersion });
      case 'POST /collective_rpc': {
        const body = (await this.readJson(request)) as { method?: unknown };
        if (typeof body.method !== 'string' || body.method === '') {
          throw new HttpError(400, '`method` must be a non-empty string', 'BadRequestError', 'method');
        }
        return sendJson(response, 200, { results: [{ method: body.method, ok: true }] });
      }
      case 'GET /get_world_size':
        request.resume();
        return sendJson(response, 200, { world_size: 1 });
      default:
        request.resume();
        throw new HttpError(404, `Not Found: ${request.method} ${url.pathname}`, 'NotFoundError');
    }
  }

  private async tokenizeRoute(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const body = (await this.readJson(request)) as { prompt?: unknown; messages?: unknown; model?: unknown };
    let text: string;
    if (typeof body.prompt === 'string') text = body.prompt;
    else if (Array.isArray(body.messages)) {
      text = renderChatPrompt(body.messages as { role: string; content: unknown }[]);
    } else throw new HttpError(400, 'Either `prompt` (string) or `messages` is required', 'BadRequestError', 'prompt');
    const tokens = tokenize(checkPromptText(text, this.options.maxModelLen, 0), this.options.vocabSize);
    sendJson(response, 200, {
      count: tokens.length,
      max_model_len: this.options.maxModelLen,
      tokens,
      token_strs: null,
    });
  }

  private pickFault(request: IncomingMessage): FaultSpec | undefined {
    const header = request.headers[FAULT_HEADER];
    if (typeof header === 'string' && header !== '') return parseFaultHeader(header);
    return this.injector.rollRequest();
  }

  private async generation(
    request: IncomingMessage,
    response: ServerResponse,
    parse: (body: unknown, context: ParseContext) => GenerationJob,
    idPrefix: string,
  ): Promise<void> {
    const arrivedAtMs = performance.now();
    checkJsonContentType(request.headers['content-type']);
    const body = await this.readJson(request);
    const fault = this.pickFault(request);
    const job = parse(body, this.parseContext);
    if (fault && this.injectBeforeResponse(fault, request, response)) return;
    if (job.engineError) {
      // vLLM's engine rejects the request only once it is submitted: a stream has already answered 200.
      if (!job.stream) throw job.engineError;
      const { message, type, status, param } = job.engineError;
      response.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8' });
      response.end(`${ResponseFormatter.errorEvent(message, type, status, param)}data: [DONE]\n\n`);
      return;
    }
    if (fault?.name === 'hang-before-headers') {
      this.injector.count(fault.name);
      const holdMs = numberParam(fault, 'ms', Number.POSITIVE_INFINITY);
      if (!Number.isFinite(holdMs)) return; // hold until the client gives up: the socket's close frees everything
      await new Promise((resolve) => setTimeout(resolve, holdMs));
      if (response.destroyed) return;
    }
    const deferred: { sink?: Sink } = {};
    const sinkProxy = {
      onProgress: () => deferred.sink!.onProgress(),
      onFinish: () => deferred.sink!.onFinish(),
    };
    const generation = createGeneration(
      job,
      idPrefix,
      this.options.model,
      this.options.vocabSize,
      sinkProxy,
      arrivedAtMs,
      request.headers['x-request-id'] as string | undefined,
    );
    const sink = job.stream
      ? new StreamSink(this, response, generation, fault)
      : new WholeSink(this, response, generation, fault);
    deferred.sink = sink;
    const { engineRequest } = generation;
    if (fault?.name === 'slow-stream') {
      this.injector.count(fault.name);
      engineRequest.stepEvery = Math.max(1, Math.round(numberParam(fault, 'factor', 10)));
    }
    response.on('close', () => {
      if (!response.writableFinished) this.engine.cancel(engineRequest);
    });
    if (!this.engine.submit(engineRequest)) {
      sendJson(response, 429, new HttpError(429, 'The engine waiting queue is full', 'TooManyRequestsError').body(), {
        'retry-after': '1',
      });
    } else if (sink instanceof StreamSink) {
      sink.start();
    }
  }

  /** Faults that end the request before any response byte. Returns true when the request is handled. */
  private injectBeforeResponse(fault: FaultSpec, request: IncomingMessage, response: ServerResponse): boolean {
    const name = fault.name;
    switch (name) {
      case 'reset-before-response':
        this.injector.count(name);
        request.socket.resetAndDestroy();
        return true;
      case 'status-429':
      case 'status-503': {
        this.injector.count(name);
        const status = name === 'status-429' ? 429 : 503;
        const retryAfter = fault.params.retry_after ?? '1';
        const headers: Record<string, string> = retryAfter === 'none' ? {} : { 'retry-after': retryAfter };
        const type = status === 429 ? 'TooManyRequestsError' : 'ServiceUnavailableError';
        sendJson(response, status, new HttpError(status, `Injected ${status}`, type).body(), headers);
        return true;
      }
      case 'status-500-text':
        this.injector.count(name);
        response.writeHead(500, { 'content-type': 'text/plain; charset=utf-8', 'content-length': 21 });
        response.end('Internal Server Error');
        return true;
      case 'status-422':
        this.injector.count(name);
        sendJson(response, 422, {
          detail: [{ type: 'missing', loc: ['body', 'injected'], msg: 'Field required', input: null }],
        });
        return true;
      case 'refuse-connections': {
        this.injector.count(name);
        request.socket.resetAndDestroy();
        this.refuseFor(numberParam(fault, 'window_ms', 1000));
        return true;
      }
      default:
        return false;
    }
  }

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

  /** @internal the server's own timings of a request, sent as response headers. */
  timingHeaders(engineRequest: EngineRequest): Record<string, string> {
    return {
      [TIMING_HEADERS.requestId]: engineRequest.id,
      [TIMING_HEADERS.queueMs]: engineRequest.queueMs.toFixed(3),
      [TIMING_HEADERS.ttftMs]: engineRequest.ttftMs.toFixed(3),
    };
  }
}

/** Tracks a mid-stream fault's trigger point (tokens of the first sequence sent so far). */
abstract class Sink {
  protected readonly engineRequest: EngineRequest;
  protected faultFired = false;
  protected readonly triggerAfter: number;

  constructor(
    protected readonly owner: EngineServer,
    protected readonly response: ServerResponse,
    protected readonly generation: Generation,
    protected readonly fault: FaultSpec | undefined,
  ) {
    this.engineRequest = generation.engineRequest;
    this.triggerAfter = fault ? numberParam(fault, 'after_tokens', 1) : 0;
  }

  abstract onProgress(): void;
  abstract onFinish(): void;

  /** The mid-stream fault due now, if any (fires once). */
  protected dueFault(): FaultName | undefined {
    if (!this.fault || this.faultFired) return undefined;
    const produced = this.engineRequest.sequences[0]?.tokenIds.length ?? 0;
    if (produced < this.triggerAfter) return undefined;
    switch (this.fault.name) {
      case 'reset-mid-stream':
      case 'truncate-stream':
      case 'malformed-chunk':
      case 'error-mid-stream':
      case 'stall':
        this.faultFired = true;
        this.owner.injector.count(this.fault.name);
        return this.fault.name;
      default:
        return undefined;
    }
  }

  protected reset(): void {
    this.owner.engine.cancel(this.engineRequest);
    this.response.socket?.resetAndDestroy();
  }

  /** Stall: freeze the request, then continue, close or reset. */
  protected stall(): void {
    const fault = this.fault!;
    const ms = numberParam(fault, 'ms', 2000);
    const action = fault.params.action ?? 'continue';
    if (action !== 'continue' && action !== 'close' && action !== 'reset') {
      throw new FakeVllmConfigError(`Expected stall \`action\` to be continue, close or reset, got \`${action}\``);
    }
    const engineRequest = this.engineRequest;
    if (action === 'continue') {
      engineRequest.pausedUntilMs = performance.now() + ms;
      return;
    }
    engineRequest.pausedUntilMs = Number.POSITIVE_INFINITY;
    setTimeout(() => {
      if (action === 'reset') this.reset();
      else {
        this.owner.engine.cancel(engineRequest);
        this.response.socket?.destroy();
      }
    }, ms);
  }
}

/** Streams SSE: one write per engine step with every sequence's new tokens. */
class StreamSink extends Sink {
  private readonly assembler = new StreamAssembler(this.generation);

  /**
   * The status line and headers go out as soon as the engine accepted the request, while it is still queued,
   * paused or in prefill, as vLLM's Starlette `StreamingResponse` behind uvicorn does (it sends
   * `http.response.start` before iterating the generator; measured with real uvicorn: headers after 2 ms, the first
   * data event after the generator's first yield). The server's own timings cannot be known yet: they follow as a
   * `Server-Timing` trailer (the header's standard place once a body has started).
   */
  start(): void {
    if (this.response.headersSent || this.response.destroyed) return;
    this.response.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      [TIMING_HEADERS.requestId]: this.engineRequest.id,
      trailer: 'server-timing',
    });
    // Flush the head now: Node would otherwise hold it until the first body write.
    this.response.flushHeaders();
    if (this.fault?.name === 'reset-mid-stream' && this.triggerAfter === 0) {
      // `after_tokens=0`: the engine goes away after the 200 and before any token, as when an engine restarts
      // while the request waits in its queue (the common case on a real fleet).
      this.faultFired = true;
      this.owner.injector.count('reset-mid-stream');
      this.owner.engine.cancel(this.engineRequest);
      const socket = this.response.socket;
      socket?.write('', () => socket.resetAndDestroy());
    }
  }

  private writeFrames(frames: string): void {
    const response = this.response;
    if (!response.headersSent) {
      this.start();
      response.write(frames);
      return;
    }
    // Once headers are out, one pre-framed chunk per step goes straight to the socket: Node's chunked write
    // issues four writes per call (size, CRLF, data, CRLF), which dominated server CPU at 10,000 streams.
    // Safe because nothing else is queued on this response; res.end() still writes the terminating chunk.
    const socket = response.socket;
    if (socket && response.writableLength === 0) {
      socket.write(`${Buffer.byteLength(frames).toString(16)}\r\n${frames}\r\n`);
    } else {
      response.write(frames);
    }
  }

  onProgress(): void {
    if (this.response.destroyed) return;
    const fault = this.dueFault();
    if (fault === 'reset-mid-stream') {
      // `after_tokens=N` means the client received N tokens, then the reset: write this step's frames first and
      // reset once they are handed to the kernel (a reset discards whatever is still queued on our side).
      const frames = this.assembler.drain();
      const socket = this.response.socket;
      if (frames === '' || !socket) {
        this.reset();
        return;
      }
      this.owner.engine.cancel(this.engineRequest);
      this.writeFrames(frames);
      socket.write('', () => socket.resetAndDestroy());
      return;
    }
    // When every sequence has finished, onFinish writes the last tokens, the usage and [DONE] in one write.
    if (fault === undefined && this.assembler.allFinished()) return;
    let frames = this.assembler.drain();
    if (fault === 'malformed-chunk') frames += 'data: {"id":"malformed","choices":[{"index":0,"text":\n\n';
    if (fault === 'error-mid-stream') {
      frames += ResponseFormatter.errorEvent('Injected error after the stream started', 'InternalServerError', 500);
      frames += 'data: [DONE]\n\n';
      this.writeFrames(frames);
      this.owner.engine.cancel(this.engineRequest);
      this.response.end();
      return;
    }
    if (fault === 'truncate-stream') {
      this.writeFrames(frames);
      this.owner.engine.cancel(this.engineRequest);
      this.response.end();
      return;
    }
    if (fault === 'stall') this.stall();
    if (frames !== '') this.writeFrames(frames);
  }

  onFinish(): void {
    if (this.response.destroyed) return;
    this.writeFrames(this.assembler.finish());
    this.response.addTrailers({ 'server-timing': serverTiming(this.engineRequest) });
    this.response.end();
  }
}

/** The server's own timings of a finished request as a standard `Server-Timing` value (durations in ms). */
export function serverTiming(engineRequest: EngineRequest): string {
  const e2eMs = engineRequest.finishedAtMs - engineRequest.arrivedAtMs;
  return `queue;dur=${engineRequest.queueMs.toFixed(3)}, ttft;dur=${engineRequest.ttftMs.toFixed(3)}, e2e;dur=${e2eMs.toFixed(3)}`;
}

/** Non-streaming: the whole JSON body once every sequence has finished. */
class WholeSink extends Sink {
  onProgress(): void {
    // Body-level faults (truncate, malformed, error) apply once, at finish, and are counted there.
    const name = this.fault?.name;
    if (name !== 'reset-mid-stream' && name !== 'stall') return;
    const fault = this.dueFault();
    if (fault === 'reset-mid-stream') this.reset();
    else if (fault === 'stall') this.stall();
  }

  onFinish(): void {
    if (this.response.destroyed) return;
    const engineRequest = this.engineRequest;
    const { formatter, promptIndexOf } = this.generation;
    let body = formatter.fullBody(engineRequest, (sequence) => promptIndexOf.get(sequence)!);
    const headers = {
      'content-type': 'application/json',
      ...this.owner.timingHeaders(engineRequest),
      [TIMING_HEADERS.e2eMs]: (engineRequest.finishedAtMs - engineRequest.arrivedAtMs).toFixed(3),
      'server-timing': serverTiming(engineRequest),
    };
    const fault = this.fault?.name;
    if (fault === 'error-mid-stream') {
      this.owner.injector.count(fault);
      const error = new HttpError(500, 'Injected error during generation', 'InternalServerError');
      sendJson(this.response, 500, error.body());
      return;
    }
    if (fault === 'truncate-stream' || fault === 'malformed-chunk') {
      this.owner.injector.count(fault);
      const full = Buffer.byteLength(body);
      body = body.slice(0, Math.floor(body.length / 2));
      if (fault === 'truncate-stream') {
        // Promise the whole length, send half, close: the client sees a body cut short.
        this.response.writeHead(200, { ...headers, 'content-length': full });
        this.response.write(body);
        this.response.socket?.destroy();
        return;
      }
    }
    this.response.writeHead(200, { ...headers, 'content-length': Buffer.byteLength(body) });
    this.response.end(body);
  }
}
