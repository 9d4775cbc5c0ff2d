import type { ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { type ResponseHeaders, type ResponseWriter, STREAM_HIGH_WATER_BYTES } from '../routes/route.js';

/** What the node:http writer asks of its server for connection-level faults. */
export interface NodeConnectionControl {
  /** Closes the response's socket `delayMs` after it next goes idle, counting an `idle-close-race`. */
  closeWhenIdle(response: ServerResponse, delayMs: number): void;
  /** Stops listening for `windowMs`. */
  refuseFor(windowMs: number): void;
}

/**
 * How many requests' events go out together: vLLM's output handler processes an engine step's outputs in chunks of
 * `VLLM_V1_OUTPUT_PROC_CHUNK_SIZE` (128) and yields to the event loop between chunks, where each request's
 * generator writes its event (`v1/engine/async_llm.py`, `envs.py`).
 */
export const OUTPUT_CHUNK_SIZE = 128;

/**
 * Stream writes waiting to go out, in call order: a socket, then its framed chunk. Writing a chunk of requests'
 * events back to back, after they were all formatted, is also cheaper: in bench/connections.mjs at 10,000 streams
 * (two runs each, alternating with the unbatched build) ITL 200 ms gave 49,000-50,000 events/s at 88% of a core
 * against 44,000-45,000 at 101-103%, and ITL 400 ms 15.4-17.1 against 21.2-22.6 µs of server CPU per event. On
 * loopback the writer pays for waking the reader; a client woken by one write is often still reading at the next.
 */
const pending: Array<Socket | string> = [];

/** Writes every pending chunk. Every other operation on a response calls it first, so bytes keep their order. */
function flushPending(): void {
  for (let index = 0; index < pending.length; index += 2) {
    const socket = pending[index] as Socket;
    if (!socket.destroyed) socket.write(pending[index + 1] as string);
  }
  pending.length = 0;
}

/**
 * The {@link ResponseWriter} of the node:http server. Streams write each pre-framed step straight to the socket as
 * one HTTP chunk: Node's chunked `res.write` issues four writes per call (size, CRLF, data, CRLF), which dominated
 * server CPU at 10,000 streams (bench/connections.mjs: ~68,000 -> ~95,000 events/s).
 */
export class NodeResponseWriter implements ResponseWriter {
  private chunked = false;

  constructor(
    private readonly response: ServerResponse,
    private readonly connection: NodeConnectionControl,
  ) {}

  get headersSent(): boolean {
    return this.response.headersSent;
  }

  get closed(): boolean {
    // Ended counts too, as in the msw writer: a held stream resumed by a late 'drain' must not write after end().
    return this.response.destroyed || this.response.writableEnded;
  }

  send(status: number, headers: ResponseHeaders, body = ''): void {
    flushPending();
    this.response.writeHead(status, { 'content-length': Buffer.byteLength(body), ...headers });
    this.response.end(body);
  }

  startStream(status: number, headers: ResponseHeaders): void {
    flushPending();
    const response = this.response;
    if (response.headersSent || response.destroyed) return;
    response.writeHead(status, headers);
    this.chunked = headers['content-length'] === undefined;
    // Flush the head now: Node would otherwise hold it until the first body write.
    response.flushHeaders();
  }

  write(text: string): void {
    const response = this.response;
    if (!response.headersSent) {
      this.startStream(200, {});
      response.write(text);
      return;
    }
    // Safe because nothing else is queued on this response; res.end() still writes the terminating chunk.
    const socket = response.socket;
    if (this.chunked && socket && response.writableLength === 0) {
      if (pending.length === 0) queueMicrotask(flushPending);
      pending.push(socket, `${Buffer.byteLength(text).toString(16)}\r\n${text}\r\n`);
      if (pending.length === 2 * OUTPUT_CHUNK_SIZE) flushPending();
    } else {
      flushPending();
      response.write(text);
    }
  }

  end(trailers?: ResponseHeaders): void {
    flushPending();
    if (trailers && this.chunked) this.response.addTrailers(trailers as Record<string, string>);
    this.response.end();
  }

  reset(options: { afterFlush?: boolean } = {}): void {
    flushPending();
    const socket = this.response.socket;
    if (!socket) return;
    if (options.afterFlush) socket.write('', () => socket.resetAndDestroy());
    else socket.resetAndDestroy();
  }

  destroy(): void {
    flushPending();
    const socket = this.response.socket;
    if (!socket) return;
    // res.write() corks the socket until the next tick, and destroy() discards what is corked or queued (a truncated
    // whole body arrived as headers and 0 bytes): close once what was written has been handed to the kernel.
    socket.write('', () => socket.destroy());
  }

  closeConnectionAfterResponse(delayMs: number): boolean {
    flushPending();
    this.connection.closeWhenIdle(this.response, delayMs);
    return true;
  }

  refuseConnections(windowMs: number): void {
    this.connection.refuseFor(windowMs);
  }

  onClose(listener: () => void): void {
    const response = this.response;
    response.on('close', () => {
      if (!response.writableFinished) listener();
    });
  }

  backedUp(listener: () => void): boolean {
    const socket = this.response.socket;
    // Above the socket's own 16 KiB mark, the write that crossed it set needDrain: 'drain' follows when it empties.
    if (!socket || this.response.writableLength <= STREAM_HIGH_WATER_BYTES || !socket.writableNeedDrain) return false;
    socket.once('drain', listener);
    return true;
  }
}
