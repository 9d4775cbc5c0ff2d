import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { expectedCompletion, type FakeVllm, packRoutedExperts, skyrlRoutes, startFakeVllm } from '../src/index.js';
import { get, post } from './helpers.js';

// SkyRL's additions to vLLM (NovaSky-AI/SkyRL, skyrl/backends/skyrl_train/inference_servers/vllm_server_actor.py and
// generate_wire.py), served by the `skyrl` preset through the fake's one engine, sessions and faults. The Python
// suite (python/test_skyrl_routes.py) drives the same routes with aiohttp, as SkyRL's client does.

interface SkyrlChoice {
  token_ids: number[];
  finish_reason: string;
  logprobs: { content: { logprob: number }[] } | null;
  routed_experts: { data: string; shape: number[]; dtype: string } | null;
}

let server: FakeVllm;
beforeAll(async () => {
  server = await startFakeVllm({ preset: 'skyrl', engines: 2, ttftMs: 1, itlMs: 1, jitter: 0, seed: 5 });
});
afterAll(() => server.close());
afterEach(() => server.control.setFaultProfile('none'));

describe('/skyrl/v1/generate', () => {
  it('answers with the engine tokens, logprobs and routed experts in SkyRL shape', async () => {
    const prompt = [3, 4, 5];
    const response = await post(`${server.url}/skyrl/v1/generate`, {
      token_ids: prompt,
      sampling_params: { max_tokens: 6, logprobs: 0, seed: 11 },
      model: 'fake-model',
    });
    expect(response.status).toBe(200);
    const body = JSON.parse(response.text) as { choices: SkyrlChoice[] };
    expect(Object.keys(body)).toEqual(['choices']);
    const [choice] = body.choices;
    expect(Object.keys(choice!)).toEqual(['token_ids', 'finish_reason', 'logprobs', 'routed_experts']);
    expect(choice!.token_ids).toEqual(expectedCompletion(prompt, { seed: 11, maxTokens: 6 }).tokenIds);
    expect(choice!.finish_reason).toBe('length');
    expect(choice!.logprobs!.content).toHaveLength(6);
    expect(Object.keys(choice!.logprobs!.content[0]!)).toEqual(['logprob']);
    // Every token that went through the model: the prompt and all output tokens but the last.
    const routed = [...prompt, ...choice!.token_ids].slice(0, prompt.length + 6 - 1);
    expect(choice!.routed_experts).toEqual(packRoutedExperts(routed, { layers: 4, topK: 2, experts: 8 }));
  });

  it('defaults to SamplingParams’ 16 tokens and sends null logprobs when none were asked for', async () => {
    const response = await post(`${server.url}/skyrl/v1/generate`, { token_ids: [1], sampling_params: {} });
    const [choice] = (JSON.parse(response.text) as { choices: SkyrlChoice[] }).choices;
    expect(choice!.token_ids).toHaveLength(16);
    expect(choice!.logprobs).toBeNull();
  });

  it('answers 500 without token_ids, as SkyRL’s handler raises KeyError', async () => {
    const response = await post(`${server.url}/skyrl/v1/generate`, { sampling_params: {} });
    expect(response.status).toBe(500);
    expect(JSON.parse(response.text).error.message).toContain('token_ids');
  });

  it('takes the fake’s faults: a status-503 header is answered and counted', async () => {
    const before = (await server.control.stats()).engines[0]!.faults['status-503'];
    const response = await post(
      `${server.url}/skyrl/v1/generate`,
      { token_ids: [1, 2], sampling_params: { max_tokens: 2 } },
      { 'x-fake-fault': 'status-503' },
    );
    expect(response.status).toBe(503);
    expect((await server.control.stats()).engines[0]!.faults['status-503']).toBe(before + 1);
  });

  it('queues in the engine: a keep-paused engine holds it until resume', async () => {
    const url = server.engines[1]!.url;
    expect((await post(`${url}/pause?mode=keep`, {})).status).toBe(200);
    const pending = post(`${url}/skyrl/v1/generate`, { token_ids: [9], sampling_params: { max_tokens: 3 } });
    try {
      for (let polls = 0; ; polls++) {
        const engine = (await server.control.stats()).engines[1]!;
        if (engine.waiting + engine.running === 1) break;
        if (polls > 1000) throw new Error('the request never reached the engine');
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    } finally {
      await post(`${url}/resume`, {});
    }
    const response = await pending;
    expect(response.status).toBe(200);
    expect((JSON.parse(response.text) as { choices: SkyrlChoice[] }).choices[0]!.token_ids).toHaveLength(3);
  });
});

describe('sessions and the router’s /finish_session', () => {
  it('counts a session’s requests on the engine and releases it', async () => {
    const headers = { 'x-session-id': 'trajectory-1' };
    await post(`${server.url}/inference/v1/generate`, { token_ids: [1], sampling_params: { max_tokens: 1 } }, headers);
    await post(`${server.url}/skyrl/v1/generate`, { token_ids: [1], sampling_params: { max_tokens: 1 } }, headers);
    await post(`${server.url}/v1/completions`, { prompt: 'a', max_tokens: 1 }, headers);
    const finished = await post(`${server.url}/finish_session?session_id=trajectory-1`, {});
    expect(finished.status).toBe(200);
    expect(JSON.parse(finished.text)).toEqual({ status: 'ok', session_id: 'trajectory-1', requests: 3 });
    const again = await post(`${server.url}/finish_session?session_id=trajectory-1`, {});
    expect(JSON.parse(again.text).requests).toBe(0);
    expect((await post(`${server.url}/finish_session`, {})).status).toBe(400);
  });
});

describe('LoRA adapters', () => {
  it('loads an adapter that the data plane then accepts as model, reloads it in place, and unloads it', async () => {
    const load = (path: string) =>
      post(`${server.url}/skyrl/v1/load_lora_adapter`, { lora_name: 'policy-lora', lora_path: path });
    const first = JSON.parse((await load('/tmp/a')).text);
    expect(first).toEqual({ status: 'ok', lora_name: 'policy-lora', lora_int_id: expect.any(Number) });
    expect(JSON.parse((await load('/tmp/b')).text).lora_int_id).toBe(first.lora_int_id);
    const completion = { model: 'policy-lora', prompt: [1, 2], max_tokens: 2 };
    expect((await post(`${server.url}/v1/completions`, completion)).status).toBe(200);
    // The other engine never loaded it.
    expect((await post(`${server.engines[1]!.url}/v1/completions`, completion)).status).toBe(404);
    const skyrl = await post(`${server.url}/skyrl/v1/generate`, {
      model: 'policy-lora',
      token_ids: [1],
      sampling_params: {},
    });
    expect(skyrl.status).toBe(400);
    expect(JSON.parse(skyrl.text).error.message).toBe('/skyrl/v1/generate does not support LoRA.');
    const unload = await post(`${server.url}/v1/unload_lora_adapter`, { lora_name: 'policy-lora' });
    expect(unload.status).toBe(200);
    expect(unload.text).toBe("Success: LoRA adapter 'policy-lora' removed successfully.");
    expect((await post(`${server.url}/v1/completions`, completion)).status).toBe(404);
    const missing = await post(`${server.url}/v1/unload_lora_adapter`, { lora_name: 'policy-lora' });
    expect(missing.status).toBe(404);
    expect(JSON.parse(missing.text).error.message).toBe("The lora adapter 'policy-lora' cannot be found.");
  });

  it('needs both a name and a path', async () => {
    const response = await post(`${server.url}/skyrl/v1/load_lora_adapter`, { lora_name: 'x' });
    expect(response.status).toBe(400);
    expect(JSON.parse(response.text).error.message).toBe("Both 'lora_name' and 'lora_path' must be provided.");
  });
});

describe('/fetch_weights', () => {
  it('fetches forward, refuses to go back and needs a target version', async () => {
    const url = server.engines[1]!.url;
    const fetched = await post(`${url}/fetch_weights`, { target_version: 2, sync_dir: '/tmp/sync' });
    expect(fetched.status).toBe(200);
    expect(JSON.parse(fetched.text)).toEqual({
      status: 'ok',
      result: [{ status: 'ok', target_version: 2, stats: { fetch_s: 0, apply_s: 0, reset_s: 0, total_s: 0 } }],
    });
    expect((await post(`${url}/fetch_weights`, { target_version: 2 })).status).toBe(200);
    const back = await post(`${url}/fetch_weights`, { target_version: 1 });
    expect(back.status).toBe(500);
    expect(JSON.parse(back.text).error.message).toContain('is ahead of requested target_version 1');
    const missing = await post(`${url}/fetch_weights`, { uri: 's3://x' });
    expect(missing.status).toBe(400);
    expect(JSON.parse(missing.text).error.message).toBe("'target_version' is required");
  });
});

describe('routes of your own', () => {
  it('serves a preset’s routes from child processes, and extra routes next to it', async () => {
    const fake = await startFakeVllm({
      preset: 'skyrl',
      processes: 1,
      routes: [{ method: 'GET', path: '/my/info', response: { body: { trainer: 'mine' } } }],
    });
    try {
      const generated = await post(`${fake.url}/skyrl/v1/generate`, {
        token_ids: [1],
        sampling_params: { max_tokens: 2 },
      });
      expect(generated.status).toBe(200);
      expect(JSON.parse((await get(`${fake.url}/my/info`)).text)).toEqual({ trainer: 'mine' });
    } finally {
      await fake.close();
    }
  });

  it('the options hook: a route with a handler, and the preset’s routes with other options', async () => {
    const fake = await startFakeVllm({
      routes: [
        ...skyrlRoutes({ routedExperts: false }),
        {
          method: 'POST',
          path: '/my/echo',
          handler: async ({ request, response, host }) => {
            const body = await request.json();
            response.send(
              200,
              { 'content-type': 'application/json' },
              JSON.stringify({ body, model: host.options.model }),
            );
          },
        },
      ],
    });
    try {
      const generated = await post(`${fake.url}/skyrl/v1/generate`, { token_ids: [1], sampling_params: {} });
      expect(JSON.parse(generated.text).choices[0].routed_experts).toBeNull();
      expect(JSON.parse((await post(`${fake.url}/my/echo`, { a: 1 })).text)).toEqual({
        body: { a: 1 },
        model: 'fake-model',
      });
    } finally {
      await fake.close();
    }
  });
});

describe('choosing the preset', () => {
  const cli = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
  it('from --preset, FAKE_VLLM_PRESET or a config file', async () => {
    const directory = mkdtempSync(join(tmpdir(), 'fake-vllm-preset-'));
    try {
      const config = join(directory, 'fake.json');
      writeFileSync(config, JSON.stringify({ preset: 'skyrl' }));
      for (const [args, env] of [
        [['--preset', 'skyrl'], {}],
        [[], { FAKE_VLLM_PRESET: 'skyrl' }],
        [['--config', config], {}],
      ] as const) {
        const child = spawn(process.execPath, [cli, '--no-control', ...args], {
          stdio: ['ignore', 'pipe', 'inherit'],
          env: { ...process.env, ...env },
        });
        try {
          const [line] = (await once(createInterface({ input: child.stdout }), 'line')) as [string];
          const { engines } = JSON.parse(line) as { engines: { url: string }[] };
          const response = await post(`${engines[0]!.url}/finish_session?session_id=s`, {});
          expect(response.status, JSON.stringify(args)).toBe(200);
        } finally {
          child.kill('SIGKILL');
        }
      }
    } finally {
      rmSync(directory, { recursive: true, force: true });
    }
  });

  it('a name it does not know is one line naming where it came from, and exit 2', async () => {
    const child = spawn(process.execPath, [cli, '--preset', 'verl'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    const [code] = (await once(child, 'exit')) as [number];
    expect(code).toBe(2);
    expect(stderr).toMatch(/^fake-vllm: Expected `--preset` to be one of none, skyrl, got `"verl"`/);
  });
});
