import { setupServer } from 'msw/node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  expectedCompletion,
  type FakeRoute,
  type FakeVllm,
  type FaultName,
  generatedTokenText,
  parseGenerateRequest,
  serveGeneration,
  startFakeVllm,
} from '../src/index.js';
import { createFakeVllmHandlers } from '../src/msw/handlers.js';
import { sseData } from './helpers.js';

// One route table and one fault module serve both transports: every case below runs against the node:http server
// and against the msw handlers, through the same global `fetch`.

/** Extra routes, as a preset adds them: one reusing the engine through serveGeneration and sessions, one static. */
const extraRoutes: FakeRoute[] = [
  {
    method: 'POST',
    path: '/custom/v1/generate',
    handler: (context) => {
      const session = context.request.header('x-session-id');
      if (session) context.host.sessions.set(session, (Number(context.host.sessions.get(session)) || 0) + 1);
      return serveGeneration(context, parseGenerateRequest, 'custom');
    },
  },
  {
    method: 'GET',
    path: '/custom/sessions',
    handler: ({ response, host }) =>
      response.send(200, { 'content-type': 'application/json' }, JSON.stringify(Object.fromEntries(host.sessions))),
  },
  { method: 'POST', path: '/finish_session', response: { body: { status: 'ok' } } },
];

const options = { ttftMs: 1, itlMs: 1, jitter: 0, seed: 7, routes: extraRoutes } as const;

interface Transport {
  name: string;
  url: string;
  injected(name: FaultName): Promise<number>;
}

let server: FakeVllm;
const msw = createFakeVllmHandlers({ ...options, baseUrl: 'http://fake-vllm.msw' });
const mock = setupServer(...msw.handlers);
const transports: Transport[] = [
  {
    name: 'node:http',
    get url() {
      return server.url;
    },
    injected: async (name) => (await server.control.stats()).total.faults[name],
  },
  { name: 'msw', url: msw.baseUrl, injected: async (name) => msw.injector.injected[name] },
];

beforeAll(async () => {
  // The test client is Node's fetch (undici: keep-alive 4 s, and no hint from the server, as from uvicorn). While a
  // test parses megabytes of events its loop is busy, undici's idle timer fires late, and it reused a socket the
  // server had just closed at 5 s: ECONNRESET, twice in about a dozen runs. That is the keep-alive race the SDK
  // absorbs and plain fetch does not; the server keeps its connections for this file.
  server = await startFakeVllm({ ...options, control: false, keepAliveTimeoutMs: 600_000 });
  mock.listen({ onUnhandledRequest: 'bypass' });
});
afterAll(async () => {
  mock.close();
  await server.close();
});

const textOf = (ids: readonly number[]) => ids.map((id) => generatedTokenText(id)).join('');

function complete(transport: Transport, body: unknown, fault?: string): Promise<Response> {
  return fetch(`${transport.url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(fault ? { 'x-fake-fault': fault } : {}) },
    body: JSON.stringify(body),
  });
}

/** Reads a body to the end; returns the text received and the error that cut it, if any. */
async function readAll(response: Response): Promise<{ text: string; error: unknown }> {
  const reader = response.body!.getReader();
  const decoder = new TextDecoder();
  let text = '';
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return { text, error: undefined };
      text += decoder.decode(value, { stream: true });
    }
  } catch (error) {
    return { text, error };
  }
}

describe.each(transports)('$name', (transport) => {
  it('answers a completion with the deterministic tokens, whole and streamed', async () => {
    const expected = textOf(expectedCompletion([1, 2], { seed: 7, maxTokens: 4 }).tokenIds);
    const whole = JSON.parse(await (await complete(transport, { prompt: [1, 2], max_tokens: 4 })).text());
    expect(whole.choices[0].text).toBe(expected);
    const streamed = await complete(transport, { prompt: [1, 2], max_tokens: 4, stream: true });
    expect(streamed.headers.get('content-type')).toBe('text/event-stream; charset=utf-8');
    const events = sseData(await streamed.text());
    expect(events.at(-1)).toBe('[DONE]');
    expect(
      events
        .slice(0, -1)
        .map((event) => JSON.parse(event).choices[0].text)
        .join(''),
    ).toBe(expected);
  });

  it('status faults: 429 with Retry-After, 500 as plain text, 422 as FastAPI', async () => {
    const limited = await complete(transport, { prompt: [1] }, 'status-429; retry_after=3');
    expect(limited.status).toBe(429);
    expect(limited.headers.get('retry-after')).toBe('3');
    expect(JSON.parse(await limited.text()).error.type).toBe('TooManyRequestsError');
    const text = await complete(transport, { prompt: [1] }, 'status-500-text');
    expect([text.status, await text.text()]).toEqual([500, 'Internal Server Error']);
    const validation = await complete(transport, { prompt: [1] }, 'status-422');
    expect(validation.status).toBe(422);
    expect(JSON.parse(await validation.text()).detail[0].type).toBe('missing');
  });

  it('reset-before-response: the request fails with no response, counted', async () => {
    const before = await transport.injected('reset-before-response');
    await expect(complete(transport, { prompt: [1] }, 'reset-before-response')).rejects.toThrow();
    expect(await transport.injected('reset-before-response')).toBe(before + 1);
  });

  it('reset-mid-stream; after_tokens=2: two events reach the client, then the connection is cut', async () => {
    const response = await complete(
      transport,
      { prompt: [1], max_tokens: 20, stream: true },
      'reset-mid-stream; after_tokens=2',
    );
    expect(response.status).toBe(200);
    const { text, error } = await readAll(response);
    expect(error).toBeDefined();
    expect(sseData(text)).toHaveLength(2);
  });

  it('truncate-stream: the stream ends cleanly without [DONE]', async () => {
    const response = await complete(
      transport,
      { prompt: [1], max_tokens: 8, stream: true },
      'truncate-stream; after_tokens=2',
    );
    const { text, error } = await readAll(response);
    expect(error).toBeUndefined();
    expect(sseData(text)).toHaveLength(2);
    expect(text).not.toContain('[DONE]');
  });

  it('truncate-stream, not streamed: the first half of the body arrives, then the connection closes', async () => {
    // One request id for both, so the bodies differ at most in `created` (which may tick over between them).
    const body = { prompt: [1], max_tokens: 8, request_id: 'truncated' };
    const whole = await (await complete(transport, body)).text();
    const before = await transport.injected('truncate-stream');
    const response = await complete(transport, body, 'truncate-stream');
    expect(response.status).toBe(200);
    const { text, error } = await readAll(response);
    expect(error).toBeDefined();
    const created = /"created":\d+/;
    expect(text.replace(created, '')).toBe(whole.slice(0, Math.floor(whole.length / 2)).replace(created, ''));
    expect(await transport.injected('truncate-stream')).toBe(before + 1);
  });

  it('body-level faults on a non-streamed request are counted once, not once per engine step', async () => {
    for (const fault of ['error-mid-stream', 'truncate-stream', 'malformed-chunk'] as const) {
      const before = await transport.injected(fault);
      const response = await complete(transport, { prompt: [1], max_tokens: 10 }, fault);
      await readAll(response);
      expect(await transport.injected(fault), fault).toBe(before + 1);
    }
  });

  it('malformed-chunk and error-mid-stream: one bad event; a vLLM error event then [DONE]', async () => {
    const malformed = sseData(
      await (await complete(transport, { prompt: [1], max_tokens: 4, stream: true }, 'malformed-chunk')).text(),
    );
    expect(malformed.filter((event) => event !== '[DONE]' && !isJson(event))).toHaveLength(1);
    expect(malformed.at(-1)).toBe('[DONE]');
    const errored = sseData(
      await (await complete(transport, { prompt: [1], max_tokens: 8, stream: true }, 'error-mid-stream')).text(),
    );
    expect(JSON.parse(errored.at(-2)!).error.code).toBe(500);
    expect(errored.at(-1)).toBe('[DONE]');
    const whole = await complete(transport, { prompt: [1], max_tokens: 4 }, 'error-mid-stream');
    expect(whole.status).toBe(500);
  });

  it('stall, hang-before-headers and slow-stream delay but complete; stall with action=close cuts', async () => {
    for (const fault of ['stall; ms=20', 'hang-before-headers; ms=20', 'slow-stream; factor=2']) {
      const before = await transport.injected(fault.split(';')[0] as FaultName);
      const events = sseData(
        await (await complete(transport, { prompt: [1], max_tokens: 3, stream: true }, fault)).text(),
      );
      expect(events).toHaveLength(4);
      expect(await transport.injected(fault.split(';')[0] as FaultName)).toBe(before + 1);
    }
    const closed = await complete(
      transport,
      { prompt: [1], max_tokens: 20, stream: true },
      'stall; ms=10; action=close',
    );
    expect((await readAll(closed)).error).toBeDefined();
  });

  it('stall with action=reset: events, then the connection is cut, counted once', async () => {
    const before = await transport.injected('stall');
    const response = await complete(
      transport,
      { prompt: [1], max_tokens: 20, stream: true },
      'stall; after_tokens=2; ms=10; action=reset',
    );
    expect(response.status).toBe(200);
    const { text, error } = await readAll(response);
    expect(error).toBeDefined();
    expect(sseData(text).length).toBeGreaterThanOrEqual(2);
    expect(text).not.toContain('[DONE]');
    expect(await transport.injected('stall')).toBe(before + 1);
  });

  it('status-503: the status, Retry-After and a ServiceUnavailableError body, counted', async () => {
    const before = await transport.injected('status-503');
    const response = await complete(transport, { prompt: [1] }, 'status-503; retry_after=4');
    expect([response.status, response.headers.get('retry-after')]).toEqual([503, '4']);
    expect(JSON.parse(await response.text()).error).toMatchObject({ type: 'ServiceUnavailableError', code: 503 });
    expect(await transport.injected('status-503')).toBe(before + 1);
  });

  it('refuse-connections: this request fails, and so does the next one within the window; then service resumes', async () => {
    const before = await transport.injected('refuse-connections');
    await expect(complete(transport, { prompt: [1] }, 'refuse-connections; window_ms=1000')).rejects.toThrow();
    await expect(complete(transport, { prompt: [1], max_tokens: 1 })).rejects.toThrow();
    expect(await transport.injected('refuse-connections')).toBe(before + 1);
    await until(async () => (await complete(transport, { prompt: [1], max_tokens: 1 }).catch(() => null))?.ok === true);
  });

  it('idle-close-race by header: node:http closes the socket after the response, msw fails the request; counted', async () => {
    const before = await transport.injected('idle-close-race');
    const response = complete(transport, { prompt: [1], max_tokens: 1 }, 'idle-close-race; delay_ms=0');
    if (transport.name === 'msw') {
      // No socket to close later: the race's other half, a request that fails before any byte.
      await expect(response).rejects.toThrow();
      expect(await transport.injected('idle-close-race')).toBe(before + 1);
    } else {
      expect((await response).status).toBe(200);
      await (await response).text();
      // Counted when the server closes the idle socket, just after the response.
      await until(async () => (await transport.injected('idle-close-race')) === before + 1);
    }
  });

  it("routing errors are FastAPI's: 404 and 405 with allow (openai/server_utils.py handles only FastAPI's subclass)", async () => {
    const missing = await fetch(`${transport.url}/v1/nope`);
    expect([missing.status, await missing.text()]).toEqual([404, '{"detail":"Not Found"}']);
    const wrongMethod = await fetch(`${transport.url}/v1/completions`);
    expect([wrongMethod.status, wrongMethod.headers.get('allow'), await wrongMethod.text()]).toEqual([
      405,
      'POST',
      '{"detail":"Method Not Allowed"}',
    ]);
    const paused = await fetch(`${transport.url}/pause?mode=keep`, { method: 'POST' });
    expect(await paused.text()).toBe('{"status":"paused"}');
    expect(await (await fetch(`${transport.url}/resume`, { method: 'POST' })).text()).toBe('{"status":"resumed"}');
  });

  it('a bad fault header is a 400 naming the header', async () => {
    const response = await complete(transport, { prompt: [1] }, 'no-such-fault');
    expect(response.status).toBe(400);
    expect(JSON.parse(await response.text()).error.message).toContain('x-fake-fault');
  });

  it('extra routes reuse the engine and sessions; static routes answer their body', async () => {
    const response = await fetch(`${transport.url}/custom/v1/generate`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-session-id': 's1' },
      body: JSON.stringify({ token_ids: [5], sampling_params: { max_tokens: 3 } }),
    });
    const body = JSON.parse(await response.text());
    expect(body.request_id).toMatch(/^custom-/);
    expect(body.choices[0].token_ids).toEqual(expectedCompletion([5], { seed: 7, maxTokens: 3 }).tokenIds);
    expect(JSON.parse(await (await fetch(`${transport.url}/custom/sessions`)).text())).toEqual({ s1: 1 });
    const finished = await fetch(`${transport.url}/finish_session`, { method: 'POST', body: '{}' });
    expect([finished.status, JSON.parse(await finished.text())]).toEqual([200, { status: 'ok' }]);
  });

  it('a reader that falls behind gets the tokens made meanwhile merged into fewer events, each token once', async () => {
    // vLLM does not queue events for a client that stops reading: uvicorn's send() awaits drain() above its 64 KiB
    // high-water mark (uvicorn/protocols/http/flow_control.py, httptools_impl.py), and the engine's outputs for the
    // request merge meanwhile (RequestOutputCollector, vllm/v1/engine/output_processor.py). ~18 MB of events here.
    const body = {
      prompt: [1, 2, 3],
      max_tokens: 600,
      n: 32,
      temperature: 1,
      logprobs: 20,
      return_token_ids: true,
      stream: true,
      seed: 3,
    };
    const eager = byChoice(await (await complete(transport, body)).text());
    const lazy = await complete(transport, body);
    // Nobody reads the second stream until the engine has finished it.
    await until(async () => (await running(transport)) === 0);
    const held = byChoice(await lazy.text());
    expect(eager.events).toBe(600 * 32);
    expect(held.events).toBeLessThan(eager.events / 2);
    expect(held.choices).toEqual(eager.choices);
  });
});

/** Per choice index: the token ids, text and logprob entries of a streamed completion, and its event count. */
function byChoice(text: string) {
  const choices: Array<{ tokenIds: number[]; text: string; logprobs: number }> = [];
  const chunks = sseData(text).filter((event) => event !== '[DONE]');
  for (const chunk of chunks) {
    for (const choice of JSON.parse(chunk).choices) {
      choices[choice.index] ??= { tokenIds: [], text: '', logprobs: 0 };
      const entry = choices[choice.index]!;
      entry.tokenIds.push(...choice.token_ids);
      entry.text += choice.text;
      entry.logprobs += choice.logprobs.tokens.length;
    }
  }
  return { events: chunks.length, choices };
}

/** `vllm:num_requests_running` of the transport's engine, from its /metrics. */
async function running(transport: Transport): Promise<number> {
  const metrics = await (await fetch(`${transport.url}/metrics`)).text();
  const line = metrics.split('\n').find((entry) => entry.startsWith('vllm:num_requests_running{'));
  return Number(line!.split(' ').at(-1));
}

async function until(check: () => Promise<boolean>): Promise<void> {
  for (let polls = 0; !(await check()); polls++) {
    if (polls > 500) throw new Error('condition not reached after 500 polls');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

function isJson(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}
