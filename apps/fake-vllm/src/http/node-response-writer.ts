import type { ServerResponse } from 'node:http';
import { type ResponseHeaders, type ResponseWriter, STREAM_HIGH_WATER_BYTES } from '../routes/route.js';

/** What the node:http writer asks of its server for connection-level faults. */
export interface NodeConnectionControl {
  /** Closes the response's socket `delayMs` after it next goes idle, counting an `idle-close-race`. */
  closeWhenIdle(response: ServerResponse, delayMs: number): void;
  /** Stops listening for `windowMs`. */
  refuseFor(windowMs: number): void;
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
    return this.response.destroyed;
  }

  send(status: number, headers: ResponseHeaders, body = ''): void {
    this.response.writeHead(status, { 'content-length': Buffer.byteLength(body), ...headers });
    this.response.end(body);
  }

  startStream(status: number, headers: ResponseHeaders): void {
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
      socket.write(`${Buffer.byteLength(text).toString(16)}\r\n${text}\r\n`);
    } else {
      response.write(text);
    }
  }

  end(trailers?: ResponseHeaders): void {
    if (trailers && this.chunked) this.response.addTrailers(trailers as Record<string, string>);
    this.response.end();
  }

  reset(options: { afterFlush?: boolean } = {}): void {
    const socket = this.response.socket;
    if (!socket) return;
    if (options.afterFlush) socket.write('', () => socket.resetAndDestroy());
    else socket.resetAndDestroy();
  }

  destroy(): void {
    this.response.socket?.destroy();
  }

  closeConnectionAfterResponse(delayMs: number): boolean {
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
