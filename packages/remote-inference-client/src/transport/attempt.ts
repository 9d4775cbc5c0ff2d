import type { IncomingHttpHeaders } from 'node:http';
import { performance } from 'node:perf_hooks';
import type { Dispatcher } from 'undici';
import { AbortError, type InferenceError, mapTransportError } from '../errors.js';
import type { ConnectionPool, PooledConnection } from './connection-pool.js';

/** One HTTP exchange to send. */
export interface AttemptRequest {
  method: 'GET' | 'POST';
  path: string;
  headers: Record<string, string>;
  body: string | undefined;
  /** Longest wait for response headers (vLLM sends them with the first token). 0 = none. */
  ttfbTimeoutMs: number;
  /** Longest silence between body chunks. 0 = none. */
  idleTimeoutMs: number;
  connectTimeoutMs: number;
  signal: AbortSignal | undefined;
}

/** Receives a 2xx body as it arrives; timestamps are taken before any parsing. */
export interface AttemptSink {
  onData(chunk: Buffer, receivedAtMs: number): void;
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
  timing: AttemptTiming;
}

/** An attempt failure, with whether any response byte had arrived (which decides if it may be re-sent). */
export interface AttemptFailure {
  error: InferenceError;
  afterResponseBytes: boolean;
  timing: AttemptTiming;
}

const MAX_ERROR_BODY_BYTES = 64 * 1024;
const MAX_STALE_RETRIES = 3;

const STALE_CODES = new Set(['ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET', 'UND_ERR_CLOSED']);

class ExchangeHandler implements Dispatcher.DispatchHandler {
  status = 0;
  headers: IncomingHttpHeaders = {};
  headersAtMs = 0;
  private chunks: Buffer[] | undefined;
  private size = 0;
  private controller: Dispatcher.DispatchController | undefined;
  private readonly onAbort = () =>
    this.controller?.abort(new AbortError('The request was aborted', { cause: this.signal?.reason }));

  constructor(
    private readonly sink: AttemptSink | undefined,
    private readonly signal: AbortSignal | undefined,
    private readonly resolve: (result: { body: Buffer | undefined }) => void,
    private readonly reject: (error: unknown) => void,
  ) {}

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    if (this.signal) {
      if (this.signal.aborted) this.onAbort();
      else this.signal.addEventListener('abort', this.onAbort, { once: true });
    }
  }

  onResponseStart(_controller: Dispatcher.DispatchController, statusCode: number, headers: IncomingHttpHeaders): void {
    this.headersAtMs = performance.now();
    this.status = statusCode;
    this.headers = headers;
    if (statusCode < 200 || statusCode >= 300 || !this.sink) this.chunks = [];
  }

  onResponseData(_controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.chunks) {
      if (this.size < MAX_ERROR_BODY_BYTES || (this.status >= 200 && this.status < 300)) this.chunks.push(chunk);
      this.size += chunk.length;
      return;
    }
    this.sink!.onData(chunk, performance.now());
  }

  onResponseEnd(): void {
    this.detach();
    this.resolve({ body: this.chunks ? Buffer.concat(this.chunks) : undefined });
  }

  onResponseError(_controller: Dispatcher.DispatchController, error: Error): void {
    this.detach();
    this.reject(error);
  }

  private detach(): void {
    this.signal?.removeEventListener('abort', this.onAbort);
  }
}

/**
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
        handler = new ExchangeHandler(sink, request.signal, resolve, reject);
        connection.client.dispatch(
          {
            origin: pool.origin,
            method: request.method,
            path: request.path,
            headers: request.headers,
            body: request.body ?? null,
            headersTimeout: request.ttfbTimeoutMs,
            bodyTimeout: request.idleTimeoutMs,
          },
          handler,
        );
      });
      timing.headersAtMs = handler!.headersAtMs;
      timing.ttfbMs = handler!.headersAtMs - sentAtMs;
      timing.endedAtMs = performance.now();
      if (!reused) timing.connectMs = connectDuration(connection, sentAtMs);
      pool.release(connection, true);
      return { status: handler!.status, headers: handler!.headers, body, timing };
    } catch (error) {
      const afterResponseBytes = (handler?.headersAtMs ?? 0) > 0;
      pool.release(connection, false);
      const code = (error as { code?: string }).code;
      if (
        reused &&
        !afterResponseBytes &&
        code &&
        STALE_CODES.has(code) &&
        timing.staleRetries < MAX_STALE_RETRIES &&
        !request.signal?.aborted
      ) {
        timing.staleRetries++;
        continue;
      }
      if (!reused) timing.connectMs = connectDuration(connection, sentAtMs);
      if (handler && afterResponseBytes) {
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
  return { error: mapped, afterResponseBytes, timing };
}

/** True when a value thrown by {@link sendAttempt} is an {@link AttemptFailure}. */
export function isAttemptFailure(value: unknown): value is AttemptFailure {
  return typeof value === 'object' && value !== null && 'afterResponseBytes' in value && 'error' in value;
}
