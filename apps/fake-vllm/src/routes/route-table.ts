import type { FakeRoute, HttpMethod, RouteContext } from './route.js';

/** What a request resolves to: a route, a path with other methods (405), or nothing (404). */
export type RouteMatch =
  | { kind: 'route'; route: FakeRoute }
  | { kind: 'method-not-allowed'; allow: string }
  | { kind: 'not-found' };

/** Serves a static route answer. */
function staticHandler(route: FakeRoute): (context: RouteContext) => Promise<void> {
  const { status = 200, body, headers = {} } = route.response ?? {};
  return async ({ request, response }) => {
    await request.body();
    if (body === undefined) {
      response.send(status, headers);
      return;
    }
    const text = typeof body === 'string' ? body : JSON.stringify(body);
    const type = typeof body === 'string' ? 'text/plain; charset=utf-8' : 'application/json';
    response.send(status, { 'content-type': type, ...headers }, text);
  };
}

/**
 * Every route of one server, by exact path then method. Built once per engine; a lookup is one Map get. Routes
 * given later replace earlier ones with the same method and path.
 */
export class RouteTable {
  private readonly byPath = new Map<string, Map<string, FakeRoute>>();

  constructor(routes: readonly FakeRoute[], options: { devMode: boolean }) {
    for (const route of routes) {
      if (route.devMode && !options.devMode) continue;
      const resolved = route.handler ? route : { ...route, handler: staticHandler(route) };
      let methods = this.byPath.get(route.path);
      if (!methods) {
        methods = new Map();
        this.byPath.set(route.path, methods);
      }
      const list: readonly HttpMethod[] = typeof route.method === 'string' ? [route.method] : route.method;
      for (const method of list) methods.set(method, resolved);
    }
  }

  /** The route for `method` and `path`. HEAD is served by the GET route, as Starlette does. */
  match(method: string, path: string): RouteMatch {
    const methods = this.byPath.get(path);
    if (!methods) return { kind: 'not-found' };
    const route = methods.get(method) ?? (method === 'HEAD' ? methods.get('GET') : undefined);
    if (route) return { kind: 'route', route };
    const allow = [...methods.keys()];
    if (methods.has('GET')) allow.push('HEAD');
    return { kind: 'method-not-allowed', allow: allow.join(', ') };
  }
}
