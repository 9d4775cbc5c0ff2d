import type { PauseMode } from '../engine.js';
import { pythonRepr, requestValidationError } from '../protocol.js';
import { httpException, rawJsonObject, sendJson } from './json-response.js';
import type { FakeRoute, RouteRequest } from './route.js';

const PAUSE_MODES: readonly PauseMode[] = ['abort', 'wait', 'keep'];

/** A `PauseMode` query parameter, or FastAPI's 400 for a value outside the literal (vLLM: `Query()` of a Literal). */
function pauseMode(request: RouteRequest): PauseMode {
  const mode = request.query.get('mode') ?? 'abort';
  if ((PAUSE_MODES as readonly string[]).includes(mode)) return mode as PauseMode;
  const expected = "'abort', 'wait' or 'keep'";
  throw requestValidationError([
    {
      type: 'literal_error',
      loc: ['query', 'mode'],
      msg: `Input should be ${expected}`,
      input: mode,
      ctx: `{'expected': ${pythonRepr(expected)}}`,
    },
  ]);
}

/** The parts of an engine `/wake_up?tags=` can wake (`vllm/v1/engine/core.py` sleep/wake_up). */
const SLEEP_TAGS = ['weights', 'kv_cache'] as const;

/**
 * vLLM's RL control plane, served only in dev mode as vLLM serves it only with `VLLM_SERVER_DEV_MODE=1`:
 * `serve/rlhf/api_router.py`, `serve/sleep/api_router.py`, `serve/rpc/api_router.py`, `serve/cache/api_router.py`.
 */
export const controlRoutes: FakeRoute[] = [
  {
    method: 'POST',
    path: '/pause',
    devMode: true,
    handler: async ({ request, response, host }) => {
      await host.engine.pause(pauseMode(request));
      sendJson(response, 200, { status: 'paused' });
    },
  },
  {
    method: 'POST',
    path: '/resume',
    devMode: true,
    handler: ({ response, host }) => {
      host.engine.resume();
      sendJson(response, 200, { status: 'resumed' });
    },
  },
  {
    method: 'GET',
    path: '/is_paused',
    devMode: true,
    handler: ({ response, host }) => sendJson(response, 200, { is_paused: host.engine.isPaused }),
  },
  {
    method: 'POST',
    path: '/sleep',
    devMode: true,
    handler: async ({ request, response, host }) => {
      // vLLM: `int(level)`, then the engine core pauses the scheduler with `mode` (in-flight requests aborted by
      // default) and, from level 1, puts the weights and KV cache to sleep.
      const rawLevel = request.query.get('level') ?? '1';
      const level = /^\s*[+-]?\d+\s*$/.test(rawLevel) ? Number(rawLevel) : Number.NaN;
      if (Number.isNaN(level)) {
        throw httpException(400, `invalid literal for int() with base 10: ${pythonRepr(rawLevel)}`);
      }
      if (level < 0 || level > 2) throw httpException(400, `Sleep level must be 0, 1 or 2, got ${level}`);
      const mode = pauseMode(request);
      await host.sleep(level, mode);
      response.send(200, {});
    },
  },
  {
    method: 'POST',
    path: '/wake_up',
    devMode: true,
    handler: ({ request, response, host }) => {
      const tags = request.query.getAll('tags');
      host.wakeUp(tags.length === 0 ? undefined : tags);
      response.send(200, {});
    },
  },
  {
    method: 'GET',
    path: '/is_sleeping',
    devMode: true,
    handler: ({ response, host }) => sendJson(response, 200, { is_sleeping: host.isSleeping }),
  },
  {
    method: 'POST',
    path: '/init_weight_transfer_engine',
    devMode: true,
    handler: async ({ request, response }) => {
      const body = await rawJsonObject(request);
      if (body.init_info === undefined || body.init_info === null) {
        throw httpException(400, "Missing 'init_info' in request body");
      }
      sendJson(response, 200, { message: 'Weight transfer initialized' });
    },
  },
  {
    method: 'POST',
    path: '/start_weight_update',
    devMode: true,
    handler: async ({ request, response, host }) => {
      await request.body();
      host.weightUpdateActive = true;
      sendJson(response, 200, { message: 'Weight update started' });
    },
  },
  {
    method: 'POST',
    path: '/update_weights',
    devMode: true,
    handler: async ({ request, response, host }) => {
      const body = await rawJsonObject(request);
      if (body.update_info === undefined || body.update_info === null) {
        throw httpException(400, "Missing 'update_info' in request body");
      }
      host.weightVersion++;
      sendJson(response, 200, { message: 'Weights updated' });
    },
  },
  {
    method: 'POST',
    path: '/finish_weight_update',
    devMode: true,
    handler: async ({ request, response, host }) => {
      await request.body();
      host.weightUpdateActive = false;
      sendJson(response, 200, { message: 'Weight update finished' });
    },
  },
  {
    method: 'GET',
    path: '/get_world_size',
    devMode: true,
    handler: ({ response }) => sendJson(response, 200, { world_size: 1 }),
  },
  {
    method: 'POST',
    path: '/collective_rpc',
    devMode: true,
    handler: async ({ request, response }) => {
      const bytes = await request.body();
      let body: unknown;
      try {
        body = JSON.parse(new TextDecoder().decode(bytes));
      } catch (error) {
        throw httpException(400, `JSON decode error: ${(error as Error).message}`);
      }
      const method = (body as { method?: unknown } | null)?.method;
      if (method === undefined || method === null) throw httpException(400, "Missing 'method' in request body");
      // No workers run here: one canned result per (single) worker.
      sendJson(response, 200, { results: [{ method, ok: true }] });
    },
  },
  {
    method: 'POST',
    path: '/reset_prefix_cache',
    devMode: true,
    handler: async ({ request, response, host }) => {
      await request.body();
      // vLLM answers 200 whether or not the reset happened (serve/cache/api_router.py); BlockPool.reset_prefix_cache
      // refuses while blocks are in use, unless `reset_running_requests=true` (then running requests lose theirs).
      const force = ['true', '1', 'yes', 'on'].includes(
        request.query.get('reset_running_requests')?.toLowerCase() ?? '',
      );
      host.engine.kv.reset(force);
      response.send(200, {});
    },
  },
  {
    // Forgets the images requests may name by hash alone (serve/cache/api_router.py).
    method: 'POST',
    path: '/reset_mm_cache',
    devMode: true,
    handler: async ({ request, response, host }) => {
      await request.body();
      host.parseContext.mmCache?.clear();
      response.send(200, {});
    },
  },
  {
    method: 'POST',
    path: '/reset_encoder_cache',
    devMode: true,
    handler: ({ response }) => response.send(200, {}),
  },
];

export { SLEEP_TAGS };
