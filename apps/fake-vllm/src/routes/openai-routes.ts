import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { EngineHost } from '../engine-host.js';
import { renderEngineMetrics } from '../metrics.js';
import {
  checkJsonContentType,
  HttpError,
  parseChatRequest,
  parseCompletionRequest,
  parseGenerateRequest,
  renderChatTokens,
} from '../protocol.js';
import { checkPromptText } from '../request-bounds.js';
import { detokenize, tokenize, tokenText } from '../tokens.js';
import { serveGeneration } from './generation-route.js';
import { JSON_TYPE, sendJson } from './json-response.js';
import type { FakeRoute } from './route.js';

/** The version `/version` reports and `system_fingerprint` is built from. */
export const FAKE_VLLM_VERSION = '0.0.0+fake-vllm';

/** `ModelPermission()` with its defaults (`openai/engine/protocol.py`). */
function modelPermission(created: number) {
  return {
    id: `modelperm-${randomUUID().replaceAll('-', '')}`,
    object: 'model_permission',
    created,
    allow_create_engine: false,
    allow_sampling: true,
    allow_logprobs: true,
    allow_search_indices: false,
    allow_view: true,
    allow_fine_tuning: false,
    organization: '*',
    group: null,
    is_blocking: false,
  };
}

/** `/v1/models`: the base model, then every LoRA adapter loaded at run time (`openai/models/serving.py`). */
function modelList(host: EngineHost) {
  const created = Math.floor(Date.now() / 1000);
  const card = (id: string, root: string, parent: string | null, maxModelLen: number | null) => ({
    id,
    object: 'model',
    created,
    owned_by: 'vllm',
    root,
    parent,
    max_model_len: maxModelLen,
    permission: [modelPermission(created)],
  });
  return {
    object: 'list',
    data: [
      card(host.options.model, host.options.model, null, host.options.maxModelLen),
      ...[...host.loras].map(([name, adapter]) => card(name, adapter.path, host.options.model, null)),
    ],
  };
}

/** The `model` check of the tokenizer routes (`OpenAIServing._check_model`): the base model or a LoRA adapter. */
function checkServedModel(host: EngineHost, model: unknown): void {
  if (model === undefined || model === null || model === '') return;
  if (model === host.options.model || host.loras.has(model as string)) return;
  throw new HttpError(404, `The model \`${String(model)}\` does not exist.`, 'NotFoundError', 'model');
}

/** The OpenAI-compatible API and the routes vLLM always serves (`openai/api_server.py`, `serve/`). */
export const openaiRoutes: FakeRoute[] = [
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
    // vLLM renders the chat template and tokenizes, without generating: a GenerateRequest ready for
    // /inference/v1/generate (serve/render/serving.py render_chat_request), images as `features` (its
    // _extract_mm_features). It renders with skip_mm_cache=True: the engine's multimodal cache is left alone.
    method: 'POST',
    path: '/v1/chat/completions/render',
    handler: async ({ request, response, host }) => {
      checkJsonContentType(request.header('content-type'));
      const body = await request.json();
      const job = parseChatRequest(body, host.parseContext, { skipMmCache: true });
      const raw = body as { model?: unknown; stream?: unknown; stream_options?: unknown; cache_salt?: unknown };
      const { stopOptions } = job;
      sendJson(response, 200, {
        request_id: `chatcmpl-${randomUUID().replaceAll('-', '')}`,
        token_ids: job.prompts[0],
        features: job.features ?? null,
        sampling_params: {
          n: job.n,
          seed: job.seed,
          max_tokens: job.maxTokens,
          min_tokens: stopOptions.minTokens ?? 0,
          stop: stopOptions.stop ?? [],
          stop_token_ids: stopOptions.stopTokenIds ?? [],
          ignore_eos: stopOptions.ignoreEos ?? false,
          include_stop_str_in_output: stopOptions.includeStopStrInOutput ?? false,
          logprobs: job.logprobs ?? null,
          prompt_logprobs: job.promptLogprobs ?? null,
        },
        model: typeof raw.model === 'string' ? raw.model : null,
        stream: raw.stream === true,
        stream_options: raw.stream === true ? (raw.stream_options ?? null) : null,
        cache_salt: typeof raw.cache_salt === 'string' ? raw.cache_salt : null,
        priority: 0,
        kv_transfer_params: null,
      });
    },
  },
  {
    // 200 with an empty body; vLLM answers 503 (empty) only once its engine is dead (serve/instrumentator/health.py).
    method: 'GET',
    path: '/health',
    handler: ({ response, host }) => {
      if (performance.now() - host.startedAtMs < host.options.readyAfterMs) {
        response.send(503, {});
        return;
      }
      response.send(200, {});
    },
  },
  {
    // SageMaker's ping: the health check under another name, GET and POST.
    method: ['GET', 'POST'],
    path: '/ping',
    handler: async ({ request, response, host }) => {
      await request.body();
      response.send(performance.now() - host.startedAtMs < host.options.readyAfterMs ? 503 : 200, {});
    },
  },
  {
    // Requests in flight on the generation routes, as vLLM counts them with --enable-server-load-tracking.
    method: 'GET',
    path: '/load',
    handler: ({ response, host }) => sendJson(response, 200, { server_load: host.engine.inFlight }),
  },
  {
    method: 'GET',
    path: '/v1/models',
    handler: ({ response, host }) => sendJson(response, 200, modelList(host)),
  },
  {
    method: 'GET',
    path: '/version',
    handler: ({ response }) => sendJson(response, 200, { version: FAKE_VLLM_VERSION }),
  },
  {
    method: 'POST',
    path: '/tokenize',
    handler: async ({ request, response, host }) => {
      checkJsonContentType(request.header('content-type'));
      const body = (await request.json()) as {
        prompt?: unknown;
        messages?: unknown;
        model?: unknown;
        return_token_strs?: unknown;
      };
      checkServedModel(host, body.model);
      const { maxModelLen, vocabSize } = host.options;
      let tokens: number[];
      if (typeof body.prompt === 'string') tokens = tokenize(checkPromptText(body.prompt, maxModelLen, 0), vocabSize);
      else if (Array.isArray(body.messages)) {
        // Messages render as for generation, images as their placeholder tokens (vLLM's /tokenize renders the chat).
        tokens = renderChatTokens(body.messages as { role: string; content: unknown }[], vocabSize, (text) =>
          checkPromptText(text, maxModelLen, 0),
        ).tokens;
      } else {
        throw new HttpError(400, 'Either `prompt` (string) or `messages` is required', 'BadRequestError', 'prompt');
      }
      const tokenStrings = body.return_token_strs === true ? tokens.map((id) => tokenText(id, vocabSize)) : null;
      sendJson(response, 200, { count: tokens.length, max_model_len: maxModelLen, tokens, token_strs: tokenStrings });
    },
  },
  {
    method: 'POST',
    path: '/detokenize',
    handler: async ({ request, response, host }) => {
      checkJsonContentType(request.header('content-type'));
      const body = (await request.json()) as { tokens?: unknown; model?: unknown };
      checkServedModel(host, body.model);
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
    handler: ({ response, host }) => response.send(200, JSON_TYPE, JSON.stringify(host.stats())),
  },
];
