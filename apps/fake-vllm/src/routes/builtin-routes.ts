import { performance } from 'node:perf_hooks';
import type { PauseMode } from '../engine.js';
import { renderEngineMetrics } from '../metrics.js';
import {
  HttpError,
  parseChatRequest,
  parseCompletionRequest,
  parseGenerateRequest,
  renderChatPrompt,
} from '../protocol.js';
import { checkPromptText } from '../request-bounds.js';
import { detokenize, tokenize } from '../tokens.js';
import { serveGeneration } from './generation-route.js';
import type { FakeRoute, ResponseWriter } from './route.js';

const JSON_TYPE = { 'content-type': 'application/json' } as const;

function sendJson(response: ResponseWriter, status: number, body: unknown): void {
  response.send(status, JSON_TYPE, JSON.stringify(body));
}

/** The OpenAI-compatible API: generation, models, tokenizer, health, version, metrics. */
const openaiRoutes: FakeRoute[] = [
  {
    method: 'POST',
    path: '/v1/completions',
    handler: (context) => serveGeneration(context, parseCompletionRequest, 'cmpl'),
  },
  {
    method: 'POST',
    path: '/v1/chat/completions',
    handler: (context) => serveGeneration(context, parseChatRequest, 'chatcmpl'),
  },
  {
    method: 'POST',
    path: '/inference/v1/generate',
    handler: (context) => serveGeneration(context, parseGenerateRequest, 'generate-tokens'),
  },
  {
    method: 'GET',
    path: '/health',
    handler: ({ response, host }) => {
      if (performance.now() - host.startedAtMs < host.options.readyAfterMs) {
        const error = new HttpError(503, 'Engine is starting', 'ServiceUnavailableError');
        response.send(503, JSON_TYPE, error.body());
        return;
      }
      response.send(200, {});
    },
  },
  {
    method: 'GET',
    path: '/v1/models',
    handler: ({ response, host }) =>
      sendJson(response, 200, {
        object: 'list',
        data: [
          {
            id: host.options.model,
            object: 'model',
            created: Math.floor(Date.now() / 1000),
            owned_by: 'vllm',
            root: host.options.model,
            parent: null,
            max_model_len: host.options.maxModelLen,
            permission: [],
          },
        ],
      }),
  },
  {
    method: 'GET',
    path: '/version',
    handler: ({ response }) => sendJson(response, 200, { version: '0.0.0+fake-vllm' }),
  },
  {
    method: 'POST',
    path: '/tokenize',
    handler: async ({ request, response, host }) => {
      const body = (await request.json()) as { prompt?: unknown; messages?: unknown };
      let text: string;
      if (typeof body.prompt === 'string') text = body.prompt;
      else if (Array.isArray(body.messages)) {
        text = renderChatPrompt(body.messages as { role: string; content: unknown }[]);
      } else {
        throw new HttpError(400, 'Either `prompt` (string) or `messages` is required', 'BadRequestError', 'prompt');
      }
      const tokens = tokenize(checkPromptText(text, host.options.maxModelLen, 0), host.options.vocabSize);
      sendJson(response, 200, {
        count: tokens.length,
        max_model_len: host.options.maxModelLen,
        tokens,
        token_strs: null,
      });
    },
  },
  {
    method: 'POST',
    path: '/detokenize',
    handler: async ({ request, response, host }) => {
      const body = (await request.json()) as { tokens?: unknown };
      if (!Array.isArray(body.tokens) || !body.tokens.every((token) => Number.isInteger(token) && token >= 0)) {
        throw new HttpError(400, '`tokens` must be an array of token ids', 'BadRequestError', 'tokens');
      }
      let maxId = -1;
      for (const token of body.tokens as number[]) if (token > maxId) maxId = token;
      if (maxId >= host.options.vocabSize) {
        // vLLM's wording for an id the tokenizer does not have (vllm/v1/engine/input_processor.py).
        throw new HttpError(400, `Token id ${maxId} is out of vocabulary`, 'BadRequestError', 'tokens');
      }
      sendJson(response, 200, { prompt: detokenize(body.tokens as number[], host.options.vocabSize) });
    },
  },
  {
    method: 'GET',
    path: '/metrics',
    handler: ({ response, host }) =>
      response.send(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' }, renderEngineMetrics([host])),
  },
  {
    method: 'GET',
    path: '/fake/stats',
    handler: ({ response, host }) => sendJson(response, 200, host.stats()),
  },
];

/** vLLM's RL control plane: pause, sleep, weights, caches, RPC. */
const controlRoutes: FakeRoute[] = [
  {
    method: 'POST',
    path: '/pause',
    handler: async ({ request, response, host }) => {
      const mode = request.query.get('mode') ?? 'abort';
      if (mode !== 'abort' && mode !== 'wait' && mode !== 'keep') {
        throw new HttpError(400, `\`mode\` must be abort, wait or keep, got \`${mode}\``, 'BadRequestError', 'mode');
      }
      await host.engine.pause(mode as PauseMode);
      sendJson(response, 200, { status: 'paused', mode });
    },
  },
  {
    method: 'POST',
    path: '/resume',
    handler: ({ response, host }) => {
      host.engine.resume();
      sendJson(response, 200, { status: 'resumed' });
    },
  },
  {
    method: 'GET',
    path: '/is_paused',
    handler: ({ response, host }) => sendJson(response, 200, { is_paused: host.engine.isPaused }),
  },
  {
    method: 'POST',
    path: '/sleep',
    handler: ({ request, response, host }) => {
      const level = Number(request.query.get('level') ?? '1');
      if (level !== 1 && level !== 2) throw new HttpError(400, '`level` must be 1 or 2', 'BadRequestError', 'level');
      host.engine.sleep(level);
      response.send(200, {});
    },
  },
  {
    method: 'POST',
    path: '/wake_up',
    handler: ({ response, host }) => {
      host.engine.wakeUp();
      response.send(200, {});
    },
  },
  {
    method: 'GET',
    path: '/is_sleeping',
    handler: ({ response, host }) => sendJson(response, 200, { is_sleeping: host.engine.isSleeping }),
  },
  {
    method: 'POST',
    path: '/reset_prefix_cache',
    handler: async ({ request, response }) => {
      await request.json();
      response.send(200, {});
    },
  },
  {
    method: 'POST',
    path: '/init_weight_transfer_engine',
    handler: async ({ request, response }) => {
      await request.json();
      response.send(200, {});
    },
  },
  {
    method: 'POST',
    path: '/update_weights',
    handler: async ({ request, response, host }) => {
      await request.json();
      host.weightVersion++;
      sendJson(response, 200, { status: 'ok', weight_version: host.weightVersion });
    },
  },
  {
    method: 'POST',
    path: '/collective_rpc',
    handler: async ({ request, response }) => {
      const body = (await request.json()) as { method?: unknown };
      if (typeof body.method !== 'string' || body.method === '') {
        throw new HttpError(400, '`method` must be a non-empty string', 'BadRequestError', 'method');
      }
      sendJson(response, 200, { results: [{ method: body.method, ok: true }] });
    },
  },
  {
    method: 'GET',
    path: '/get_world_size',
    handler: ({ response }) => sendJson(response, 200, { world_size: 1 }),
  },
];

/** Every route fake-vllm serves by itself, in one table for every transport. */
export const builtinRoutes: readonly FakeRoute[] = [...openaiRoutes, ...controlRoutes];
