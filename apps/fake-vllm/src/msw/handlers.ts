import { performance } from 'node:perf_hooks';
import { HttpResponse, http, type RequestHandler } from 'msw';
import type { Engine } from '../engine.js';
import { EngineHost } from '../engine-host.js';
import type { FaultInjector } from '../faults.js';
import { type EngineOptions, resolveEngineOptions } from '../options.js';
import { invalidJsonError } from '../protocol.js';
import type { FakeRoute, RouteRequest } from '../routes/route.js';
import { MswResponseWriter } from './msw-response-writer.js';

/** Options of {@link createFakeVllmHandlers}. */
export interface FakeVllmHandlersOptions extends Omit<EngineOptions, 'routes'> {
  /** Origin the handlers answer for, e.g. `http://fake-vllm.test`. @default "http://fake-vllm.test" */
  baseUrl?: string;
  /** Extra routes, matched before the built-in ones (see `FakeRoute`). @default none */
  routes?: readonly FakeRoute[];
}

/** msw handlers backed by one fake engine, and that engine for inspection. */
export interface FakeVllmHandlers {
  handlers: RequestHandler[];
  engine: Engine;
  injector: FaultInjector;
  /** The engine with its state and routes, as the node:http server has it. */
  host: EngineHost;
  baseUrl: string;
}

/** A fetch `Request` as a route sees it. */
class FetchRouteRequest implements RouteRequest {
  readonly method: string;
  readonly path: string;
  readonly query: URLSearchParams;
  private bodyRead: Promise<Uint8Array> | undefined;

  constructor(private readonly request: Request) {
    const url = new URL(request.url);
    this.method = request.method;
    this.path = url.pathname;
    this.query = url.searchParams;
  }

  header(name: string): string | undefined {
    return this.request.headers.get(name) ?? undefined;
  }

  body(): Promise<Uint8Array> {
    this.bodyRead ??= this.request.arrayBuffer().then((buffer) => new Uint8Array(buffer));
    return this.bodyRead;
  }

  async json(): Promise<unknown> {
    const bytes = await this.body();
    if (bytes.length === 0) return {};
    try {
      return JSON.parse(new TextDecoder().decode(bytes));
    } catch (error) {
      throw invalidJsonError((error as Error).message);
    }
  }
}

/**
 * The fake engine as msw request handlers, for testing fetch-based code (openai-node, plain fetch) in-process.
 * Every route and fault is the node:http server's own (one route table, one fault module): same wire format,
 * same deterministic tokens, same queueing and timing. Socket-level faults (`reset-*`, `refuse-connections`,
 * `idle-close-race`, a stall that closes) become network errors, since msw has no socket to reset.
 */
export function createFakeVllmHandlers(options: FakeVllmHandlersOptions = {}): FakeVllmHandlers {
  const { baseUrl: rawBaseUrl, routes = [], ...engineOptions } = options;
  const baseUrl = (rawBaseUrl ?? 'http://fake-vllm.test').replace(/\/$/, '');
  const host = new EngineHost(resolveEngineOptions(engineOptions), undefined, routes);
  host.transport = { url: baseUrl, connectionsOpen: 0, connectionsTotal: 0 };
  let refusingUntilMs = 0;
  const transport = {
    refuseFor(windowMs: number) {
      refusingUntilMs = Math.max(refusingUntilMs, performance.now() + windowMs);
    },
  };
  const handler = http.all(`${baseUrl}/*`, ({ request }) => {
    // `refuse-connections`: every request in the window fails as a refused connect would.
    if (performance.now() < refusingUntilMs) return HttpResponse.error();
    const writer = new MswResponseWriter(request.signal, transport);
    void host.dispatch(new FetchRouteRequest(request), writer);
    return writer.response;
  });
  return { handlers: [handler], engine: host.engine, injector: host.injector, host, baseUrl };
}
