import { connect } from 'node:net';
import { Client } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FakeVllm, type FaultName, startFakeVllm } from '../src/index.js';
import { post, sseData } from './helpers.js';

let server: FakeVllm;
beforeAll(async () => {
  server = await startFakeVllm({ ttftMs: 2, itlMs: 2, jitter: 0 });
});
afterAll(() => server.close());

const injected = async (name: FaultName) => (await server.control.stats()).total.faults[name];

/** Sends one streamed completion on a fresh connection with a fault header; returns what the client saw. */
async function streamWithFault(fault: string, maxTokens = 8) {
  const client = new Client(server.url);
  try {
    const response = await client.request({
      path: '/v1/completions',
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-fake-fault': fault },
      body: JSON.stringify({ prompt: [1], max_tokens: maxTokens, stream: true }),
    });
    let text = '';
    try {
      for await (const chunk of response.body) text += chunk;
      return { status: response.statusCode, headers: response.headers, text, error: undefined };
    } catch (error) {
      return {
        status: response.statusCode,
        headers: response.headers,
        text,
        error: error as Error & { code?: string },
      };
    }
  } catch (error) {
    return { status: 0, headers: {}, text: '', error: error as Error & { code?: string } };
  } finally {
    await client.destroy();
  }
}

describe('faults triggered by x-fake-fault', () => {
  it('reset-before-response: a TCP reset before any byte', async () => {
    const before = await injected('reset-before-response');
    const outcome = await streamWithFault('reset-before-response');
    expect(outcome.status).toBe(0);
    expect(outcome.error?.code).toMatch(/ECONNRESET|UND_ERR_SOCKET/);
    expect(await injected('reset-before-response')).toBe(before + 1);
  });

  it('reset-mid-stream: tokens, then a reset, no [DONE]', async () => {
    const outcome = await streamWithFault('reset-mid-stream; after_tokens=3', 20);
    expect(outcome.status).toBe(200);
    expect(outcome.error?.code).toMatch(/ECONNRESET|UND_ERR_SOCKET/);
    expect(outcome.text).toContain('data: {');
    expect(outcome.text).not.toContain('[DONE]');
  });

  it('truncate-stream: the HTTP response ends cleanly but without [DONE]', async () => {
    const outcome = await streamWithFault('truncate-stream; after_tokens=2', 20);
    expect(outcome.error).toBeUndefined();
    const events = sseData(outcome.text);
    expect(events).toHaveLength(2);
    expect(events).not.toContain('[DONE]');
  });

  it('malformed-chunk: one event that is not valid JSON, then the stream goes on', async () => {
    const outcome = await streamWithFault('malformed-chunk; after_tokens=1', 4);
    const events = sseData(outcome.text);
    const bad = events.filter(
      (event) =>
        event !== '[DONE]' &&
        !(() => {
          try {
            JSON.parse(event);
            return true;
          } catch {
            return false;
          }
        })(),
    );
    expect(bad).toHaveLength(1);
    expect(events.at(-1)).toBe('[DONE]');
  });

  it('error-mid-stream: a vLLM error event, then [DONE]', async () => {
    const outcome = await streamWithFault('error-mid-stream; after_tokens=2', 20);
    const events = sseData(outcome.text);
    expect(JSON.parse(events.at(-2)!).error).toMatchObject({ code: 500, type: 'InternalServerError' });
    expect(events.at(-1)).toBe('[DONE]');
  });

  it('stall: a pause, then the stream continues to the end', async () => {
    const before = await injected('stall');
    const outcome = await streamWithFault('stall; after_tokens=1; ms=300', 4);
    expect(await injected('stall')).toBe(before + 1);
    expect(sseData(outcome.text).filter((event) => event !== '[DONE]')).toHaveLength(4);
    expect(sseData(outcome.text).at(-1)).toBe('[DONE]');
  });

  it('stall with action=close: the socket closes mid-stream', async () => {
    const outcome = await streamWithFault('stall; after_tokens=1; ms=50; action=close', 50);
    expect(outcome.error).toBeDefined();
    expect(outcome.text).not.toContain('[DONE]');
  });

  it('slow-stream: tokens arrive only every Nth engine step', async () => {
    const before = await injected('slow-stream');
    const outcome = await streamWithFault('slow-stream; factor=20', 5);
    expect(sseData(outcome.text).filter((event) => event !== '[DONE]')).toHaveLength(5);
    expect(sseData(outcome.text).at(-1)).toBe('[DONE]');
    expect(await injected('slow-stream')).toBe(before + 1);
  });

  it('status-429 and status-503 carry Retry-After in seconds, or none', async () => {
    const limited = await post(
      `${server.url}/v1/completions`,
      { prompt: 'x' },
      { 'x-fake-fault': 'status-429; retry_after=7' },
    );
    expect(limited.status).toBe(429);
    expect(limited.headers['retry-after']).toBe('7');
    expect(JSON.parse(limited.text).error.code).toBe(429);
    const unavailable = await post(
      `${server.url}/v1/completions`,
      { prompt: 'x' },
      { 'x-fake-fault': 'status-503; retry_after=none' },
    );
    expect(unavailable.status).toBe(503);
    expect(unavailable.headers['retry-after']).toBeUndefined();
  });

  it('status-500-text answers plain text like a router', async () => {
    const response = await post(`${server.url}/v1/completions`, { prompt: 'x' }, { 'x-fake-fault': 'status-500-text' });
    expect(response.status).toBe(500);
    expect(response.headers['content-type']).toMatch(/^text\/plain/);
    expect(response.text).toBe('Internal Server Error');
  });

  it('status-422 answers a FastAPI validation body', async () => {
    const response = await post(`${server.url}/v1/completions`, { prompt: 'x' }, { 'x-fake-fault': 'status-422' });
    expect(response.status).toBe(422);
    expect(JSON.parse(response.text).detail[0].msg).toBe('Field required');
  });

  it('hang-before-headers: no byte until the given time, then a normal answer', async () => {
    const before = await injected('hang-before-headers');
    const response = await post(
      `${server.url}/v1/completions`,
      { prompt: 'x', max_tokens: 1 },
      { 'x-fake-fault': 'hang-before-headers; ms=250' },
    );
    expect(await injected('hang-before-headers')).toBe(before + 1);
    expect(response.status).toBe(200);
  });

  it('refuse-connections: new connects are refused for the window, then accepted again', async () => {
    const outcome = await streamWithFault('refuse-connections; window_ms=400');
    expect(outcome.error).toBeDefined();
    const port = Number(new URL(server.url).port);
    const refused = await new Promise<string>((resolve) => {
      const socket = connect(port, '127.0.0.1');
      socket.on('connect', () => {
        socket.destroy();
        resolve('connected');
      });
      socket.on('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? 'error'));
    });
    expect(refused).toBe('ECONNREFUSED');
    await new Promise((resolve) => setTimeout(resolve, 600));
    expect((await post(`${server.url}/v1/completions`, { prompt: 'x', max_tokens: 1 })).status).toBe(200);
  });

  it('rejects an unknown fault name with a 400 listing the valid ones', async () => {
    const response = await post(`${server.url}/v1/completions`, { prompt: 'x' }, { 'x-fake-fault': 'explode' });
    expect(response.status).toBe(400);
    expect(JSON.parse(response.text).error.message).toContain('reset-mid-stream');
  });
});

describe('faults from a profile', () => {
  it('fires `first` N requests, counted, then stops', async () => {
    await server.control.setFaultProfile({ 'status-503': { first: 3, params: { retry_after: 0 } } });
    const before = await injected('status-503');
    const statuses: number[] = [];
    for (let index = 0; index < 6; index++)
      statuses.push((await post(`${server.url}/v1/completions`, { prompt: 'x', max_tokens: 1 })).status);
    expect(statuses).toEqual([503, 503, 503, 200, 200, 200]);
    expect(await injected('status-503')).toBe(before + 3);
    await server.control.setFaultProfile('none');
  });
});
