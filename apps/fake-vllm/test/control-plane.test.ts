import { request } from 'undici';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type FakeVllm, startFakeVllm, tokenize, tokenText } from '../src/index.js';
import { get, post, sseChunks } from './helpers.js';

// The routes around generation, as vLLM's source defines them (paths relative to vllm/entrypoints/). Each test
// names the file it follows.
let server: FakeVllm;
let url: string;
beforeAll(async () => {
  server = await startFakeVllm({ ttftMs: 1, itlMs: 2, jitter: 0, control: false });
  url = server.url;
});
afterAll(() => server.close());
afterEach(async () => {
  await post(`${url}/wake_up`, {});
  await post(`${url}/resume`, {});
});

async function send(method: string, path: string, body?: unknown, headers: Record<string, string> = {}) {
  const response = await request(`${url}${path}`, {
    method: method as 'GET',
    headers: body === undefined ? headers : { 'content-type': 'application/json', ...headers },
    ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
  });
  return { status: response.statusCode, headers: response.headers, text: await response.body.text() };
}

const httpError = (message: string, code = 400) =>
  JSON.stringify({ error: { message, type: code === 400 ? 'Bad Request' : 'Not Found', param: null, code } });

describe('routing errors, as FastAPI answers them', () => {
  // Starlette's router raises starlette's HTTPException; vLLM registers its handler for FastAPI's subclass only
  // (openai/server_utils.py http_exception_handler), so FastAPI's default body stays.
  it('an unknown path is 404 {"detail":"Not Found"}', async () => {
    const response = await send('GET', '/v1/nope');
    expect([response.status, response.text]).toEqual([404, '{"detail":"Not Found"}']);
    expect(response.headers['content-type']).toBe('application/json');
  });

  it('a known path with another method is 405 {"detail":"Method Not Allowed"} with an allow header', async () => {
    const completions = await send('GET', '/v1/completions');
    expect([completions.status, completions.text]).toEqual([405, '{"detail":"Method Not Allowed"}']);
    expect(completions.headers.allow).toBe('POST');
    const models = await send('POST', '/v1/models', {});
    expect(models.status).toBe(405);
    // Starlette adds HEAD to every GET route.
    expect(models.headers.allow).toBe('GET, HEAD');
    expect((await send('HEAD', '/health')).status).toBe(200);
  });
});

describe('always-on routes', () => {
  it('/health: 200 with an empty body (serve/instrumentator/health.py); /ping the same for GET and POST', async () => {
    for (const [method, path] of [
      ['GET', '/health'],
      ['GET', '/ping'],
      ['POST', '/ping'],
    ] as const) {
      const response = await send(method, path);
      expect([response.status, response.text]).toEqual([200, '']);
    }
  });

  // serve/instrumentator/basic.py show_version ({"version": VLLM_VERSION}) and get_server_load_metrics
  // ({"server_load": app.state.server_load_metrics}); utils.py load_aware_call counts a request from its start to its
  // response's end (with --enable-server-load-tracking; the fake always tracks). The version string: README.
  it('/version is {"version": ...}; /load is {"server_load": <requests in flight>}', async () => {
    expect(JSON.parse((await get(`${url}/version`)).text)).toEqual({ version: '0.0.0+fake-vllm' });
    await post(`${url}/pause?mode=keep`, {});
    const pending = post(`${url}/v1/completions`, { prompt: [1], max_tokens: 2 });
    for (let polls = 0; JSON.parse((await get(`${url}/load`)).text).server_load !== 1; polls++) {
      if (polls > 200) throw new Error('the request never counted as load');
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    await post(`${url}/resume`, {});
    await pending;
    expect(JSON.parse((await get(`${url}/load`)).text)).toEqual({ server_load: 0 });
  });

  it('/v1/models: root, parent null, max_model_len and one ModelPermission (openai/models/serving.py)', async () => {
    const { data } = JSON.parse((await get(`${url}/v1/models`)).text);
    expect(data).toHaveLength(1);
    expect(data[0]).toMatchObject({
      id: 'fake-model',
      object: 'model',
      owned_by: 'vllm',
      root: 'fake-model',
      parent: null,
      max_model_len: 32_768,
    });
    expect(data[0].permission).toHaveLength(1);
    expect(data[0].permission[0]).toMatchObject({
      object: 'model_permission',
      allow_create_engine: false,
      allow_sampling: true,
      allow_logprobs: true,
      allow_search_indices: false,
      allow_view: true,
      allow_fine_tuning: false,
      organization: '*',
      group: null,
      is_blocking: false,
    });
    expect(data[0].permission[0].id).toMatch(/^modelperm-/);
  });

  it('/tokenize and /detokenize: an unknown model is 404; return_token_strs (serve/tokenize/serving.py)', async () => {
    const missing = await post(`${url}/tokenize`, { model: 'other', prompt: 'hi' });
    expect(missing.status).toBe(404);
    expect(missing.text).toBe(
      JSON.stringify({
        error: { message: 'The model `other` does not exist.', type: 'NotFoundError', param: 'model', code: 404 },
      }),
    );
    expect((await post(`${url}/detokenize`, { model: 'other', tokens: [300] })).status).toBe(404);
    const tokens = tokenize('hello kavo');
    const body = JSON.parse((await post(`${url}/tokenize`, { prompt: 'hello kavo', return_token_strs: true })).text);
    expect(body).toEqual({
      count: tokens.length,
      max_model_len: 32_768,
      tokens,
      token_strs: tokens.map((id) => tokenText(id)),
    });
    expect(JSON.parse((await post(`${url}/tokenize`, { prompt: 'x' })).text).token_strs).toBeNull();
    // validate_json_request: no JSON content type is a 400 before the body is read.
    expect((await send('POST', '/tokenize', '{"prompt":"x"}', { 'content-type': 'text/plain' })).status).toBe(400);
  });
});

describe('dev-mode routes (serve/rlhf, serve/sleep, serve/rpc, serve/cache api_router.py)', () => {
  it('weight transfer: init_info and update_info required; message bodies; start and finish', async () => {
    const noInit = await post(`${url}/init_weight_transfer_engine`, {});
    expect([noInit.status, noInit.text]).toEqual([400, httpError("Missing 'init_info' in request body")]);
    const init = await post(`${url}/init_weight_transfer_engine`, { init_info: { backend: 'nccl' } });
    expect([init.status, init.text]).toEqual([200, '{"message":"Weight transfer initialized"}']);
    expect((await post(`${url}/start_weight_update`, {})).text).toBe('{"message":"Weight update started"}');
    const noUpdate = await post(`${url}/update_weights`, { names: [] });
    expect([noUpdate.status, noUpdate.text]).toEqual([400, httpError("Missing 'update_info' in request body")]);
    const update = await post(`${url}/update_weights`, { update_info: { names: ['w'] } });
    expect([update.status, update.text]).toEqual([200, '{"message":"Weights updated"}']);
    const finish = await post(`${url}/finish_weight_update`, { weight_version: '3' });
    expect(finish.text).toBe('{"message":"Weight update finished"}');
    const invalid = await send('POST', '/update_weights', '{oops');
    expect([invalid.status, invalid.text]).toEqual([400, httpError('Invalid JSON format')]);
  });

  it('/pause answers {"status":"paused"}; a mode outside the literal is a 400', async () => {
    const paused = await post(`${url}/pause?mode=keep`, {});
    expect([paused.status, paused.text]).toEqual([200, '{"status":"paused"}']);
    expect(JSON.parse((await post(`${url}/resume`, {})).text)).toEqual({ status: 'resumed' });
    const bad = JSON.parse((await post(`${url}/pause?mode=bogus`, {})).text).error;
    expect(bad.type).toBe('Bad Request');
    expect(bad.message).toContain("'type': 'literal_error', 'loc': ('query', 'mode')");
  });

  it('/sleep aborts in-flight requests by default and empty-200s; /is_sleeping; /wake_up resumes', async () => {
    const streaming = post(`${url}/v1/completions`, { prompt: [1], max_tokens: 5000, stream: true });
    for (let polls = 0; (await server.control.stats()).total.running === 0; polls++) {
      if (polls > 200) throw new Error('the stream never started');
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    const slept = await post(`${url}/sleep?level=1`, {});
    expect([slept.status, slept.text]).toEqual([200, '']);
    const chunks = sseChunks<{ choices: { finish_reason: string | null }[] }>((await streaming).text);
    expect(chunks.at(-1)!.choices[0]!.finish_reason).toBe('abort');
    expect(JSON.parse((await get(`${url}/is_sleeping`)).text)).toEqual({ is_sleeping: true });
    expect((await post(`${url}/wake_up`, {})).text).toBe('');
    expect(JSON.parse((await get(`${url}/is_sleeping`)).text)).toEqual({ is_sleeping: false });
    expect(JSON.parse((await post(`${url}/v1/completions`, { prompt: [1], max_tokens: 1 })).text).choices).toHaveLength(
      1,
    );
  });

  it('/sleep accepts level 0 (scheduling paused only) and mode=wait; /wake_up honours tags', async () => {
    expect((await post(`${url}/sleep?level=0&mode=wait`, {})).status).toBe(200);
    expect(JSON.parse((await get(`${url}/is_sleeping`)).text)).toEqual({ is_sleeping: true });
    expect((await post(`${url}/wake_up?tags=scheduling`, {})).status).toBe(200);
    expect(JSON.parse((await get(`${url}/is_sleeping`)).text)).toEqual({ is_sleeping: false });
    // Level 1: the weights and the KV cache sleep; waking one part leaves the engine asleep.
    await post(`${url}/sleep?level=1`, {});
    await post(`${url}/wake_up?tags=weights`, {});
    expect(JSON.parse((await get(`${url}/is_sleeping`)).text)).toEqual({ is_sleeping: true });
    await post(`${url}/wake_up?tags=kv_cache`, {});
    expect(JSON.parse((await get(`${url}/is_sleeping`)).text)).toEqual({ is_sleeping: false });
    expect((await post(`${url}/sleep?level=x`, {})).status).toBe(400);
  });

  it('/collective_rpc without method is a 400; cache resets and /get_world_size answer', async () => {
    const missing = await post(`${url}/collective_rpc`, {});
    expect([missing.status, missing.text]).toEqual([400, httpError("Missing 'method' in request body")]);
    for (const path of ['/reset_prefix_cache', '/reset_mm_cache', '/reset_encoder_cache']) {
      const response = await send('POST', path);
      expect([response.status, response.text]).toEqual([200, '']);
    }
    expect(JSON.parse((await get(`${url}/get_world_size?include_dp=false`)).text)).toEqual({ world_size: 1 });
  });

  it('are 404 with dev mode off, as vLLM without VLLM_SERVER_DEV_MODE=1; the rest still serves', async () => {
    const plain = await startFakeVllm({ devMode: false, control: false, ttftMs: 1, itlMs: 1 });
    try {
      for (const path of ['/pause', '/sleep', '/update_weights', '/collective_rpc', '/reset_prefix_cache']) {
        const response = await post(`${plain.url}${path}`, {});
        expect([response.status, response.text]).toEqual([404, '{"detail":"Not Found"}']);
      }
      expect((await get(`${plain.url}/is_paused`)).status).toBe(404);
      expect((await post(`${plain.url}/v1/completions`, { prompt: [1], max_tokens: 1 })).status).toBe(200);
    } finally {
      await plain.close();
    }
  });
});

describe('LoRA at run time (serve/lora/api_router.py, openai/models/serving.py)', () => {
  it('loads an adapter: plain-text success, then served as `model` and listed by /v1/models', async () => {
    const loaded = await post(`${url}/v1/load_lora_adapter`, { lora_name: 'sql', lora_path: '/adapters/sql' });
    expect([loaded.status, loaded.text]).toEqual([200, "Success: LoRA adapter 'sql' added successfully."]);
    const { data } = JSON.parse((await get(`${url}/v1/models`)).text);
    expect(data[1]).toMatchObject({ id: 'sql', root: '/adapters/sql', parent: 'fake-model', max_model_len: null });
    const completion = JSON.parse(
      (await post(`${url}/v1/completions`, { model: 'sql', prompt: [1], max_tokens: 2 })).text,
    );
    expect(completion.model).toBe('sql');
    expect((await post(`${url}/tokenize`, { model: 'sql', prompt: 'x' })).status).toBe(200);
    const again = await post(`${url}/v1/load_lora_adapter`, { lora_name: 'sql', lora_path: '/adapters/sql' });
    expect([again.status, JSON.parse(again.text)]).toEqual([
      400,
      {
        error: {
          message:
            "The lora adapter 'sql' has already been loaded. If you want to load the adapter in place, set 'load_inplace' to True.",
          type: 'InvalidUserInput',
          param: null,
          code: 400,
        },
      },
    ]);
    const inPlace = { lora_name: 'sql', lora_path: '/adapters/sql2', load_inplace: true };
    expect((await post(`${url}/v1/load_lora_adapter`, inPlace)).status).toBe(200);
    const unloaded = await post(`${url}/v1/unload_lora_adapter`, { lora_name: 'sql' });
    expect([unloaded.status, unloaded.text]).toEqual([200, "Success: LoRA adapter 'sql' removed successfully."]);
    expect((await post(`${url}/v1/completions`, { model: 'sql', prompt: [1], max_tokens: 1 })).status).toBe(404);
  });

  it('errors: empty names, unknown adapters, missing fields', async () => {
    const empty = await post(`${url}/v1/load_lora_adapter`, { lora_name: '', lora_path: '' });
    expect(JSON.parse(empty.text).error).toEqual({
      message: "Both 'lora_name' and 'lora_path' must be provided.",
      type: 'InvalidUserInput',
      param: null,
      code: 400,
    });
    const unknown = await post(`${url}/v1/unload_lora_adapter`, { lora_name: 'nope' });
    expect([unknown.status, JSON.parse(unknown.text).error]).toEqual([
      404,
      { message: "The lora adapter 'nope' cannot be found.", type: 'NotFoundError', param: null, code: 404 },
    ]);
    const noName = await post(`${url}/v1/unload_lora_adapter`, { lora_name: '' });
    expect(JSON.parse(noName.text).error.message).toBe("'lora_name' needs to be provided to unload a LoRA adapter.");
    const missing = JSON.parse((await post(`${url}/v1/load_lora_adapter`, { lora_name: 'a' })).text).error;
    expect([missing.code, missing.type]).toEqual([400, 'Bad Request']);
    expect(missing.message).toContain("'type': 'missing', 'loc': ('body', 'lora_path')");
  });
});

describe('/v1/chat/completions/render (serve/render/serving.py render_chat_request)', () => {
  it('returns the GenerateRequest the chat request renders to, without generating', async () => {
    const before = (await server.control.stats()).total.generationTokens;
    const messages = [{ role: 'user', content: 'hi' }];
    const rendered = JSON.parse(
      (await post(`${url}/v1/chat/completions/render`, { model: 'fake-model', messages, max_tokens: 5, seed: 3 })).text,
    );
    expect(Object.keys(rendered)).toEqual([
      'request_id',
      'token_ids',
      'features',
      'sampling_params',
      'model',
      'stream',
      'stream_options',
      'cache_salt',
      'priority',
      'kv_transfer_params',
    ]);
    expect(rendered.request_id).toMatch(/^chatcmpl-/);
    expect(rendered.token_ids).toEqual(JSON.parse((await post(`${url}/tokenize`, { messages })).text).tokens);
    expect(rendered).toMatchObject({ features: null, model: 'fake-model', stream: false, priority: 0 });
    expect(rendered.sampling_params).toMatchObject({ max_tokens: 5, seed: 3, n: 1 });
    expect((await server.control.stats()).total.generationTokens).toBe(before);
    // The rendered request generates what the chat request would.
    const generated = JSON.parse(
      (
        await post(`${url}/inference/v1/generate`, {
          token_ids: rendered.token_ids,
          sampling_params: { max_tokens: 5, seed: 3 },
        })
      ).text,
    );
    const chat = JSON.parse(
      (await post(`${url}/v1/chat/completions`, { messages, max_tokens: 5, seed: 3, return_token_ids: true })).text,
    );
    expect(generated.choices[0].token_ids).toEqual(chat.choices[0].token_ids);
    expect((await post(`${url}/v1/chat/completions/render`, { model: 'other', messages })).status).toBe(404);
  });
});
