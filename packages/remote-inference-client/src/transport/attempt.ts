import type { IncomingHttpHeaders } from 'node:http';
import { performance } from 'node:perf_hooks';
import { type Dispatcher, util } from 'undici';
import type { RunAbort } from '../client/request-run.js';
import {
  AbortError,
  type InferenceError,
  isInferenceError,
  isUnacceptableResponse,
  mapTransportError,
  StreamParseError,
  TimeoutError,
} from '../errors.js';
import { MAX_TIMER_MS } from '../timers.js';
import type { ConnectionPool, PooledConnection } from './connection-pool.js';

const { parseHeaders } = util;

/** One HTTP exchange to send. */
export interface AttemptRequest {
  method: 'GET' | 'POST';
  path: string;
  /** Shared between attempts (frozen in the common case): copy before changing. */
  headers: Readonly<Record<string, string>>;
  body: string | undefined;
  /**
   * Longest wait for the first response byte that matters: the first data event of a streamed 2xx response (vLLM
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
  /**
   * @internal The request run this attempt belongs to, listened to instead of `signal` (the client's own
   * transport; a `sendAttempt` seam gets `signal`).
   */
  run?: RunAbort | undefined;
}

/**
 * @internal
 * A GET the client sends on its own behalf (a `/health` probe, a `/metrics` poll): whole answer, one deadline
 * for all of it, the connect also bounded by the client's `timeouts.connectMs`.
 */
export function bookkeepingGet(
  engine: string,
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
    // Short (seconds) and unref'd: left to run out rather than cleared by every caller.
    signal: deadlineSignal(timeoutMs, engine).signal,
  };
}

/**
 * @internal
 * A signal that aborts `timeoutMs` from now with a typed `TimeoutError` (phase `total`): `AbortSignal.timeout`'s
 * reason is a DOMException, which the error mapping took for a connection failure (`ERR_CONNECTION`, system code
 * 23). Infinity never aborts; a deadline past Node's 2^31-1 ms timer limit is re-armed in steps (one timer of that
 * length fires after 1 ms). `clear` stops it early; its timer does not keep the process alive either way.
 */
export function deadlineSignal(timeoutMs: number, engine?: string): { signal: AbortSignal; clear: () => void } {
  const controller = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  if (timeoutMs < Number.POSITIVE_INFINITY) {
    const deadlineMs = performance.now() + timeoutMs;
    const arm = () => {
      const leftMs = deadlineMs - performance.now();
      if (leftMs <= 0) {
        controller.abort(new TimeoutError('total', timeoutMs, engine === undefined ? {} : { engine }));
        return;
      }
      timer = setTimeout(arm, Math.min(leftMs, MAX_TIMER_MS)).unref();
    };
    arm();
  }
  return { signal: controller.signal, clear: () => clearTimeout(timer) };
}

/** Receives a 2xx body as it arrives; timestamps are taken before any parsing. */
export interface AttemptSink {
  /**
   * A body chunk. Returns true when the chunk completed a data event that reached the caller: a stream's first
   * such event ends its `ttfbTimeoutMs` and makes a later failure unsafe to re-send. Bytes that deliver nothing (an
   * SSE comment, a keep-alive ping, half an event) do neither.
   */
  onData(chunk: Buffer, receivedAtMs: number): boolean;
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

const NO_RAW_HEADERS: readonly Buffer[] = Object.freeze([]);

/**
 * A finished exchange. Headers and trailers are parsed when first read: the request path reads them only for a
 * failed status (`Retry-After`) or when someone listens for request stats (`Server-Timing`), so a 2xx answer
 * nobody inspects never builds a headers object.
 */
class ExchangeResult implements AttemptResult {
  private parsedHeaders: IncomingHttpHeaders | undefined;
  private parsedTrailers: IncomingHttpHeaders | undefined;

  constructor(
    readonly status: number,
    private readonly rawHeaders: readonly Buffer[],
    private readonly rawTrailers: readonly Buffer[],
    readonly body: Buffer | undefined,
    readonly timing: AttemptTiming,
  ) {}

  get headers(): IncomingHttpHeaders {
    this.parsedHeaders ??= parseHeaders(this.rawHeaders as Buffer[]) as IncomingHttpHeaders;
    return this.parsedHeaders;
  }

  get trailers(): IncomingHttpHeaders {
    this.parsedTrailers ??= parseHeaders(this.rawTrailers as Buffer[]) as IncomingHttpHeaders;
    return this.parsedTrailers;
  }
}

/**
 * One attempt on the wire: the undici handler of each try (a reused idle socket that dies before any byte is tried
 * again on another connection), the stream's watchdog, the caller's abort listener and the sink's flow control, in
 * one object. A long request holds what it holds for seconds, and every byte is copied by each young-generation GC
 * (bench/rl-burst.mjs): so no closures, no per-try objects, and the result and timing are built at the end.
 *
 * It implements undici's handler interface of `onConnect`/`onHeaders`/`onData`/`onComplete`/`onError` that
 * `Client` speaks natively: given `onRequestStart`-style methods, undici 7 wraps the handler in an `UnwrapHandler`
 * and a controller per request and parses every response's headers into an object first.
 */
class Exchange implements AttemptFlow {
  private readonly startedAtMs = performance.now();
  private connection: PooledConnection | undefined;
  private reused = false;
  private staleRetries = 0;
  private poolWaitMs = 0;
  private acquiredFromMs = 0;
  private sentAtMs = 0;
  private status = 0;
  private headersAtMs = 0;
  /** An informational (1xx) response came first: the server answered, so a reset after it is not a stale socket. */
  private interim = false;
  /** An error status's body went past what is kept: the request was cut, and the status settles with what was kept. */
  private errorBodyCut = false;
  /** When the sink said a data event reached the caller (0: none yet). */
  private firstEventAtMs = 0;
  private lastDataAtMs = 0;
  private rawHeaders: readonly Buffer[] = NO_RAW_HEADERS;
  private chunks: Buffer[] | undefined;
  private size = 0;
  private paused = false;
  /** Resolved or rejected: a connection that arrives late goes back to the pool unused. */
  private settled = false;
  private watchdog: NodeJS.Timeout | undefined;
  /** undici's abort of the request in flight (from `onConnect`); undefined while the connect is pending. */
  private abortRequest: ((error: Error) => void) | undefined;
  /** undici's resume of a paused response (from `onHeaders`). */
  private resumeReading: (() => void) | undefined;

  /** Sends the request; the promise settles with the attempt. */
  static send(pool: ConnectionPool, request: AttemptRequest, sink: AttemptSink | undefined): Promise<AttemptResult> {
    let exchange!: Exchange;
    const promise = new Promise<AttemptResult>((resolve, reject) => {
      exchange = new Exchange(pool, request, sink, resolve, reject);
    });
    exchange.start();
    return promise;
  }

  private constructor(
    private readonly pool: ConnectionPool,
    private readonly request: AttemptRequest,
    private readonly sink: AttemptSink | undefined,
    private readonly resolve: (result: AttemptResult) => void,
    private readonly reject: (error: unknown) => void,
  ) {}

  private start(): void {
    // The caller's abort is heard from the start: undici calls `onConnect` only once the socket is connected, and
    // an abort during a pending connect (a full accept queue) used to wait for the connect timeout.
    const { run, signal } = this.request;
    if (this.aborted()) {
      this.fail(this.abortCause() ?? new AbortError('The request was aborted', { engine: this.pool.origin }));
      return;
    }
    if (run) run.attach(this);
    else signal?.addEventListener('abort', this, { once: true });
    this.acquire();
  }

  private acquire(preferNew = false): void {
    this.acquiredFromMs = performance.now();
    let acquired: PooledConnection | Promise<PooledConnection>;
    try {
      acquired = this.pool.acquire(this, preferNew);
    } catch (error) {
      this.fail(error);
      return;
    }
    if (acquired instanceof Promise) {
      acquired.then(
        (connection) => this.dispatch(connection),
        (error: unknown) => this.fail(error),
      );
    } else {
      this.dispatch(acquired);
    }
  }

  private dispatch(connection: PooledConnection): void {
    if (this.settled || this.aborted()) {
      // Aborted between the pool's grant and this callback: nothing was sent on it.
      this.pool.release(connection, true);
      this.fail(this.abortCause() ?? new AbortError('The request was aborted'));
      return;
    }
    const now = performance.now();
    this.poolWaitMs += now - this.acquiredFromMs;
    this.sentAtMs = now;
    this.connection = connection;
    this.reused = connection.connected;
    this.status = 0;
    this.headersAtMs = 0;
    this.interim = false;
    this.errorBodyCut = false;
    this.firstEventAtMs = 0;
    this.rawHeaders = NO_RAW_HEADERS;
    this.chunks = undefined;
    this.size = 0;
    this.paused = false;
    this.abortRequest = undefined;
    this.resumeReading = undefined;
    const { request, sink, pool } = this;
    const ttfbMs = Math.min(request.ttfbTimeoutMs, MAX_TIMER_MS);
    // A stream's deadlines are the watchdog's (see `check`): undici's bodyTimeout would start at the headers,
    // which vLLM sends before the request even leaves its queue. A whole answer arrives at once: undici's
    // coarse timers bound it.
    if (sink && request.ttfbTimeoutMs > 0) this.arm(request.ttfbTimeoutMs);
    connection.client.dispatch(
      {
        origin: pool.origin,
        method: request.method,
        path: request.path,
        headers: request.headers,
        body: request.body ?? null,
        headersTimeout: ttfbMs,
        bodyTimeout: sink ? 0 : Math.min(request.idleTimeoutMs, MAX_TIMER_MS),
      },
      this as unknown as Dispatcher.DispatchHandler,
    );
  }

  /** The signal a wait for a connection listens to, made only when one begins (see `ConnectionPool.acquire`). */
  waitSignal(): AbortSignal | undefined {
    return this.request.run?.signal ?? this.request.signal;
  }

  private aborted(): boolean {
    return this.request.run?.aborted ?? this.request.signal?.aborted ?? false;
  }

  private abortCause(): unknown {
    return this.request.run ? this.request.run.reason : this.request.signal?.reason;
  }

  /** The caller aborted (this object is the signal's, or the run's, listener: no closure per request). */
  handleEvent(): void {
    this.end(new AbortError('The request was aborted', { engine: this.pool.origin, cause: this.abortCause() }));
  }

  /** Ends the try in flight with `error`; before undici started it (connect pending) only its connection can. */
  private end(error: Error): void {
    if (this.abortRequest) this.abortRequest(error);
    else if (this.connection) void this.connection.client.destroy(error).catch(ignoreError);
    else this.fail(error);
  }

  onConnect(abort: (error: Error) => void): void {
    this.abortRequest = abort;
    if (this.aborted()) this.handleEvent();
  }

  onHeaders(statusCode: number, rawHeaders: Buffer[], resume: () => void): boolean {
    if (statusCode < 200) {
      // 102 Processing, 103 Early Hints: the final response follows on the same exchange (undici reports each).
      // Taken as the final one, it turned the body of a stream's 200 into an error body: no event reached the
      // caller, and the stream timed out or ended as truncated.
      this.interim = true;
      return !this.paused;
    }
    this.headersAtMs = performance.now();
    this.status = statusCode;
    this.rawHeaders = rawHeaders;
    if (statusCode < 200 || statusCode >= 300 || !this.sink) {
      this.chunks = [];
    } else {
      this.resumeReading = resume;
      this.sink.onFlow?.(this);
    }
    return !this.paused;
  }

  onData(chunk: Buffer): boolean {
    const chunks = this.chunks;
    if (chunks) {
      const ok = this.status >= 200 && this.status < 300;
      if (this.size < MAX_ERROR_BODY_BYTES || ok) chunks.push(chunk);
      this.size += chunk.length;
      if (!ok && this.size > MAX_ERROR_BODY_BYTES && !this.errorBodyCut) {
        // All of an error body the caller can get is kept; reading an endless one never ended the request (its
        // headers had stopped the ttfb deadline, and a steady trickle never trips the idle one).
        this.errorBodyCut = true;
        this.abortRequest?.(new Error('error body cut at transport.MAX_ERROR_BODY_BYTES'));
        return false;
      }
      if (ok && this.size > this.request.maxResponseBytes) {
        this.chunks = [];
        this.abortRequest?.(
          new StreamParseError(
            `The response body exceeds transport.maxResponseBytes (${this.request.maxResponseBytes} bytes)`,
            { engine: this.pool.origin, status: this.status },
          ),
        );
      }
      return true;
    }
    const now = performance.now();
    this.lastDataAtMs = now;
    const event = this.sink!.onData(chunk, now);
    // The sink may have failed the attempt on this chunk (a bad event): it is settled, nothing to re-arm.
    if (this.settled) return false;
    if (event && this.firstEventAtMs === 0) {
      this.firstEventAtMs = now;
      if (this.request.idleTimeoutMs > 0) this.arm(this.request.idleTimeoutMs);
      else this.disarm();
    }
    return !this.paused;
  }

  onComplete(rawTrailers: Buffer[] | null): void {
    this.disarm();
    this.pool.release(this.connection!, true);
    this.settleResponse(rawTrailers ?? NO_RAW_HEADERS);
  }

  onError(error: Error): void {
    this.disarm();
    const connection = this.connection!;
    this.pool.release(connection, false);
    if (this.errorBodyCut) {
      this.settleResponse(NO_RAW_HEADERS);
      return;
    }
    const code = (error as { code?: string }).code;
    if (
      this.reused &&
      this.headersAtMs === 0 &&
      !this.interim &&
      code !== undefined &&
      STALE_CODES.has(code) &&
      !isUnacceptableResponse(error) &&
      this.staleRetries < MAX_STALE_RETRIES &&
      !this.aborted()
    ) {
      // A reused idle socket the server closed as we wrote (uvicorn sends no keep-alive hint): nothing reached it.
      // Re-sent on a new connection when one can be opened, which cannot be stale: one re-send, not a chain of
      // them over other idle sockets (a request that made the server reset sent 4 times per attempt).
      this.staleRetries++;
      this.connection = undefined;
      this.abortRequest = undefined;
      this.acquire(true);
      return;
    }
    this.settleFailure(error);
  }

  /** The response is whole (or an error body was cut at what is kept): settles with it. */
  private settleResponse(rawTrailers: readonly Buffer[]): void {
    const chunks = this.chunks;
    const body = chunks === undefined ? undefined : chunks.length === 1 ? chunks[0] : Buffer.concat(chunks);
    const timing = this.timing(this.connection!);
    this.stopListening();
    this.settled = true;
    this.resolve(new ExchangeResult(this.status, this.rawHeaders, rawTrailers, body, timing));
  }

  /** Stops reading the socket (the sink's consumer is behind); see {@link AttemptFlow}. */
  pause(): void {
    this.paused = true;
  }

  resume(): void {
    // Time the consumer held the stream is not the server's silence.
    this.lastDataAtMs = performance.now();
    if (!this.paused) return;
    this.paused = false;
    this.resumeReading?.();
  }

  private timing(connection: PooledConnection): AttemptTiming {
    const headersArrived = this.headersAtMs > 0;
    return {
      poolWaitMs: this.poolWaitMs,
      connectMs:
        this.reused || connection.connectedAtMs === undefined ? undefined : connection.connectedAtMs - this.sentAtMs,
      ttfbMs: headersArrived ? this.headersAtMs - this.sentAtMs : 0,
      reusedConnection: this.reused,
      staleRetries: this.staleRetries,
      startedAtMs: this.startedAtMs,
      headersAtMs: this.headersAtMs,
      endedAtMs: performance.now(),
    };
  }

  /** The attempt failed after a try (the connection is released). */
  private settleFailure(error: unknown): void {
    // What reached the caller decides: a stream that broke before its first data event delivered nothing (the
    // engine aborts a request whose client went away; a ping or half an event is nothing) and may be re-sent like
    // a failure before the response.
    const streamed = this.sink !== undefined && this.status >= 200 && this.status < 300;
    const afterResponseBytes = streamed ? this.firstEventAtMs > 0 : this.headersAtMs > 0;
    const timing = this.timing(this.connection!);
    this.stopListening();
    this.settled = true;
    this.reject(
      failure(error, this.pool.origin, afterResponseBytes, timing, this.request, this.aborted(), this.abortCause()),
    );
  }

  /** The attempt failed before any try (aborted first, no connection to be had). */
  private fail(error: unknown): void {
    if (this.settled) return;
    this.settled = true;
    this.stopListening();
    const timing: AttemptTiming = {
      poolWaitMs: this.acquiredFromMs > 0 ? performance.now() - this.acquiredFromMs + this.poolWaitMs : 0,
      connectMs: undefined,
      ttfbMs: 0,
      reusedConnection: false,
      staleRetries: this.staleRetries,
      startedAtMs: this.startedAtMs,
      headersAtMs: 0,
      endedAtMs: performance.now(),
    };
    this.reject(failure(error, this.pool.origin, false, timing, this.request, this.aborted(), this.abortCause()));
  }

  private stopListening(): void {
    if (this.request.run) this.request.run.detach(this);
    else this.request.signal?.removeEventListener('abort', this);
  }

  /**
   * A streamed request's deadlines: `ttfbMs` from the send to the first data event (headers alone do not count:
   * vLLM sends them while the request is still queued; nor do pings), then `idleMs` between body chunks. One timer per attempt,
   * armed at the send and re-armed at the first data event; later chunks only move `lastDataAtMs`, and the timer,
   * when it fires early, re-arms itself for what is left.
   */
  private arm(delayMs: number): void {
    if (this.watchdog) clearTimeout(this.watchdog);
    if (this.settled) {
      this.watchdog = undefined;
      return;
    }
    this.watchdog = setTimeout(fireWatchdog, Math.min(MAX_TIMER_MS, Math.max(1, delayMs)), this);
  }

  private disarm(): void {
    if (this.watchdog) clearTimeout(this.watchdog);
    this.watchdog = undefined;
  }

  /** @internal The watchdog fired (through {@link fireWatchdog}: no closure per attempt). */
  check(): void {
    this.watchdog = undefined;
    const started = this.firstEventAtMs > 0;
    const limitMs = started ? this.request.idleTimeoutMs : this.request.ttfbTimeoutMs;
    if (limitMs <= 0) return;
    if (started && this.paused) {
      // The caller is not reading (backpressure): the engine cannot send, so the idle time is not the engine's.
      // resume() restarts the idle clock.
      this.arm(limitMs);
      return;
    }
    const deadline = (started ? this.lastDataAtMs : this.sentAtMs) + limitMs;
    const now = performance.now();
    if (now < deadline) {
      this.arm(deadline - now);
      return;
    }
    this.end(new TimeoutError(started ? 'idle' : 'ttfb', limitMs, { engine: this.pool.origin }));
  }
}

const fireWatchdog = (exchange: Exchange): void => exchange.check();
const ignoreError = (): void => {};

/**
 * @internal
 * Sends one request on a pooled connection. A reused idle socket that dies before any response byte (the server
 * closed it as we wrote: uvicorn sends no keep-alive hint) is retried at once on another connection, up to 3 times,
 * and counted; it is not a failure of the request. Rejects with an {@link AttemptFailure}.
 */
export function sendAttempt(
  pool: ConnectionPool,
  request: AttemptRequest,
  sink: AttemptSink | undefined,
): Promise<AttemptResult> {
  return Exchange.send(pool, request, sink);
}

function failure(
  error: unknown,
  engine: string,
  afterResponseBytes: boolean,
  timing: AttemptTiming,
  request: AttemptRequest,
  aborted: boolean,
  reason: unknown,
): AttemptFailure {
  // Aborted for a typed reason (a deadline's TimeoutError): that reason, not the generic abort it caused.
  const mapped =
    aborted && (isInferenceError(reason) || !(error instanceof AbortError))
      ? mapTransportError(reason ?? error, { engine, afterResponseBytes })
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
