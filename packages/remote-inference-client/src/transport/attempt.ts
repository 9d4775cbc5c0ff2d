import type { IncomingHttpHeaders } from 'node:http';
import { performance } from 'node:perf_hooks';
import type { Dispatcher } from 'undici';
import { AbortError, type InferenceError, mapTransportError, StreamParseError, TimeoutError } from '../errors.js';
import type { ConnectionPool, PooledConnection } from './connection-pool.js';

/** One HTTP exchange to send. */
export interface AttemptRequest {
  method: 'GET' | 'POST';
  path: string;
  /** Shared between attempts (frozen in the common case): copy before changing. */
  headers: Readonly<Record<string, string>>;
  body: string | undefined;
  /**
   * Longest wait for the first response byte that matters: the first body byte of a streamed 2xx response (vLLM
   * sends a stream's headers at once, while the request is still queued), the headers of anything else (a whole
   * response arrives at the end, headers and body together). 0 = none.
   */
  ttfbTimeoutMs: number;
  /** Longest silence between body chunks once the body has started. 0 = none. */
  idleTimeoutMs: number;
  /** Largest whole (non-streamed) 2xx body kept; larger is a typed error, not a buffer that grows. */
  maxResponseBytes: number;
  connectTimeoutMs: number;
  signal: AbortSignal | undefined;
}

/**
 * @internal
 * A GET the client sends on its own behalf (a `/health` probe, a `/metrics` poll): whole answer, one deadline
 * for all of it, the connect also bounded by the client's `timeouts.connectMs`.
 */
export function bookkeepingGet(
  path: string,
  headers: Readonly<Record<string, string>>,
  timeoutMs: number,
  connectTimeoutMs: number,
  maxResponseBytes: number,
): AttemptRequest {
  return {
    method: 'GET',
    path,
    headers,
    body: undefined,
    ttfbTimeoutMs: timeoutMs,
    idleTimeoutMs: timeoutMs,
    maxResponseBytes,
    connectTimeoutMs: Math.min(timeoutMs, connectTimeoutMs),
    signal: AbortSignal.timeout(timeoutMs),
  };
}

/** Receives a 2xx body as it arrives; timestamps are taken before any parsing. */
export interface AttemptSink {
  onData(chunk: Buffer, receivedAtMs: number): void;
  /** Called when the response starts, with a way to stop and restart reading the socket (backpressure). */
  onFlow?(flow: AttemptFlow): void;
}

/** Stops and restarts reading a response's body from the socket. */
export interface AttemptFlow {
  pause(): void;
  resume(): void;
}

/** What one attempt measured. */
export interface AttemptTiming {
  /** Waiting for a pooled connection (ceiling or connect pacing). */
  poolWaitMs: number;
  /** TCP connect, when this attempt opened a new connection. */
  connectMs: number | undefined;
  /** Request written to first response byte (headers). */
  ttfbMs: number;
  reusedConnection: boolean;
  /** Requests retried at once because a reused idle socket died before any byte. */
  staleRetries: number;
  startedAtMs: number;
  headersAtMs: number;
  endedAtMs: number;
}

/** A finished exchange: status, headers, and the body when it was not streamed into a sink. */
export interface AttemptResult {
  status: number;
  headers: IncomingHttpHeaders;
  /** Whole body for non-2xx responses and for 2xx when no sink was given. */
  body: Buffer | undefined;
  /** HTTP trailers (a stream's `Server-Timing` comes here). */
  trailers: IncomingHttpHeaders;
  timing: AttemptTiming;
}

/**
 * @internal
 * An attempt failure, with whether the response had started for the caller (which decides if it may be re-sent):
 * the first body byte of a stream, the headers of anything else. An `Error`, wrapping the typed one.
 */
export class AttemptFailure extends Error {
  constructor(
    readonly error: InferenceError,
    readonly afterResponseBytes: boolean,
    readonly timing: AttemptTiming,
  ) {
    super(error.message, { cause: error });
    this.name = 'AttemptFailure';
  }
}

/**
 * Sends one attempt to an engine: the seam of the request path (as openai-node's injected `fetch`). The client
 * uses {@link sendAttempt} on its pooled connections; a test may pass its own to script each attempt's outcome.
 * Reject with an {@link InferenceError} (or an {@link AttemptFailure}) for a failed attempt.
 */
export type SendAttempt = (
  engine: string,
  request: AttemptRequest,
  sink: AttemptSink | undefined,
) => Promise<AttemptResult>;

const MAX_ERROR_BODY_BYTES = 64 * 1024;
const MAX_STALE_RETRIES = 3;

const STALE_CODES = new Set(['ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET', 'UND_ERR_CLOSED']);

/** Node's timers overflow above this (they fire after 1 ms): longer waits are re-armed in steps. */
const MAX_TIMER_MS = 2 ** 31 - 1;
/** Until a response replaces them: one shared empty object, not two per in-flight request. */
const NO_HEADERS: IncomingHttpHeaders = Object.freeze({});

class ExchangeHandler implements Dispatcher.DispatchHandler {
  status = 0;
  headers: IncomingHttpHeaders = NO_HEADERS;
  trailers: IncomingHttpHeaders = NO_HEADERS;
  headersAtMs = 0;
  /** When the first body byte went to the sink (0: none yet). */
  firstDataAtMs = 0;
  private lastDataAtMs = 0;
  private watchdog: NodeJS.Timeout | undefined;
  private chunks: Buffer[] | undefined;
  private size = 0;
  private controller: Dispatcher.DispatchController | undefined;
  /**
   * Set by the sender: the connection whose undici Client carries the request. Before undici starts the request
   * (connect pending), an abort or a deadline can only end it with its connection.
   */
  connection: PooledConnection | undefined;

  /**
   * The abort listener: the handler itself (`handleEvent`), not a closure, since a long request holds its listener
   * for seconds and every byte it holds is copied by each young-generation GC.
   */
  handleEvent(): void {
    this.end(new AbortError('The request was aborted', { engine: this.engine, cause: this.signal?.reason }));
  }

  private end(error: Error): void {
    if (this.controller) this.controller.abort(error);
    else void this.connection?.client.destroy(error).catch(() => undefined);
  }

  constructor(
    private readonly engine: string,
    private readonly maxResponseBytes: number,
    private readonly sink: AttemptSink | undefined,
    private readonly signal: AbortSignal | undefined,
    private readonly resolve: (result: { body: Buffer | undefined }) => void,
    private readonly reject: (error: unknown) => void,
  ) {}

  /**
   * Listens for the caller's abort from the moment of dispatch: undici calls `onRequestStart` only once the socket
   * is connected, and an abort during a pending connect (a full accept queue) used to wait for the connect timeout.
   */
  listen(): void {
    if (!this.signal) return;
    if (this.signal.aborted) this.handleEvent();
    else this.signal.addEventListener('abort', this, { once: true });
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    if (this.signal?.aborted) this.handleEvent();
  }

  onResponseStart(controller: Dispatcher.DispatchController, statusCode: number, headers: IncomingHttpHeaders): void {
    this.headersAtMs = performance.now();
    this.status = statusCode;
    this.headers = headers;
    if (statusCode < 200 || statusCode >= 300 || !this.sink) this.chunks = [];
    else
      this.sink.onFlow?.({
        pause: () => controller.pause(),
        resume: () => {
          // Time the consumer held the stream is not the server's silence.
          this.lastDataAtMs = performance.now();
          controller.resume();
        },
      });
  }

  onResponseData(_controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.chunks) {
      if (this.size < MAX_ERROR_BODY_BYTES || (this.status >= 200 && this.status < 300)) this.chunks.push(chunk);
      this.size += chunk.length;
      if (this.size > this.maxResponseBytes && this.status >= 200 && this.status < 300) {
        this.chunks = [];
        this.controller?.abort(
          new StreamParseError(
            `The response body exceeds transport.maxResponseBytes (${this.maxResponseBytes} bytes)`,
            { engine: this.engine, status: this.status },
          ),
        );
      }
      return;
    }
    const now = performance.now();
    if (this.firstDataAtMs === 0) {
      this.firstDataAtMs = now;
      if (this.idleLimitMs > 0) this.arm(this.idleLimitMs);
      else if (this.watchdog) clearTimeout(this.watchdog);
    }
    this.lastDataAtMs = now;
    this.sink!.onData(chunk, now);
  }

  onResponseEnd(_controller: Dispatcher.DispatchController, trailers: IncomingHttpHeaders): void {
    this.trailers = trailers ?? NO_HEADERS;
    this.detach();
    this.resolve({ body: this.chunks ? Buffer.concat(this.chunks) : undefined });
  }

  onResponseError(_controller: Dispatcher.DispatchController, error: Error): void {
    this.detach();
    this.reject(error);
  }

  /**
   * A streamed request's deadlines: `ttfbMs` from the send to the first body byte (headers alone do not count:
   * vLLM sends them while the request is still queued), then `idleMs` between body chunks. One timer per attempt,
   * armed at the send and re-armed at the first body byte; later chunks only move `lastDataAtMs`, and the timer,
   * when it fires early, re-arms itself for what is left.
   */
  watch(engine: string, sentAtMs: number, ttfbMs: number, idleMs: number): void {
    this.watchEngine = engine;
    this.sentAtMs = sentAtMs;
    this.ttfbLimitMs = ttfbMs;
    this.idleLimitMs = idleMs;
    if (ttfbMs > 0) this.arm(ttfbMs);
  }

  private watchEngine = '';
  private sentAtMs = 0;
  private ttfbLimitMs = 0;
  private idleLimitMs = 0;

  private arm(delayMs: number): void {
    if (this.watchdog) clearTimeout(this.watchdog);
    this.watchdog = setTimeout(fireWatchdog, Math.min(MAX_TIMER_MS, Math.max(1, delayMs)), this);
  }

  /** @internal The watchdog fired (through {@link fireWatchdog}: no closure per handler). */
  check(): void {
    this.watchdog = undefined;
    const started = this.firstDataAtMs > 0;
    const limitMs = started ? this.idleLimitMs : this.ttfbLimitMs;
    if (limitMs <= 0) return;
    const deadline = (started ? this.lastDataAtMs : this.sentAtMs) + limitMs;
    const now = performance.now();
    if (now < deadline) {
      this.arm(deadline - now);
      return;
    }
    this.end(new TimeoutError(started ? 'idle' : 'ttfb', limitMs, { engine: this.watchEngine }));
  }

  private detach(): void {
    if (this.watchdog) clearTimeout(this.watchdog);
    this.watchdog = undefined;
    this.signal?.removeEventListener('abort', this);
  }
}

const fireWatchdog = (handler: ExchangeHandler): void => handler.check();

/**
 * @internal
 * Sends one request on a pooled connection. A reused idle socket that dies before any response byte (the server
 * closed it as we wrote: uvicorn sends no keep-alive hint) is retried at once on another connection, up to 3 times,
 * and counted; it is not a failure of the request. Rejects with an {@link AttemptFailure}.
 */
export async function sendAttempt(
  pool: ConnectionPool,
  request: AttemptRequest,
  sink: AttemptSink | undefined,
): Promise<AttemptResult> {
  const startedAtMs = performance.now();
  const timing: AttemptTiming = {
    poolWaitMs: 0,
    connectMs: undefined,
    ttfbMs: 0,
    reusedConnection: false,
    staleRetries: 0,
    startedAtMs,
    headersAtMs: 0,
    endedAtMs: 0,
  };
  for (;;) {
    const acquiredFrom = performance.now();
    let connection: PooledConnection;
    try {
      const acquired = pool.acquire(request.signal);
      connection = acquired instanceof Promise ? await acquired : acquired;
    } catch (error) {
      throw failure(error, pool.origin, false, timing, request);
    }
    const sentAtMs = performance.now();
    timing.poolWaitMs += sentAtMs - acquiredFrom;
    const reused = connection.connected;
    timing.reusedConnection = reused;
    let handler: ExchangeHandler | undefined;
    try {
      const { body } = await new Promise<{ body: Buffer | undefined }>((resolve, reject) => {
        handler = new ExchangeHandler(pool.origin, request.maxResponseBytes, sink, request.signal, resolve, reject);
        handler.connection = connection;
        const ttfbMs = Math.min(request.ttfbTimeoutMs, MAX_TIMER_MS);
        connection.client.dispatch(
          {
            origin: pool.origin,
            method: request.method,
            path: request.path,
            headers: request.headers,
            body: request.body ?? null,
            headersTimeout: ttfbMs,
            // A stream's body deadlines are the handler's watchdog: undici's bodyTimeout would start at the headers,
            // which vLLM sends before the request even leaves its queue.
            bodyTimeout: sink ? 0 : Math.min(request.idleTimeoutMs, MAX_TIMER_MS),
          },
          handler,
        );
        if (sink) handler.watch(pool.origin, sentAtMs, request.ttfbTimeoutMs, request.idleTimeoutMs);
        handler.listen();
      });
      timing.headersAtMs = handler!.headersAtMs;
      timing.ttfbMs = handler!.headersAtMs - sentAtMs;
      timing.endedAtMs = performance.now();
      if (!reused) timing.connectMs = connectDuration(connection, sentAtMs);
      pool.release(connection, true);
      return { status: handler!.status, headers: handler!.headers, body, trailers: handler!.trailers, timing };
    } catch (error) {
      const headersArrived = (handler?.headersAtMs ?? 0) > 0;
      // What reached the caller decides: a stream that broke before its first body byte delivered nothing (the
      // engine aborts a request whose client went away) and may be re-sent like a failure before the response.
      const streamed = sink !== undefined && handler !== undefined && handler.status >= 200 && handler.status < 300;
      const afterResponseBytes = streamed ? handler!.firstDataAtMs > 0 : headersArrived;
      pool.release(connection, false);
      const code = (error as { code?: string }).code;
      if (
        reused &&
        !headersArrived &&
        code &&
        STALE_CODES.has(code) &&
        timing.staleRetries < MAX_STALE_RETRIES &&
        !request.signal?.aborted
      ) {
        timing.staleRetries++;
        continue;
      }
      if (!reused) timing.connectMs = connectDuration(connection, sentAtMs);
      if (handler && headersArrived) {
        timing.headersAtMs = handler.headersAtMs;
        timing.ttfbMs = handler.headersAtMs - sentAtMs;
      }
      timing.endedAtMs = performance.now();
      throw failure(error, pool.origin, afterResponseBytes, timing, request);
    }
  }
}

function connectDuration(connection: PooledConnection, sentAtMs: number): number | undefined {
  return connection.connectedAtMs === undefined ? undefined : connection.connectedAtMs - sentAtMs;
}

function failure(
  error: unknown,
  engine: string,
  afterResponseBytes: boolean,
  timing: AttemptTiming,
  request: AttemptRequest,
): AttemptFailure {
  const mapped =
    request.signal?.aborted && !(error instanceof AbortError)
      ? mapTransportError(request.signal.reason ?? error, { engine, afterResponseBytes })
      : mapTransportError(error, {
          engine,
          afterResponseBytes,
          timeouts: {
            ttfbMs: request.ttfbTimeoutMs,
            idleMs: request.idleTimeoutMs,
            connectMs: request.connectTimeoutMs,
          },
        });
  return new AttemptFailure(mapped, afterResponseBytes, timing);
}

/** @internal True when a value thrown by {@link sendAttempt} is an {@link AttemptFailure}. */
export function isAttemptFailure(value: unknown): value is AttemptFailure {
  return value instanceof AttemptFailure;
}
