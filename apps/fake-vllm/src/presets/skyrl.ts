import type { EngineHost } from '../engine-host.js';
import { FakeVllmConfigError } from '../errors.js';
import { HttpError, parseGenerateRequest } from '../protocol.js';
import { builtinRoutes } from '../routes/builtin-routes.js';
import { type GenerationParser, serveGeneration } from '../routes/generation-route.js';
import type { FakeRoute, ResponseWriter, RouteContext } from '../routes/route.js';

/**
 * The routes SkyRL (NovaSky-AI/SkyRL) adds to the vLLM servers it launches
 * (`skyrl/backends/skyrl_train/inference_servers/vllm_server_actor.py`), plus what its `RemoteInferenceClient` needs
 * around them: `/skyrl/v1/generate` (token ids in and out, routed experts packed as `{data, shape, dtype}` by
 * `generate_wire.py`), `/skyrl/v1/load_lora_adapter` (into the engine's LoRA adapters, which vLLM's
 * `/v1/unload_lora_adapter` removes), `/fetch_weights`, and its router's `/finish_session`. SkyRL's server also
 * registers a `/reset_prefix_cache`, but after vLLM's dev-mode route of the same path (`build_app` runs first), and
 * Starlette serves the first match: vLLM's answers, so the built-in one stays.
 */
export interface SkyrlPresetOptions {
  /**
   * Routed experts returned by `/skyrl/v1/generate` (rollout router replay): `layers` x `topK` distinct expert ids
   * out of `experts` for every token that went through the model. `false`: `routed_experts: null`, as a server
   * started without `enable_return_routed_experts`.
   * @default { layers: 4, topK: 2, experts: 8 }
   */
  routedExperts?: { layers?: number; topK?: number; experts?: number } | false;
}

type RoutedExpertsShape = { layers: number; topK: number; experts: number };

/** Per-engine state of the preset: what SkyRL's server and router keep. */
class SkyrlEngineState {
  /** `lora_int_id` of each adapter name loaded here (vLLM keeps the id while a name stays loaded). */
  readonly adapterIds = new Map<string, number>();
  private lastAdapterId = 0;
  /** The checkpoint version `/fetch_weights` last brought in; `undefined` before the first. */
  fetchedVersion: number | undefined;

  nextAdapterId(): number {
    this.lastAdapterId += 1;
    return this.lastAdapterId;
  }
}

const states = new WeakMap<EngineHost, SkyrlEngineState>();

function stateOf(host: EngineHost): SkyrlEngineState {
  let state = states.get(host);
  if (!state) {
    state = new SkyrlEngineState();
    states.set(host, state);
  }
  return state;
}

/** What a session id is kept as in `host.sessions`: the requests it made on this engine. */
export interface SkyrlSession {
  requests: number;
}

const JSON_TYPE = { 'content-type': 'application/json' } as const;

/** FastAPI's `HTTPException(status, detail)` as vLLM's exception handler writes it. */
function httpException(status: number, detail: string): HttpError {
  return new HttpError(status, detail, status === 404 ? 'Not Found' : status === 400 ? 'Bad Request' : 'Error');
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Counts a data-plane request under its `X-Session-ID` (the header SkyRL's client and router route by). */
function recordSession(context: RouteContext): void {
  const id = context.request.header('x-session-id');
  if (id === undefined || id === '') return;
  const session = context.host.sessions.get(id) as SkyrlSession | undefined;
  if (session) session.requests += 1;
  else context.host.sessions.set(id, { requests: 1 } satisfies SkyrlSession);
}

/** Paths of the built-in generation routes whose requests are counted under their session. */
const SESSION_COUNTED_PATHS = new Set(['/v1/completions', '/v1/chat/completions', '/inference/v1/generate']);

/** The built-in generation routes, unchanged except that each request is first counted under its session. */
function sessionCountedRoutes(): FakeRoute[] {
  return builtinRoutes
    .filter((route) => SESSION_COUNTED_PATHS.has(route.path))
    .map((route) => ({
      ...route,
      handler: (context: RouteContext) => {
        recordSession(context);
        return route.handler!(context);
      },
    }));
}

/**
 * A writer that rewrites a whole 200 JSON body before it goes out; everything else (errors, streams, faults that
 * cut or garble the body) passes through unchanged.
 */
function rewritingWholeBody(
  response: ResponseWriter,
  rewrite: (body: Record<string, unknown>) => unknown,
): ResponseWriter {
  return {
    get headersSent() {
      return response.headersSent;
    },
    get closed() {
      return response.closed;
    },
    send(status, headers, body) {
      if (status !== 200 || body === undefined) return response.send(status, headers, body);
      let parsed: unknown;
      try {
        parsed = JSON.parse(body);
      } catch {
        // A `malformed-chunk` fault halves the body: send it as the fault made it.
        return response.send(status, headers, body);
      }
      response.send(status, headers, JSON.stringify(rewrite(parsed as Record<string, unknown>)));
    },
    startStream: (status, headers) => response.startStream(status, headers),
    write: (text) => response.write(text),
    end: (trailers) => response.end(trailers),
    reset: (options) => response.reset(options),
    destroy: () => response.destroy(),
    closeConnectionAfterResponse: (delayMs) => response.closeConnectionAfterResponse(delayMs),
    refuseConnections: (windowMs) => response.refuseConnections(windowMs),
    onClose: (listener) => response.onClose(listener),
    backedUp: (listener) => response.backedUp(listener),
  };
}

/** FNV-1a over a few integers: a stable, cheap hash for expert choices. */
function hashInts(a: number, b: number, c: number): number {
  let hash = 0x811c9dc5;
  for (const value of [a, b, c]) {
    hash = Math.imul(hash ^ (value & 0xffff), 0x01000193);
    hash = Math.imul(hash ^ (value >>> 16), 0x01000193);
  }
  return hash >>> 0;
}

/**
 * Routed experts for `tokens` as SkyRL's `pack_routed_experts` sends them: a `[rows, layers, topK]` array of
 * expert ids in the smallest of uint8 / int16 / int32 that holds the largest id (SkyRL's decoder rejects any other),
 * little-endian, C order, base64. Expert `k` of layer `l` at a position depends only on that position's token, so
 * the same tokens always route the same way.
 */
export function packRoutedExperts(
  tokens: readonly number[],
  { layers, topK, experts }: RoutedExpertsShape,
): { data: string; shape: [number, number, number]; dtype: 'uint8' | 'int16' | 'int32' } {
  const ids = new Int32Array(tokens.length * layers * topK);
  let largest = 0;
  let offset = 0;
  for (const token of tokens) {
    for (let layer = 0; layer < layers; layer++) {
      const first = hashInts(token, layer, experts) % experts;
      for (let k = 0; k < topK; k++) {
        const id = (first + k) % experts;
        ids[offset++] = id;
        if (id > largest) largest = id;
      }
    }
  }
  const dtype = largest < 2 ** 8 ? 'uint8' : largest < 2 ** 15 ? 'int16' : 'int32';
  const size = dtype === 'uint8' ? 1 : dtype === 'int16' ? 2 : 4;
  const bytes = Buffer.alloc(ids.length * size);
  for (let index = 0; index < ids.length; index++) {
    if (size === 1) bytes.writeUInt8(ids[index]!, index);
    else if (size === 2) bytes.writeInt16LE(ids[index]!, index * 2);
    else bytes.writeInt32LE(ids[index]!, index * 4);
  }
  return { data: bytes.toString('base64'), shape: [tokens.length, layers, topK], dtype };
}

/** `/skyrl/v1/generate`: SkyRL's server builds `SamplingParams(**sampling_params)` and runs the engine itself. */
function skyrlGenerate(routedExperts: RoutedExpertsShape | undefined): NonNullable<FakeRoute['handler']> {
  return async (context) => {
    recordSession(context);
    const { host } = context;
    let prompt: readonly number[] = [];
    const parse: GenerationParser = (body, parseContext) => {
      if (!isObject(body) || !Array.isArray(body.token_ids)) {
        // `body["token_ids"]` raises KeyError in SkyRL's handler: an unhandled error, a 500.
        throw new HttpError(500, "KeyError: 'token_ids'", 'InternalServerError');
      }
      const model = body.model;
      if (typeof model === 'string' && host.loras.has(model)) {
        throw httpException(400, '/skyrl/v1/generate does not support LoRA.');
      }
      prompt = body.token_ids as number[];
      const sampling = isObject(body.sampling_params) ? body.sampling_params : {};
      // SamplingParams' own default is 16 tokens (not /inference/v1/generate's "rest of the context"); the endpoint
      // never streams and ignores `model`.
      const forwarded: Record<string, unknown> = {
        token_ids: body.token_ids,
        sampling_params: { max_tokens: 16, ...sampling },
      };
      return parseGenerateRequest(forwarded, parseContext);
    };
    const response = rewritingWholeBody(context.response, (body) => {
      // SkyRL returns `final_res.outputs[0]` only.
      const choice = (body.choices as Record<string, unknown>[])[0]!;
      const tokenIds = choice.token_ids as number[];
      const logprobs = choice.logprobs as { content: { logprob: number }[] } | null;
      // One row per token that went through the model: the prompt and every output token but the last.
      const routed = [...prompt, ...tokenIds].slice(0, Math.max(0, prompt.length + tokenIds.length - 1));
      return {
        choices: [
          {
            token_ids: tokenIds,
            finish_reason: choice.finish_reason,
            logprobs: logprobs === null ? null : { content: logprobs.content.map(({ logprob }) => ({ logprob })) },
            routed_experts: routedExperts ? packRoutedExperts(routed, routedExperts) : null,
          },
        ],
      };
    });
    await serveGeneration({ ...context, response }, parse, 'skyrl-generate');
  };
}

function resolveRoutedExperts(option: SkyrlPresetOptions['routedExperts']): RoutedExpertsShape | undefined {
  if (option === false) return undefined;
  const shape = { layers: option?.layers ?? 4, topK: option?.topK ?? 2, experts: option?.experts ?? 8 };
  const check = (name: keyof RoutedExpertsShape, max: number) => {
    const value = shape[name];
    if (!(Number.isInteger(value) && value >= 1 && value <= max)) {
      throw new FakeVllmConfigError(
        `Expected \`routedExperts.${name}\` to be an integer in 1..${max}, got \`${JSON.stringify(value)}\``,
        { field: 'routes' },
      );
    }
  };
  check('experts', 2 ** 31 - 1);
  check('layers', 1024);
  check('topK', Math.min(1024, shape.experts));
  return shape;
}

/** SkyRL's routes, ready for the `routes` option: `startFakeVllm({ routes: skyrlRoutes() })`. */
export function skyrlRoutes(options: SkyrlPresetOptions = {}): FakeRoute[] {
  const routedExperts = resolveRoutedExperts(options.routedExperts);
  return [
    ...sessionCountedRoutes(),
    { method: 'POST', path: '/skyrl/v1/generate', handler: skyrlGenerate(routedExperts) },
    {
      method: 'POST',
      path: '/skyrl/v1/load_lora_adapter',
      handler: async ({ request, response, host }) => {
        const body = await request.json();
        const name = isObject(body) ? body.lora_name : undefined;
        const path = isObject(body) ? body.lora_path : undefined;
        if (typeof name !== 'string' || name === '' || typeof path !== 'string' || path === '') {
          throw httpException(400, "Both 'lora_name' and 'lora_path' must be provided.");
        }
        const state = stateOf(host);
        // Reloading a loaded name keeps its id (SkyRL reloads the adapter in place after each weight sync).
        const id = (host.loras.has(name) ? state.adapterIds.get(name) : undefined) ?? state.nextAdapterId();
        state.adapterIds.set(name, id);
        // The engine's adapters: the name is then valid as `model`, listed by /v1/models, unloaded by vLLM's route.
        host.loras.set(name, { path });
        response.send(200, JSON_TYPE, JSON.stringify({ status: 'ok', lora_name: name, lora_int_id: id }));
      },
    },
    {
      method: 'POST',
      path: '/fetch_weights',
      handler: async ({ request, response, host }) => {
        const body = await request.json();
        const target = isObject(body) ? body.target_version : undefined;
        if (target === undefined || target === null) throw httpException(400, "'target_version' is required");
        const version = Number(target);
        if (!Number.isInteger(version)) {
          throw new HttpError(
            500,
            `invalid literal for int() with base 10: ${JSON.stringify(target)}`,
            'InternalServerError',
          );
        }
        const state = stateOf(host);
        if (state.fetchedVersion !== undefined && state.fetchedVersion > version) {
          // The delta engine's ValueError, through collective_rpc: a 500.
          throw new HttpError(
            500,
            `Local checkpoint version ${state.fetchedVersion} is ahead of requested target_version ${version}`,
            'InternalServerError',
          );
        }
        state.fetchedVersion = version;
        const stats = { fetch_s: 0, apply_s: 0, reset_s: 0, total_s: 0 };
        // One entry per worker (collective_rpc), each what SkyRL's delta engine returns.
        const result = [{ status: 'ok', target_version: version, stats }];
        response.send(200, JSON_TYPE, JSON.stringify({ status: 'ok', result }));
      },
    },
    {
      // The router's: releases the session's hold on this engine. Unknown ids are ignored, as the router does.
      method: 'POST',
      path: '/finish_session',
      handler: async ({ request, response, host }) => {
        await request.body();
        const id = request.query.get('session_id');
        if (id === null) throw httpException(400, 'Missing query parameter `session_id`');
        const session = host.sessions.get(id) as SkyrlSession | undefined;
        host.sessions.delete(id);
        response.send(
          200,
          JSON_TYPE,
          JSON.stringify({ status: 'ok', session_id: id, requests: session?.requests ?? 0 }),
        );
      },
    },
  ];
}

/** The preset with its defaults: what `--preset skyrl` loads (this module's `routes` export). */
export const routes: FakeRoute[] = skyrlRoutes();
