// Hostile input must end as a clear error while the server keeps serving: one test per fake-vllm row of the
// robustness audit (bad fault parameters, malformed control frames, unbounded n, huge prompts, trickled bodies,
// huge batches, out-of-vocabulary detokenize), and the rows it found handled, so they stay so (a 100 MB body,
// binary bodies, trickled headers).
import { once } from 'node:events';
import { connect } from 'node:net';
import { request } from 'undici';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { ControlClient, type FakeVllm, resolveFakeVllmOptions, startFakeVllm } from '../src/index.js';
import { post, sseChunks } from './helpers.js';

let server: FakeVllm;
beforeAll(async () => {
  server = await startFakeVllm({ ttftMs: 1, itlMs: 1, jitter: 0 });
});
afterAll(() => server.close());
afterEach(() => server.control.setFaultProfile('none'));

interface ErrorBody {
  error: { message: string; type: string; param: string | null; code: number };
}

/** A request that must still work after each hostile one: the process and its engine are alive. */
async function stillServes(url = server.url): Promise<void> {
  const response = await post(`${url}/v1/completions`, { prompt: [1, 2], max_tokens: 3, stream: true });
  expect(response.status).toBe(200);
  expect(sseChunks(response.text)).toHaveLength(3);
}

describe('a stall fault with a bad parameter', () => {
  it.each([
    ['stall; action=bogus', 'action'],
    ['stall; ms=abc', 'ms'],
    ['stall; ms=-1', 'ms'],
    ['stall; after_tokens=1.5', 'after_tokens'],
  ])('`x-fake-fault: %s` gets a 400 naming the header and `%s`; the server keeps serving', async (header, param) => {
    const response = await post(
      `${server.url}/v1/completions`,
      { prompt: [1], max_tokens: 5, stream: true },
      { 'x-fake-fault': header },
    );
    expect(response.status).toBe(400);
    const { error } = JSON.parse(response.text) as ErrorBody;
    expect(error.type).toBe('BadRequestError');
    expect(error.message).toContain('`x-fake-fault`');
    expect(error.message).toContain(`\`${param}\``);
    expect((await server.control.stats()).total.faults.stall).toBe(0);
    await stillServes();
  });

  it('is rejected by the control channel, naming the fault and the parameter, and the old profile stays', async () => {
    const control = await ControlClient.connect(server.control.url!);
    await control.setFaultProfile({ 'status-503': { first: 1 } });
    await expect(control.setFaultProfile({ stall: { rate: 1, params: { action: 'bogus' } } })).rejects.toThrow(
      /parameter `action` of fault `stall`.*got `bogus`/,
    );
    await expect(control.setFaultProfile({ stall: { rate: 1, params: { ms: -1 } } })).rejects.toThrow(
      /parameter `ms` of fault `stall`/,
    );
    await expect(control.setFaultProfile({ 'status-503': 'x' } as never)).rejects.toThrow(
      /rule of fault `status-503`.*got "x"/,
    );
    await expect(control.setFaultProfile({ 'status-503': { rate: 1, typo: 1 } } as never)).rejects.toThrow(
      /Unknown field `typo`/,
    );
    // The profile set before the rejected ones is still in force: its one 503, then service as usual.
    expect((await post(`${server.url}/v1/completions`, { prompt: [1], max_tokens: 1 })).status).toBe(503);
    await stillServes();
    await control.close();
  });
});

describe('malformed control frames', () => {
  it('each get an error reply, and the channel and the server keep serving', async () => {
    const socket = new WebSocket(server.control.url!);
    await once(socket, 'open');
    const replies: Array<{ type: string; id?: unknown; message?: string }> = [];
    socket.on('message', (data) => {
      const frame = JSON.parse(String(data)) as { type: string };
      if (frame.type !== 'stats') replies.push(frame);
    });
    const frames = [
      'null',
      '42',
      '"stats"',
      '[]',
      'not json',
      '{}',
      '{"type":"bogus","id":1}',
      '{"type":"stats","id":{}}',
      '{"type":"set-fault-profile","id":2}',
      '{"type":"set-fault-profile","id":3,"profile":null}',
      '{"type":"set-latency","id":4}',
      '{"type":"set-latency","id":5,"latency":null}',
      '{"type":"set-latency","id":6,"latency":{"maxNumSeqs":0}}',
      '{"type":"set-fault-profile","id":7,"profile":"none","engine":-1}',
    ];
    for (const frame of frames) socket.send(frame);
    socket.send('{"type":"reset-high-water-marks","id":"last"}');
    await expect.poll(() => replies.length).toBe(frames.length + 1);
    // Frames that reach an async handler may be answered out of order: match answers by id.
    const errors = replies.filter((reply) => reply.type === 'error');
    expect(errors).toHaveLength(frames.length);
    expect(errors.map((reply) => reply.id).sort()).toEqual(
      [1, 2, 3, 4, 5, 6, 7, ...frames.slice(7).map(() => undefined)].sort(),
    );
    expect(errors[0]!.message).toMatch(/JSON object with `type`, got null/);
    expect(errors.find((reply) => reply.id === 6)!.message).toMatch(/Unknown latency option `maxNumSeqs`/);
    expect(replies.find((reply) => reply.type === 'ok')).toEqual({ type: 'ok', id: 'last' });
    socket.close();
    await stillServes();
  });
});

describe('the work of one request is bounded', () => {
  // vllm/sampling_params.py _verify_args: n must be at most envs.VLLM_MAX_N_SEQUENCES, 16384 by default (vllm/envs.py).
  it('n above 16,384 is a 400, before anything is allocated', async () => {
    const before = await server.control.stats();
    const response = await post(`${server.url}/v1/completions`, { prompt: 'x', n: 1_000_000, max_tokens: 1 });
    expect(response.status).toBe(400);
    expect((JSON.parse(response.text) as ErrorBody).error.message).toContain('16384');
    const after = await server.control.stats();
    expect(after.total.completed).toBe(before.total.completed);
    expect(after.engines[0]!.promptTokens).toBe(before.engines[0]!.promptTokens);
    await stillServes();
  });

  it('prompts x n x max_tokens above maxRequestTokens is a 400 naming the bound', async () => {
    const response = await post(`${server.url}/inference/v1/generate`, {
      token_ids: [1],
      sampling_params: { n: 16_384, max_tokens: 2_000 },
    });
    expect(response.status).toBe(400);
    const { error } = JSON.parse(response.text) as ErrorBody;
    expect(error.param).toBe('max_tokens');
    expect(error.message).toContain('32768000 generated tokens');
    const sequences = await post(`${server.url}/v1/completions`, { prompt: ['a', 'b'], n: 10_000, max_tokens: 1 });
    expect(sequences.status).toBe(400);
    expect((JSON.parse(sequences.text) as ErrorBody).error.message).toContain('20000 sequences (2 prompts x n=10000)');
  });

  it('a 51 MB prompt string is refused before tokenizing, as vLLM does', async () => {
    const prompt = 'a'.repeat(51 * 1024 * 1024);
    for (const [path, body] of [
      ['/v1/completions', { prompt, max_tokens: 16 }],
      ['/v1/chat/completions', { messages: [{ role: 'user', content: prompt }] }],
      ['/tokenize', { prompt }],
    ] as const) {
      const response = await post(`${server.url}${path}`, body);
      expect(response.status, path).toBe(400);
      const { error } = JSON.parse(response.text) as ErrorBody;
      expect(error.param, path).toBe('input_text');
      expect(error.message, path).toMatch(/^You passed \d+ input characters and requested \d+ output tokens\./);
    }
    await stillServes();
  });

  it('a batch of 200,000 prompt arrays is a 400, not a stack overflow', async () => {
    const prompt = Array.from({ length: 200_000 }, () => [1]);
    const response = await post(`${server.url}/v1/completions`, { prompt, max_tokens: 1 });
    expect(response.status).toBe(400);
    expect(JSON.parse(response.text)).toEqual({
      error: {
        message: '`prompt` holds 200000 prompts; fake-vllm accepts at most 16384 per request',
        type: 'BadRequestError',
        param: 'prompt',
        code: 400,
      },
    });
    // A batch within the bound still works.
    const small = await post(`${server.url}/v1/completions`, { prompt: [[1], [2], [3]], max_tokens: 1 });
    expect(JSON.parse(small.text).choices).toHaveLength(3);
  });
});

describe('bodies that are too big or not JSON', () => {
  it('a 100 MB body gets 413 and its connection closed', { timeout: 30_000 }, async () => {
    const { port } = new URL(server.url);
    const socket = connect(Number(port), '127.0.0.1');
    await once(socket, 'connect');
    const size = 100 * 1024 * 1024;
    socket.write(
      `POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: ${size}\r\n\r\n`,
    );
    let received = '';
    let closed = false;
    socket.on('data', (chunk) => {
      received += chunk;
    });
    // The server stops reading: writes past that may fail with EPIPE or ECONNRESET, which is not what is tested.
    socket.on('error', () => {});
    const closing = new Promise<void>((resolve) =>
      socket.once('close', () => {
        closed = true;
        resolve();
      }),
    );
    const chunk = Buffer.alloc(1024 * 1024, 'a');
    for (let sent = 0; sent < size && !closed && received === ''; sent += chunk.length) {
      if (!socket.write(chunk)) await Promise.race([new Promise((resolve) => socket.once('drain', resolve)), closing]);
    }
    await closing;
    expect(received).toMatch(/^HTTP\/1\.1 413 /);
    expect(received.toLowerCase()).toContain('connection: close');
    expect(received).toContain(`"message":"Request body exceeds ${64 * 1024 * 1024} bytes"`);
    await stillServes();
  });

  // openai/server_utils.py validation_exception_handler: FastAPI's json_invalid (and a non-JSON content type,
  // openai/utils.py validate_json_request) become vLLM's 400 "Bad Request".
  it('a binary body is a 400, whether sent as JSON or as octet-stream', async () => {
    const bytes = Buffer.from(Array.from({ length: 256 }, (_, index) => (index * 151 + 7) % 256));
    for (const [path, contentType, expected] of [
      ['/v1/completions', 'application/json', "'type': 'json_invalid'"],
      ['/v1/chat/completions', 'application/json', "'type': 'json_invalid'"],
      ['/inference/v1/generate', 'application/json', "'type': 'json_invalid'"],
      ['/v1/completions', 'application/octet-stream', "Only 'application/json' is allowed"],
    ] as const) {
      const response = await request(`${server.url}${path}`, {
        method: 'POST',
        headers: { 'content-type': contentType },
        body: bytes,
      });
      expect(response.statusCode, `${path} ${contentType}`).toBe(400);
      const { error } = (await response.body.json()) as ErrorBody;
      expect(error.type).toBe('Bad Request');
      expect(error.message).toContain(expected);
    }
    await stillServes();
  });
});

describe('request headers trickled byte by byte (slowloris)', () => {
  let slow: FakeVllm;
  beforeAll(async () => {
    // The keep-alive idle close is what ends a connection whose request never completes its headers; lowered here.
    slow = await startFakeVllm({ ttftMs: 1, itlMs: 1, jitter: 0, keepAliveTimeoutMs: 300, control: false });
  });
  afterAll(() => slow.close());

  it('are cut: the server closes the connection without answering', { timeout: 15_000 }, async () => {
    const { port } = new URL(slow.url);
    const socket = connect(Number(port), '127.0.0.1');
    await once(socket, 'connect');
    let received = '';
    socket.on('data', (chunk) => {
      received += chunk;
    });
    socket.on('error', () => {});
    const closed = once(socket, 'close');
    const head = 'POST /v1/completions HTTP/1.1\r\nhost: x\r\nx-padding: ';
    let sent = 0;
    const trickle = setInterval(() => {
      if (!socket.destroyed) socket.write(head[sent] ?? 'a');
      sent++;
    }, 50);
    // The client never ends or destroys its side, so only the server can close it: if it never does, this await
    // holds the test until its timeout, which is how this test fails.
    await closed;
    clearInterval(trickle);
    expect(received).toBe(''); // no response was sent
    await stillServes(slow.url);
  });
});

describe('/detokenize', () => {
  it('answers an out-of-vocabulary id with vLLM 400, and decodes the last id in the vocabulary', async () => {
    for (const tokens of [[1e12], [5, 32_000]]) {
      const response = await post(`${server.url}/detokenize`, { tokens });
      expect(response.status).toBe(400);
      expect(JSON.parse(response.text)).toEqual({
        error: {
          message: `Token id ${Math.max(...tokens)} is out of vocabulary`,
          type: 'BadRequestError',
          param: 'tokens',
          code: 400,
        },
      });
    }
    expect((await post(`${server.url}/detokenize`, { tokens: [300, 31_999] })).status).toBe(200);
  });
});

describe('a request body trickled byte by byte', () => {
  let slow: FakeVllm;
  beforeAll(async () => {
    slow = await startFakeVllm({ ttftMs: 1, itlMs: 5, jitter: 0, requestBodyTimeoutMs: 300, control: false });
  });
  afterAll(() => slow.close());

  it('gets 408 and its connection closed after requestBodyTimeoutMs', { timeout: 10_000 }, async () => {
    const { port } = new URL(slow.url);
    const socket = connect(Number(port), '127.0.0.1');
    await once(socket, 'connect');
    socket.write(
      'POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{',
    );
    let received = '';
    socket.on('data', (chunk) => {
      received += chunk;
    });
    await once(socket, 'close');
    expect(received).toMatch(/^HTTP\/1\.1 408 /);
    expect(received.toLowerCase()).toContain('connection: close');
    expect(received).toContain('"type":"RequestTimeoutError"');
    await expect.poll(async () => (await slow.control.stats()).engines[0]!.connectionsOpen).toBe(0);
    await stillServes(slow.url);
  });

  it('does not cut a response that outlives the body timeout', async () => {
    const response = await post(`${slow.url}/v1/completions`, { prompt: [1], max_tokens: 120, stream: true });
    const chunks = sseChunks<{ choices: { finish_reason: string | null }[] }>(response.text);
    expect(chunks).toHaveLength(120);
    expect(chunks.at(-1)!.choices[0]!.finish_reason).toBe('length');
  });

  it('defaults to 30 s', () => {
    expect(resolveFakeVllmOptions().requestBodyTimeoutMs).toBe(30_000);
  });
});
