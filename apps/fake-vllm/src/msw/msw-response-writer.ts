import type { ResponseHeaders, ResponseWriter } from '../routes/route.js';

/** Chunks a stream may queue unread before it holds its events (the fetch body counts chunks, not bytes). */
const HIGH_WATER_CHUNKS = 64;

const encoder = new TextEncoder();

/** Headers a fetch `Response` computes itself or cannot carry. */
const TRANSPORT_HEADERS = new Set(['content-length', 'connection', 'trailer', 'keep-alive']);

function fetchHeaders(headers: ResponseHeaders): Record<string, string> {
  const result: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (!TRANSPORT_HEADERS.has(name)) result[name] = String(value);
  }
  return result;
}

/**
 * The {@link ResponseWriter} of the msw handlers: a fetch `Response` ({@link MswResponseWriter.response}) that
 * resolves when the status is known, with a `ReadableStream` body for streams. There is no socket: a reset
 * before the response is a network error (`Response.error()`), a reset or close during the body errors the
 * stream once what was written has been read, as a client sees a connection cut after those bytes.
 */
export class MswResponseWriter implements ResponseWriter {
  /** The response msw hands to `fetch`. */
  readonly response: Promise<Response>;
  private resolveResponse!: (response: Response) => void;
  private controller: ReadableStreamDefaultController<Uint8Array> | undefined;
  private started = false;
  private ended = false;
  private gone = false;
  private pendingError: Error | undefined;
  private readonly closeListeners: Array<() => void> = [];
  private readonly drainListeners: Array<() => void> = [];

  constructor(
    signal: AbortSignal,
    private readonly transport: { refuseFor(windowMs: number): void },
  ) {
    this.response = new Promise((resolve) => {
      this.resolveResponse = resolve;
    });
    if (signal.aborted) this.clientGone();
    else signal.addEventListener('abort', () => this.clientGone(), { once: true });
  }

  get headersSent(): boolean {
    return this.started;
  }

  get closed(): boolean {
    return this.gone || this.ended;
  }

  send(status: number, headers: ResponseHeaders, body?: string): void {
    if (this.started) return;
    this.started = true;
    this.ended = true;
    this.resolveResponse(
      new Response(body === undefined || body === '' ? null : body, { status, headers: fetchHeaders(headers) }),
    );
  }

  startStream(status: number, headers: ResponseHeaders): void {
    if (this.started) return;
    this.started = true;
    const stream = new ReadableStream<Uint8Array>(
      {
        start: (controller) => {
          this.controller = controller;
        },
        // Called when the reader wants more and nothing is queued: a reset deferred until then has been "flushed",
        // and a stream held for a reader that fell behind may write again.
        pull: () => {
          this.flushPendingError();
          if (!this.closed) for (const listener of this.drainListeners.splice(0)) listener();
        },
        cancel: () => this.clientGone(),
      },
      // No read-ahead: pull() means a read is waiting. msw tees every mocked response (`response.clone()` for its
      // 'response' event), and a tee reads its source as soon as the source's queue is below the high-water mark;
      // with the default mark of 1, pull() ran right after the tee took the last chunk, the deferred error followed,
      // and erroring the tee's branches discarded that chunk before the client read it (a truncated whole body
      // arrived as 0 bytes).
      { highWaterMark: 0 },
    );
    this.resolveResponse(new Response(stream, { status, headers: fetchHeaders(headers) }));
  }

  write(text: string): void {
    if (!this.started) this.startStream(200, {});
    if (this.closed || !this.controller) return;
    this.controller.enqueue(encoder.encode(text));
  }

  end(): void {
    if (this.closed) return;
    this.ended = true;
    this.controller?.close();
  }

  reset(options: { afterFlush?: boolean } = {}): void {
    this.cut(new TypeError('fake-vllm: connection reset'), options.afterFlush ?? false);
  }

  destroy(): void {
    this.cut(new TypeError('fake-vllm: connection closed before the response ended'), true);
  }

  closeConnectionAfterResponse(): boolean {
    return false;
  }

  refuseConnections(windowMs: number): void {
    this.transport.refuseFor(windowMs);
  }

  onClose(listener: () => void): void {
    this.closeListeners.push(listener);
  }

  backedUp(listener: () => void): boolean {
    const desired = this.controller?.desiredSize;
    if (this.closed || desired === undefined || desired === null || desired > -HIGH_WATER_CHUNKS) return false;
    this.drainListeners.push(listener);
    return true;
  }

  private cut(error: Error, afterFlush: boolean): void {
    if (!this.started) {
      this.started = true;
      this.ended = true;
      this.resolveResponse(Response.error());
      return;
    }
    if (this.closed) return;
    this.ended = true;
    for (const listener of this.closeListeners.splice(0)) listener();
    this.pendingError = error;
    // Erroring a stream discards what is still queued: wait until the reader has taken it (nothing is queued when
    // desiredSize, which is the high-water mark 0 minus the queued chunks, is 0).
    if (!afterFlush || (this.controller?.desiredSize ?? 0) >= 0) this.flushPendingError();
  }

  private flushPendingError(): void {
    const error = this.pendingError;
    if (!error) return;
    this.pendingError = undefined;
    this.controller?.error(error);
  }

  private clientGone(): void {
    if (this.gone) return;
    const unfinished = !this.ended;
    this.gone = true;
    if (!this.started) {
      this.started = true;
      this.resolveResponse(Response.error());
    }
    if (unfinished) for (const listener of this.closeListeners.splice(0)) listener();
  }
}
