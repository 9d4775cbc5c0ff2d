import type { IncomingMessage } from 'node:http';
import { HttpError, invalidJsonError } from '../protocol.js';
import type { RouteRequest } from '../routes/route.js';

/** Largest request body accepted; past it the request gets 413 and its connection is closed. */
export const MAX_BODY_BYTES = 64 * 1024 * 1024;

/** A node:http request as a route sees it; the body is read on demand, once, within bounds. */
export class NodeRouteRequest implements RouteRequest {
  readonly method: string;
  readonly path: string;
  readonly query: URLSearchParams;
  private bodyRead: Promise<Buffer> | undefined;

  constructor(
    private readonly request: IncomingMessage,
    private readonly requestBodyTimeoutMs: number,
  ) {
    const url = new URL(request.url ?? '/', 'http://fake');
    this.method = request.method ?? 'GET';
    this.path = url.pathname;
    this.query = url.searchParams;
  }

  header(name: string): string | undefined {
    const value = this.request.headers[name];
    return Array.isArray(value) ? value.join(', ') : value;
  }

  body(): Promise<Buffer> {
    this.bodyRead ??= this.readBody().then((chunks) => Buffer.concat(chunks));
    return this.bodyRead;
  }

  async json(): Promise<unknown> {
    const bytes = await this.body();
    if (bytes.length === 0) return {};
    try {
      return JSON.parse(bytes.toString('utf8'));
    } catch (error) {
      throw invalidJsonError((error as Error).message);
    }
  }

  /** Drains a body no route read, so the connection can serve its next request. */
  discardUnreadBody(): void {
    if (this.bodyRead === undefined) this.request.resume();
  }

  /**
   * The body's chunks, within {@link MAX_BODY_BYTES} and `requestBodyTimeoutMs`: a client trickling a body (one
   * byte every few seconds) would otherwise hold the connection and its request open forever.
   */
  private readBody(): Promise<Buffer[]> {
    const request = this.request;
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
      const timeoutMs = this.requestBodyTimeoutMs;
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
}
