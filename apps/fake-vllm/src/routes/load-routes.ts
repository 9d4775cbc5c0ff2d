import { isAbsolute, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { FakeVllmConfigError } from '../errors.js';
import type { FakeRoute, HttpMethod } from './route.js';

/**
 * Where extra routes come from: a route object, or the path of an ES module whose `routes` export (or default
 * export) is an array of routes. Paths are the config-file and child-process form: JSON cannot carry a function.
 */
export type FakeRouteSource = FakeRoute | string;

const METHODS: readonly HttpMethod[] = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'];

/** Checks one route's shape; `where` names it in the message (`routes[2]`, `routes[0] of ./skyrl.mjs`). */
export function checkRoute(route: unknown, where: string): FakeRoute {
  const fail = (expected: string, got: unknown): never => {
    throw new FakeVllmConfigError(
      `Expected \`${where}\` to be ${expected}, got \`${JSON.stringify(got) ?? String(got)}\``,
      { field: 'routes' },
    );
  };
  if (typeof route !== 'object' || route === null || Array.isArray(route)) {
    fail('a route {method, path, handler | response} or a module path', route);
  }
  const { method, path, handler, response, devMode } = route as Record<string, unknown>;
  const methods = Array.isArray(method) ? method : [method];
  if (methods.length === 0 || !methods.every((one) => METHODS.includes(one as HttpMethod))) {
    fail(`a route whose \`method\` is one or several of ${METHODS.join(', ')}`, method);
  }
  if (typeof path !== 'string' || !path.startsWith('/')) fail('a route whose `path` starts with /', path);
  if (handler !== undefined && typeof handler !== 'function') fail('a route whose `handler` is a function', handler);
  if (handler === undefined && (typeof response !== 'object' || response === null || Array.isArray(response))) {
    fail('a route with a `handler` function or a `response` object {status, body, headers}', route);
  }
  if (response !== undefined && handler === undefined) {
    const { status } = response as { status?: unknown };
    if (status !== undefined && !(Number.isInteger(status) && (status as number) >= 200 && (status as number) <= 599)) {
      fail('a route whose `response.status` is an HTTP status (200..599)', status);
    }
  }
  if (devMode !== undefined && typeof devMode !== 'boolean') fail('a route whose `devMode` is true or false', devMode);
  return route as FakeRoute;
}

/** Checks the `routes` option: each entry a route or a module path. */
export function checkRouteSources(sources: unknown): readonly FakeRouteSource[] {
  if (sources === undefined) return [];
  if (!Array.isArray(sources)) {
    throw new FakeVllmConfigError(
      `Expected \`routes\` to be an array of routes or module paths, got \`${JSON.stringify(sources)}\``,
      { field: 'routes' },
    );
  }
  return sources.map((source, index) =>
    typeof source === 'string' && source !== '' ? source : checkRoute(source, `routes[${index}]`),
  );
}

/** Whether every route can be sent to a child process (module paths and static answers; no functions). */
export function routesAreSerializable(sources: readonly FakeRouteSource[]): boolean {
  return sources.every((source) => typeof source === 'string' || source.handler === undefined);
}

/** Imports module paths (relative to the working directory) and returns every route in order. */
export async function loadRoutes(sources: readonly FakeRouteSource[]): Promise<FakeRoute[]> {
  const routes: FakeRoute[] = [];
  for (const source of sources) {
    if (typeof source !== 'string') {
      routes.push(source);
      continue;
    }
    const url = source.startsWith('file:') ? source : pathToFileURL(isAbsolute(source) ? source : resolve(source)).href;
    let module: { routes?: unknown; default?: unknown };
    try {
      module = (await import(url)) as { routes?: unknown; default?: unknown };
    } catch (error) {
      throw new FakeVllmConfigError(`Cannot load the routes module ${source}: ${(error as Error).message}`, {
        cause: error,
        field: 'routes',
      });
    }
    const exported = module.routes ?? module.default;
    if (!Array.isArray(exported)) {
      throw new FakeVllmConfigError(
        `Expected the routes module ${source} to export \`routes\` (or a default export) as an array of routes`,
        { field: 'routes' },
      );
    }
    exported.forEach((route, index) => {
      routes.push(checkRoute(route, `routes[${index}] of ${source}`));
    });
  }
  return routes;
}
