import type { EngineHost } from '../engine-host.js';

/** An HTTP method a route answers. HEAD is answered by every GET route, as Starlette does. */
export type HttpMethod = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

/** One request as every transport (node:http, msw) presents it to a route. */
export interface RouteRequest {
  /** Upper-case method, e.g. `POST`. */
  readonly method: string;
  /** The path without the query, e.g. `/v1/completions`. */
  readonly path: string;
  /** The query string, parsed. */
  readonly query: URLSearchParams;
  /** A header by lower-case name; `undefined` when absent. */
  header(name: string): string | undefined;
  /**
   * The body's bytes, read once within the transport's bounds (node:http: 64 MiB and `requestBodyTimeoutMs`).
   * Later calls return the same bytes.
   */
  body(): Promise<Uint8Array>;
  /** The body parsed as JSON; `{}` when empty. A body that is not JSON is FastAPI's 400. */
  json(): Promise<unknown>;
}

/** Headers of a response, by lower-case name. */
export type ResponseHeaders = Record<string, string | number>;

/**
 * How a route answers, whatever the transport. A whole response is one {@link ResponseWriter.send}; a stream is
 * {@link ResponseWriter.startStream}, any number of {@link ResponseWriter.write}s of pre-framed text, then
 * {@link ResponseWriter.end}. Socket-level faults have their own methods, since only a transport knows what a
 * reset is (node:http: a TCP RST; msw: a network error).
 */
export interface ResponseWriter {
  /** The status line and headers are out: the response can no longer become an error response. */
  readonly headersSent: boolean;
  /** The client went away or the response was cut: nothing more reaches it. */
  readonly closed: boolean;
  /** Writes a whole response. `content-length` is set from the body unless `headers` sets it. */
  send(status: number, headers: ResponseHeaders, body?: string): void;
  /** Writes the status line and headers now, before any body byte (a stream's start). */
  startStream(status: number, headers: ResponseHeaders): void;
  /** Writes text that is already framed (SSE events); starts a 200 stream first if needed. */
  write(text: string): void;
  /** Ends the response, with trailers when the transport supports them (node:http does, fetch does not). */
  end(trailers?: ResponseHeaders): void;
  /**
   * Resets the connection (TCP RST). `afterFlush`: once what was written so far has reached the kernel, so the
   * client receives it before the reset.
   */
  reset(options?: { afterFlush?: boolean }): void;
  /** Closes the connection without a reset (the client sees the response end early). */
  destroy(): void;
  /**
   * Closes this connection `delayMs` after the response, once idle, and counts an `idle-close-race` then.
   * Returns false when the transport has no connection to close (msw).
   */
  closeConnectionAfterResponse(delayMs: number): boolean;
  /** Stops accepting new connections for `windowMs` (ECONNREFUSED), where the transport can. */
  refuseConnections(windowMs: number): void;
  /** Calls `listener` once if the client goes away before the response has ended. */
  onClose(listener: () => void): void;
  /**
   * Whether the client has fallen behind: more than {@link STREAM_HIGH_WATER_BYTES} written and not yet taken by
   * it. When it has, `listener` is called once everything queued has gone out (not if the response closes first).
   */
  backedUp(listener: () => void): boolean;
}

/**
 * How much a stream may queue for a client that is not reading before it holds its events: uvicorn's
 * `HIGH_WATER_LIMIT` (`uvicorn/protocols/http/flow_control.py`), above which its `send()` awaits `drain()`.
 */
export const STREAM_HIGH_WATER_BYTES = 65_536;

/** What a route handler receives. */
export interface RouteContext {
  readonly request: RouteRequest;
  readonly response: ResponseWriter;
  /** The engine behind this server: scheduler, fault injector, options, sessions, LoRA adapters. */
  readonly host: EngineHost;
}

/** A static answer, for routes given in a config file (JSON has no functions). */
export interface StaticRouteResponse {
  /** @default 200 */
  status?: number;
  /** Sent as JSON unless it is a string. @default no body */
  body?: unknown;
  /** Extra response headers. */
  headers?: Record<string, string>;
}

/**
 * One route: a method (or several) and an exact path, answered by `handler` or by a static `response`.
 * Extra routes given as the `routes` option are matched before the built-in ones (so they may add a route or
 * replace one) and before the 404.
 */
export interface FakeRoute {
  method: HttpMethod | readonly HttpMethod[];
  /** Exact path, e.g. `/skyrl/v1/generate`. */
  path: string;
  /** Served only in dev mode (`devMode: true`), like vLLM's `VLLM_SERVER_DEV_MODE` routes. @default false */
  devMode?: boolean;
  /** Answers the request; may throw an `HttpError` (sent as vLLM's error body). */
  handler?: (context: RouteContext) => void | Promise<void>;
  /** A fixed answer, when there is no `handler`. */
  response?: StaticRouteResponse;
}
