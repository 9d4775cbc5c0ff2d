import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { type FakeVllm, startFakeVllm } from 'fake-vllm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  AbortError,
  ClientClosedError,
  type ConnectionError,
  HttpStatusError,
  InvalidOptionsError,
  isInferenceError,
  RemoteInferenceClient,
  ServerStreamError,
  StreamParseError,
  StreamTruncatedError,
  TimeoutError,
} from '../src/index.js';

// The 300 MB error-body test measures what the client retains after a full collection.
setFlagsFromString('--expose-gc');

import { expectedTokens } from './helpers.js';

// The SDK rows of the robustness audit: hostile servers and caller mistakes. Each ends as a typed error at the right
// layer, with bounded memory, and a caller's mistake never reaches (or is counted against) an engine.

/** A raw HTTP server answering every request with `respond`. */
async function rawServer(respond: (request: IncomingMessage, response: ServerResponse) => void) {
  const server: Server = createServer(respond);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    close: () => {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

const sseHead = { 'content-type': 'text/event-stream; charset=utf-8' };
const streamBody = { token_ids: [1], sampling_params: { max_tokens: 4 }, stream: true as const };

async function drain(stream: AsyncIterable<unknown>): Promise<unknown> {
  try {
    for await (const _chunk of stream) {
    }
    return undefined;
  } catch (error) {
    return error;
  }
}

let fake: FakeVllm;
beforeAll(async () => {
  fake = await startFakeVllm({ ttftMs: 1, itlMs: 1, jitter: 0 });
});
afterAll(() => fake.close());

describe('hostile servers', () => {
  it('an SSE body with no newline is a typed parse error at maxEventBytes, not a growing buffer', async () => {
    const server = await rawServer((_request, response) => {
      response.writeHead(200, sseHead);
      const chunk = Buffer.alloc(64 * 1024, 0x61);
      for (let index = 0; index < 64; index++) response.write(chunk); // 4 MiB, never a line end
      response.end();
    });
    const client = new RemoteInferenceClient({
      engines: [server.url],
      transport: { shared: false, maxEventBytes: 256 * 1024 },
      retry: { maxAttempts: 1 },
    });
    try {
      const error = await client
        .generate(streamBody)
        .then(drain)
        .catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(StreamParseError);
      expect((error as Error).message).toMatch(/exceeds 262144 bytes/);
    } finally {
      await client.close();
      await server.close();
    }
  });

  it('events that are JSON but not chunk objects are parse errors, and an error event with a null error is typed', async () => {
    const bodies = ['data: null\n\n', 'data: 42\n\n', 'data: {"choices": "x"}\n\n', 'data: {"error": null}\n\n'];
    let next = 0;
    const server = await rawServer((_request, response) => {
      response.writeHead(200, sseHead);
      response.end(`${bodies[next++ % bodies.length]}data: [DONE]\n\n`);
    });
    const client = new RemoteInferenceClient({
      engines: [server.url],
      transport: { shared: false },
      retry: { maxAttempts: 1 },
    });
    try {
      const errors = [];
      for (let index = 0; index < bodies.length; index++) {
        errors.push(await client.generate(streamBody).then(drain, (caught: unknown) => caught));
      }
      expect(errors.slice(0, 3).every((error) => error instanceof StreamParseError)).toBe(true);
      expect(errors[3]).toBeInstanceOf(ServerStreamError);
    } finally {
      await client.close();
      await server.close();
    }
  });

  it('resume refuses token_ids that are not token ids instead of re-sending characters as a prompt', async () => {
    const prompts: unknown[] = [];
    const server = await rawServer((request, response) => {
      let text = '';
      request.on('data', (chunk) => {
        text += chunk;
      });
      request.on('end', () => {
        prompts.push(JSON.parse(text).token_ids);
        response.writeHead(200, sseHead);
        // A cut stream whose only event carries a string where token ids belong.
        response.write('data: {"choices":[{"index":0,"token_ids":"abc","finish_reason":null}]}\n\n', () =>
          response.socket?.destroy(),
        );
      });
    });
    const client = new RemoteInferenceClient({ engines: [server.url], transport: { shared: false } });
    try {
      const error = await client
        .generate({ ...streamBody, sampling_params: { max_tokens: 4 } }, { resume: true })
        .then(drain, (caught: unknown) => caught);
      expect(error).toBeInstanceOf(StreamParseError);
      expect(prompts).toEqual([[1]]);
    } finally {
      await client.close();
      await server.close();
    }
  });

  it('an event carrying 300,000 token ids is a correct result, streamed, resumed or whole: no stack overflow', async () => {
    // The audit: 300k ids in one event overflowed the stack (a spread into push) and was reported as
    // ERR_STREAM_INTERRUPTED, which resume treats as resumable.
    const count = 300_000;
    const ids = Array.from({ length: count }, (_, index) => index % 50_000);
    const idsJson = JSON.stringify(ids);
    const server = await rawServer((request, response) => {
      let text = '';
      request.on('data', (chunk) => {
        text += chunk;
      });
      request.on('end', () => {
        if (request.method !== 'POST') {
          response.writeHead(404).end(); // the /metrics poll
        } else if (JSON.parse(text).stream) {
          response.writeHead(200, sseHead);
          response.end(
            `data: {"request_id":"r","choices":[{"index":0,"token_ids":${idsJson},"finish_reason":"length"}]}\n\ndata: [DONE]\n\n`,
          );
        } else {
          response.writeHead(200, { 'content-type': 'application/json' });
          response.end(`{"request_id":"r","choices":[{"index":0,"token_ids":${idsJson},"finish_reason":"length"}]}`);
        }
      });
    });
    const client = new RemoteInferenceClient({ engines: [server.url], transport: { shared: false } });
    const body = { token_ids: [1], sampling_params: { max_tokens: count } };
    const streamed = async (resume: boolean) => {
      const tokens: number[] = [];
      for await (const chunk of await client.generate({ ...body, stream: true }, { resume })) {
        for (const id of chunk.choices[0]!.token_ids) tokens.push(id);
      }
      return tokens;
    };
    try {
      expect(await streamed(false)).toEqual(ids);
      expect(await streamed(true)).toEqual(ids);
      expect((await client.generate(body)).choices[0]!.token_ids).toEqual(ids);
      expect(client.stats().failed).toBe(0);
    } finally {
      await client.close();
      await server.close();
    }
  });

  it('a whole 2xx body over maxResponseBytes is a typed error', async () => {
    const server = await rawServer((_request, response) => {
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end(`{"pad":"${'x'.repeat(2 * 1024 * 1024)}"}`);
    });
    const client = new RemoteInferenceClient({
      engines: [server.url],
      transport: { shared: false, maxResponseBytes: 1024 * 1024 },
      retry: { maxAttempts: 1 },
    });
    try {
      const error = await client
        .generate({ token_ids: [1], sampling_params: { max_tokens: 1 } })
        .catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(StreamParseError);
      expect((error as Error).message).toMatch(/maxResponseBytes/);
    } finally {
      await client.close();
      await server.close();
    }
  });

  it('a stream the caller does not read stops reading the socket: the server cannot push it unbounded', async () => {
    let written = 0;
    let blocked: () => void = () => {};
    const isBlocked = new Promise<void>((resolve) => {
      blocked = resolve;
    });
    const limit = 256 * 1024 * 1024;
    const server = await rawServer((_request, response) => {
      response.writeHead(200, sseHead);
      const event = Buffer.from(`data: {"choices":[{"index":0,"token_ids":[7],"pad":"${'p'.repeat(1000)}"}]}\n\n`);
      const pump = () => {
        while (written < limit) {
          written += event.length;
          if (!response.write(event)) {
            // Not drained within 500 ms: the client has stopped reading (a verdict, not a timed assertion).
            const timer = setTimeout(blocked, 500);
            response.once('drain', () => {
              clearTimeout(timer);
              pump();
            });
            return;
          }
        }
        blocked();
      };
      pump();
    });
    const client = new RemoteInferenceClient({ engines: [server.url], transport: { shared: false } });
    try {
      const stream = await client.generate(streamBody);
      await isBlocked;
      // 1,024 chunks of ~1 KB are buffered before the socket is paused; kernel buffers hold some MB more.
      expect(written).toBeLessThan(64 * 1024 * 1024);
      stream.abort();
    } finally {
      await client.close();
      await server.close();
    }
  });

  it('a caller who reads slowly is not timed out as idle while the server keeps sending (backpressure is not silence)', async () => {
    const event = 'data: {"choices":[{"index":0,"token_ids":[7]}]}\n\n';
    const server = await rawServer((_request, response) => {
      response.writeHead(200, sseHead);
      response.write(event.repeat(1500)); // more than the stream buffers before it pauses the socket
      let sent = 0;
      // Then one event every 200 ms: the server is never silent for the 1 s idle limit.
      const timer = setInterval(() => {
        if (response.destroyed) return clearInterval(timer);
        response.write(event);
        if (++sent === 10) {
          clearInterval(timer);
          response.end('data: [DONE]\n\n');
        }
      }, 200);
    });
    const client = new RemoteInferenceClient({
      engines: [server.url],
      retry: { maxAttempts: 1 },
      timeouts: { idleMs: 1000 },
      transport: { shared: false },
    });
    try {
      const stream = await client.generate({ ...streamBody, sampling_params: { max_tokens: 5000 } });
      await new Promise((resolve) => setTimeout(resolve, 2500)); // the caller is busy elsewhere
      let chunks = 0;
      // Before, the watchdog ignored the pause: a TimeoutError 'idle' after ~1,333 chunks.
      for await (const _chunk of stream) chunks++;
      expect(chunks).toBe(1510);
    } finally {
      await client.close();
      await server.close();
    }
  });

  it('a stream failed by a bad event in the same chunk as its first leaves no watchdog timer behind', async () => {
    let ending: NodeJS.Timeout | undefined;
    const server = await rawServer((_request, response) => {
      response.writeHead(200, sseHead);
      // One write: a good first event, then an error event (as vLLM reports an error mid-stream).
      response.write('data: {"choices":[{"index":0,"token_ids":[7]}]}\n\ndata: {"error":{"message":"boom"}}\n\n');
      ending = setTimeout(() => response.end(), 50);
    });
    const client = new RemoteInferenceClient({
      engines: [server.url],
      retry: { maxAttempts: 1 },
      timeouts: { idleMs: 600_000 },
      transport: { shared: false },
    });
    const timers = () => process.getActiveResourcesInfo().filter((resource) => resource === 'Timeout').length;
    const before = timers();
    try {
      const error = await client.generate(streamBody).then(drain);
      expect(error).toBeInstanceOf(ServerStreamError);
    } finally {
      clearTimeout(ending); // the server's own timer, in this process too
      await client.close();
      await server.close();
    }
    // Before, the idle watchdog was re-armed on the settled attempt: a 600 s timer holding the process open.
    expect(timers()).toBe(before);
  });
});

describe('hostile servers the audit found handled (kept so by these tests)', () => {
  const one = { token_ids: [1], sampling_params: { max_tokens: 1 } };
  const failure = (promise: Promise<unknown>) =>
    promise.then(
      () => undefined,
      (caught: unknown) => caught,
    );

  it("a redirect is not followed, and the caller's key and headers never reach the server it points to", async () => {
    const elsewhere: IncomingMessage['headers'][] = [];
    const other = await rawServer((request, response) => {
      elsewhere.push(request.headers);
      response.writeHead(200, { 'content-type': 'application/json' }).end('{"request_id":"x","choices":[]}');
    });
    let status = 301;
    const server = await rawServer((request, response) => {
      request.resume();
      if (request.method !== 'POST') return void response.writeHead(404).end(); // the /metrics poll
      response.writeHead(status, { location: `${other.url}${request.url}` }).end();
    });
    const client = new RemoteInferenceClient({
      engines: [server.url],
      apiKey: 'sk-secret',
      headers: { 'x-team': 'rollouts' },
      transport: { shared: false },
    });
    try {
      for (const code of [301, 302, 307, 308]) {
        status = code;
        const whole = await failure(client.generate(one));
        expect(whole).toBeInstanceOf(HttpStatusError);
        expect((whole as HttpStatusError).status).toBe(code);
        const streamed = await failure(client.generate({ ...one, stream: true }));
        expect((streamed as HttpStatusError).status).toBe(code);
      }
      expect(elsewhere).toEqual([]);
    } finally {
      await client.close();
      await server.close();
      await other.close();
    }
  });

  it('response headers over 16 KB are a typed error, whole and streamed, not a hang', async () => {
    const server = await rawServer((request, response) => {
      request.resume();
      response.writeHead(200, { 'content-type': 'application/json', 'x-padding': 'p'.repeat(20 * 1024) });
      response.end('{"request_id":"x","choices":[]}');
    });
    const client = new RemoteInferenceClient({
      engines: [server.url],
      retry: { maxAttempts: 1 },
      transport: { shared: false },
    });
    try {
      for (const body of [one, { ...one, stream: true as const }]) {
        const error = await failure(client.generate(body));
        expect(isInferenceError(error), String(error)).toBe(true);
        expect((error as ConnectionError).systemCode).toBe('UND_ERR_HEADERS_OVERFLOW');
      }
    } finally {
      await client.close();
      await server.close();
    }
  });

  it('a 200 with HTML, or with a body shorter than its Content-Length, is a typed error, whole and streamed', async () => {
    let mode: 'html' | 'short' = 'html';
    const server = await rawServer((request, response) => {
      request.resume();
      if (request.method !== 'POST') return void response.writeHead(404).end(); // the /metrics poll
      if (mode === 'html') {
        response.writeHead(200, { 'content-type': 'text/html' });
        response.end('<html><body>Welcome to nginx!</body></html>\n');
        return;
      }
      // Promises 1,000 bytes, sends 10, closes: the framing is wrong.
      response.writeHead(200, { 'content-type': 'application/json', 'content-length': '1000' });
      response.write('{"request');
      response.socket?.end();
    });
    const client = new RemoteInferenceClient({
      engines: [server.url],
      retry: { maxAttempts: 1 },
      transport: { shared: false },
    });
    const drained = async (promise: Promise<AsyncIterable<unknown>>) => drain(await promise);
    try {
      expect(await failure(client.generate(one))).toBeInstanceOf(StreamParseError);
      expect(await failure(drained(client.generate({ ...one, stream: true })))).toBeInstanceOf(StreamTruncatedError);
      mode = 'short';
      for (const outcome of [
        await failure(client.generate(one)),
        await failure(drained(client.generate({ ...one, stream: true }))),
      ]) {
        expect(isInferenceError(outcome), String(outcome)).toBe(true);
      }
      expect(client.stats().completed).toBe(0);
      expect(client.stats().inFlight).toBe(0);
    } finally {
      await client.close();
      await server.close();
    }
  });

  it('a 300 MB error body: its first 64 KB kept and the rest never read, a typed HttpStatusError, bounded memory', async () => {
    // Streamed, never held by the server: one 64 KB buffer written up to 4,800 times, with backpressure, until the
    // client goes away. The client keeps what an error can carry and ends the request there; it used to read the
    // whole body (an endless one kept the request pending for good).
    const total = 300 * 1024 * 1024;
    const piece = Buffer.alloc(64 * 1024, 0x78);
    piece.write('{"error":{"message":"engine exploded"},"pad":"');
    let written = 0;
    const gc = runInNewContext('gc') as () => void;
    const server = await rawServer((request, response) => {
      request.resume();
      if (request.method !== 'POST') return void response.writeHead(404).end(); // the /metrics poll
      response.writeHead(500, { 'content-type': 'application/json', 'content-length': String(total) });
      let gone = false;
      response.on('close', () => {
        gone = true;
      });
      const pump = () => {
        while (!gone && written < total) {
          written += piece.length;
          if (written >= total) return void response.end(piece);
          if (!response.write(piece)) return void response.once('drain', pump);
        }
      };
      pump();
    });
    const client = new RemoteInferenceClient({
      engines: [server.url],
      retry: { maxAttempts: 1 },
      transport: { shared: false },
    });
    try {
      gc();
      const baseline = process.memoryUsage().arrayBuffers;
      const error = await failure(client.generate(one));
      expect(error).toBeInstanceOf(HttpStatusError);
      expect((error as HttpStatusError).status).toBe(500);
      expect((error as HttpStatusError).body!.length).toBeLessThanOrEqual(4096);
      gc();
      // Keeping the body whole would hold ~300 MB here; 64 KB kept plus socket buffers is a few MB.
      expect(process.memoryUsage().arrayBuffers - baseline).toBeLessThan(64 * 1024 * 1024);
      // What the server got out before the client cut the request: socket buffers past the 64 KB kept, not 300 MB.
      expect(written).toBeLessThan(total / 4);
    } finally {
      await client.close();
      await server.close();
    }
  });
});

describe('lifecycle mistakes and limits (the audit found them handled)', () => {
  it('close() with 1,000 requests in flight rejects every one with ERR_ABORTED and leaves none counted', async () => {
    let received = 0;
    let allIn: () => void = () => {};
    const arrived = new Promise<void>((resolve) => {
      allIn = resolve;
    });
    const server = await rawServer((request) => {
      request.resume();
      if (request.method === 'POST' && ++received === 1000) allIn(); // never answered
    });
    const client = new RemoteInferenceClient({
      engines: [server.url],
      limits: { perEngine: { maxConcurrency: 2000 } },
      transport: { shared: false },
    });
    try {
      const outcomes = Array.from({ length: 1000 }, (_, index) =>
        client.generate({ token_ids: [index], sampling_params: { max_tokens: 1 } }).then(
          () => 'resolved',
          (error: { code?: string }) => error.code,
        ),
      );
      await arrived;
      expect(client.stats().inFlight).toBe(1000);
      await client.close();
      expect(new Set(await Promise.all(outcomes))).toEqual(new Set(['ERR_ABORTED']));
      expect(client.stats().inFlight).toBe(0);
    } finally {
      await client.close();
      await server.close();
    }
  });

  it('after close(), control-plane calls and waitUntilHealthy reject typed and open no connection', async () => {
    const client = new RemoteInferenceClient({ engines: [fake.url], transport: { shared: false } });
    await client.close();
    const before = (await fake.control.stats()).total.requests;
    // Before, they reached the engine through a pool that nothing would close again (the process stayed alive).
    await expect(client.control.health()).rejects.toBeInstanceOf(ClientClosedError);
    await expect(client.control.pause({ mode: 'keep' })).rejects.toBeInstanceOf(ClientClosedError);
    await expect(client.waitUntilHealthy({ timeoutMs: 500 })).rejects.toBeInstanceOf(ClientClosedError);
    expect(client.stats().connections.open).toBe(0);
    expect((await fake.control.stats()).total.requests).toBe(before);
  });

  it('engine URLs are normalised to their origin: case, whitespace, a trailing slash, the default port, duplicates', async () => {
    const port = new URL(fake.url).port;
    const client = new RemoteInferenceClient({
      engines: [` HTTP://127.0.0.1:${port}/ `, `http://127.0.0.1:${port}`, 'http://LOCALHOST:80/'],
      transport: { shared: false },
    });
    try {
      expect(client.stats().engines.map((engine) => engine.endpoint)).toEqual([
        `http://127.0.0.1:${port}`,
        'http://localhost',
      ]);
      client.setEngines([`http://127.0.0.1:${port}/`]);
      const result = await client.generate({ token_ids: [4], sampling_params: { max_tokens: 2, seed: 1 } });
      expect(result.choices[0]!.token_ids).toEqual(expectedTokens([4], 1, 2));
    } finally {
      await client.close();
    }
  });

  it('an onRequestEnd that throws fails nothing: the request resolves and a process warning says so', async () => {
    const warnings: string[] = [];
    const onWarning = (warning: Error) => warnings.push(warning.message);
    process.on('warning', onWarning);
    const client = new RemoteInferenceClient({
      engines: [fake.url],
      transport: { shared: false },
      onRequestEnd: () => {
        throw new Error('hook bug');
      },
    });
    try {
      const result = await client.generate({ token_ids: [5], sampling_params: { max_tokens: 2, seed: 1 } });
      expect(result.choices[0]!.token_ids).toEqual(expectedTokens([5], 1, 2));
      const stream = await client.generate({
        token_ids: [5],
        sampling_params: { max_tokens: 2, seed: 1 },
        stream: true,
      });
      expect(await drain(stream)).toBeUndefined();
      await new Promise((resolve) => setImmediate(resolve)); // warnings are emitted on the next tick
      expect(warnings.filter((message) => message.includes('onRequestEnd threw: hook bug'))).toHaveLength(2);
      expect(client.stats().failed).toBe(0);
    } finally {
      process.off('warning', onWarning);
      await client.close();
    }
  });
});

describe('caller mistakes are typed errors that never reach an engine', () => {
  it('CRLF in a sessionId or a header, or a bad header name: InvalidOptionsError, the engine stays healthy', async () => {
    const client = new RemoteInferenceClient({ engines: [fake.url], transport: { shared: false } });
    const before = (await fake.control.stats()).total.requests;
    const calls = [
      { sessionId: 'a\r\nx-injected: 1' },
      { headers: { 'x-ok': 'value\r\nx-injected: 1' } },
      { headers: { 'bad header': 'v' } },
      { sessionId: 'nul\u0000' },
      // Framing is the transport's: a wrong content-length used to fail as ERR_CONNECTION, three put the engine in
      // cooldown.
      { headers: { 'content-length': '1' } },
      { headers: { 'Transfer-Encoding': 'chunked' } },
      { headers: { connection: 'close' } },
    ];
    for (const options of calls) {
      for (let repeat = 0; repeat < 3; repeat++) {
        const error = await client
          .generate({ token_ids: [1], sampling_params: { max_tokens: 1 } }, options)
          .catch((caught: unknown) => caught);
        expect(error).toBeInstanceOf(InvalidOptionsError);
      }
    }
    expect((await fake.control.stats()).total.requests).toBe(before);
    expect(client.stats().engines[0]!.state).toBe('healthy');
    expect(client.stats().requests).toBe(0);
    const ok = await client.generate({ token_ids: [1], sampling_params: { max_tokens: 2, seed: 1 } });
    expect(ok.choices[0]!.token_ids).toEqual(expectedTokens([1], 1, 2));
    await client.close();
    expect(() => new RemoteInferenceClient({ engines: [fake.url], apiKey: 'k\r\nx: 1' })).toThrow(InvalidOptionsError);
    expect(() => new RemoteInferenceClient({ engines: [fake.url], headers: { 'x-a': 'b\nc' } })).toThrow(
      InvalidOptionsError,
    );
  });

  it('signal: {} and a null body are rejected promises with InvalidOptionsError from every method, never a throw', async () => {
    const client = new RemoteInferenceClient({ engines: [fake.url], transport: { shared: false } });
    const before = (await fake.control.stats()).total.requests;
    // Each call must return a promise that rejects: a caller's `.catch()` or `await` in a try must see the mistake.
    const calls: [string, () => Promise<unknown>][] = [
      ['generate, signal {}', () => client.generate({ token_ids: [1] }, { signal: {} as AbortSignal })],
      [
        'completions, signal {}',
        () => client.completions.create({ prompt: 'x', max_tokens: 1 }, { signal: {} as AbortSignal }),
      ],
      ['generate, null body', () => client.generate(null as never)],
      ['completions, null body', () => client.completions.create(null as never)],
      ['chat completions, null body', () => client.chat.completions.create(null as never)],
      ['tokenize, null body', () => client.tokenize(null as never)],
      ['detokenize, null body', () => client.detokenize(null as never)],
    ];
    try {
      for (const [name, call] of calls) {
        let promise: Promise<unknown> | undefined;
        expect(() => {
          promise = call();
        }, `${name} threw synchronously`).not.toThrow();
        await expect(promise, name).rejects.toBeInstanceOf(InvalidOptionsError);
      }
      expect((await fake.control.stats()).total.requests).toBe(before);
      expect(client.stats().requests).toBe(0);
      expect(client.stats().engines[0]!.state).toBe('healthy');
    } finally {
      await client.close();
    }
  });

  it('timeoutMs: Infinity and values past 2^31-1 ms are deadlines, not 1 ms timeouts; -1, 0 and NaN are rejected', async () => {
    const client = new RemoteInferenceClient({ engines: [fake.url], transport: { shared: false } });
    try {
      for (const timeoutMs of [Number.POSITIVE_INFINITY, 3e9, 2 ** 31]) {
        const result = await client.generate(
          { token_ids: [2], sampling_params: { max_tokens: 3, seed: 1 } },
          { timeoutMs },
        );
        expect(result.choices[0]!.token_ids).toEqual(expectedTokens([2], 1, 3));
      }
      // Waiting in the admission queue too (before, its timer overflowed: TimeoutError 'queue' after 1 ms).
      const one = new RemoteInferenceClient({
        engines: [fake.url],
        limits: { perEngine: { maxConcurrency: 1 } },
        transport: { shared: false },
      });
      const holder = one.generate({ token_ids: [4], sampling_params: { max_tokens: 200, seed: 1 } });
      const queued = await one.generate(
        { token_ids: [5], sampling_params: { max_tokens: 2, seed: 1 } },
        { timeoutMs: 2 ** 31 },
      );
      expect(queued.choices[0]!.token_ids).toEqual(expectedTokens([5], 1, 2));
      await holder;
      await one.close();
      for (const timeoutMs of [-1, 0, Number.NaN]) {
        const error = await client
          .generate({ token_ids: [2], sampling_params: { max_tokens: 1 } }, { timeoutMs })
          .catch((caught: unknown) => caught);
        expect(error).toBeInstanceOf(InvalidOptionsError);
      }
      const totalClient = new RemoteInferenceClient({
        engines: [fake.url],
        timeouts: { totalMs: 2 ** 31 },
        transport: { shared: false },
      });
      expect((await totalClient.generate({ token_ids: [3], sampling_params: { max_tokens: 1 } })).choices).toHaveLength(
        1,
      );
      await totalClient.close();
      // The control plane's deadlines too: Infinity and 2^31 answer; -1, 0 and NaN are a typed rejection.
      for (const timeoutMs of [Number.POSITIVE_INFINITY, 2 ** 31]) {
        const [result] = await client.control.updateWeights({ update_info: { version: 1 } }, { timeoutMs });
        expect(result!.ok).toBe(true);
        expect((await client.control.health(timeoutMs))[0]!.ok).toBe(true);
      }
      for (const timeoutMs of [-1, 0, Number.NaN]) {
        await expect(client.control.health(timeoutMs)).rejects.toBeInstanceOf(InvalidOptionsError);
      }
    } finally {
      await client.close();
    }
  });

  it('a circular or BigInt body is rejected before it is counted; no request stays in flight', async () => {
    const client = new RemoteInferenceClient({
      engines: [fake.url],
      timeouts: { totalMs: 600_000 },
      transport: { shared: false },
    });
    const circular: Record<string, unknown> = { token_ids: [1], sampling_params: { max_tokens: 1 } };
    circular.self = circular;
    const bigint = { token_ids: [1], sampling_params: { max_tokens: 1, seed: 10n } };
    for (const body of [circular, bigint]) {
      const error = await client.generate(body as never).catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(InvalidOptionsError);
      const streamed = await client
        .generate({ ...(body as object), stream: true } as never)
        .catch((caught: unknown) => caught);
      expect(streamed).toBeInstanceOf(InvalidOptionsError);
    }
    expect(client.stats().requests).toBe(0);
    expect(client.stats().inFlight).toBe(0);
    await client.close();
  });
});

describe('deadlines in every phase', () => {
  const listeners: ChildProcess[] = [];
  afterAll(() => {
    for (const listener of listeners) listener.kill('SIGKILL');
  });

  /**
   * A listener that never accepts, its backlog filled by `fillers` requests of `client`: further SYNs are dropped by
   * the kernel, so the next connect stays pending (Node's own servers always accept, hence Python's socket module).
   */
  async function neverAccepting(): Promise<string> {
    const listener = spawn(
      '/usr/bin/python3',
      [
        '-c',
        'import socket,sys,time\ns=socket.socket()\ns.bind(("127.0.0.1",0))\ns.listen(0)\nprint(s.getsockname()[1],flush=True)\ntime.sleep(300)',
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    listeners.push(listener);
    const [line] = (await once(listener.stdout!, 'data')) as [Buffer];
    return `http://127.0.0.1:${Number(line.toString().trim())}`;
  }

  /** Fills the accept queue: these connects complete in the kernel or hang; neither is accepted. */
  const fill = (client: RemoteInferenceClient) =>
    Array.from({ length: 4 }, () =>
      client.generate({ token_ids: [1], sampling_params: { max_tokens: 1 } }).catch((caught: unknown) => caught),
    );

  it('an abort while the TCP connect is pending (accept queue full) ends the request at once, typed', async () => {
    const client = new RemoteInferenceClient({
      engines: [await neverAccepting()],
      timeouts: { connectMs: 120_000 },
      retry: { maxAttempts: 1 },
      transport: { shared: false },
    });
    try {
      const fillers = fill(client);
      const controller = new AbortController();
      const pending = client
        .generate({ token_ids: [1], sampling_params: { max_tokens: 1 } }, { signal: controller.signal })
        .catch((caught: unknown) => caught);
      await new Promise((resolve) => setTimeout(resolve, 200));
      controller.abort();
      // With the abort lost, this would end only at the 120 s connect timeout (and fail the test's 60 s limit).
      expect(await pending).toBeInstanceOf(AbortError);
      await client.close();
      for (const filler of await Promise.all(fillers)) expect(filler).toBeInstanceOf(Error);
    } finally {
      await client.close();
    }
  });

  it('timeoutMs while the TCP connect is pending ends the request at its deadline, typed; so does close()', async () => {
    const client = new RemoteInferenceClient({
      engines: [await neverAccepting()],
      timeouts: { connectMs: 120_000 },
      retry: { maxAttempts: 1 },
      transport: { shared: false },
    });
    try {
      const fillers = fill(client);
      // With the deadline lost, this would end only at the 120 s connect timeout (and fail the test's 60 s limit).
      const error = await client
        .generate({ token_ids: [1], sampling_params: { max_tokens: 1 } }, { timeoutMs: 300 })
        .catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(TimeoutError);
      expect((error as TimeoutError).phase).toBe('total');
      await client.close();
      for (const filler of await Promise.all(fillers)) expect(filler).toBeInstanceOf(AbortError);
    } finally {
      await client.close();
    }
  });

  it('a connect ended by a deadline or an abort gives its place under maxConnecting back', async () => {
    const url = await neverAccepting();
    // Raw sockets fill the accept queue, so the client's own connects are its pending ones only.
    const { connect } = await import('node:net');
    const port = Number(new URL(url).port);
    const raw = Array.from({ length: 4 }, () => connect(port, '127.0.0.1').on('error', () => {}));
    const client = new RemoteInferenceClient({
      engines: [url],
      timeouts: { connectMs: 120_000 },
      retry: { maxAttempts: 1 },
      transport: { shared: false, maxConnecting: 2 },
    });
    try {
      const controller = new AbortController();
      const results = Promise.all([
        client
          .generate({ token_ids: [1], sampling_params: { max_tokens: 1 } }, { timeoutMs: 300 })
          .catch((caught: unknown) => caught),
        client
          .generate({ token_ids: [1], sampling_params: { max_tokens: 1 } }, { signal: controller.signal })
          .catch((caught: unknown) => caught),
      ]);
      await new Promise((resolve) => setTimeout(resolve, 100));
      expect(client.stats().engines[0]!.connections.connecting).toBe(2);
      controller.abort();
      const [timedOut, aborted] = await results;
      expect(timedOut).toBeInstanceOf(TimeoutError);
      expect(aborted).toBeInstanceOf(AbortError);
      // Before, undici emitted nothing for a client destroyed mid-connect and both places stayed taken: with
      // maxConnecting of them gone, the engine never got another connection.
      expect(client.stats().engines[0]!.connections.connecting).toBe(0);
    } finally {
      await client.close();
      for (const socket of raw) socket.destroy();
    }
  });

  it('with connectMs: 0 (no connect timeout), an abort and a timeoutMs still end a pending connect, typed', async () => {
    const client = new RemoteInferenceClient({
      engines: [await neverAccepting()],
      timeouts: { connectMs: 0 },
      retry: { maxAttempts: 1 },
      transport: { shared: false },
    });
    try {
      const fillers = fill(client);
      // The audit: with connectMs: 0 such a request was still pending after 30 s.
      const timedOut = await client
        .generate({ token_ids: [1], sampling_params: { max_tokens: 1 } }, { timeoutMs: 300 })
        .catch((caught: unknown) => caught);
      expect(timedOut).toBeInstanceOf(TimeoutError);
      const controller = new AbortController();
      const aborted = client
        .generate({ token_ids: [1], sampling_params: { max_tokens: 1 } }, { signal: controller.signal })
        .catch((caught: unknown) => caught);
      await new Promise((resolve) => setTimeout(resolve, 200));
      controller.abort();
      expect(await aborted).toBeInstanceOf(AbortError);
      await client.close();
      for (const filler of await Promise.all(fillers)) expect(filler).toBeInstanceOf(AbortError);
    } finally {
      await client.close();
    }
  });
});

describe('constructor mistakes are typed errors naming the field', () => {
  it('null sections, NaN and negative health and keep-alive settings, and engine URLs carrying credentials or a query', () => {
    const engines = ['http://127.0.0.1:1'];
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ limits: null }, /`limits` to be an object/],
      [{ routing: null }, /`routing` to be round-robin/],
      [{ health: null }, /`health` to be an object/],
      [{ health: { failureThreshold: Number.NaN } }, /`health.failureThreshold`/],
      [{ health: { cooldownMs: -1 } }, /`health.cooldownMs`/],
      [{ health: { activeCheckIntervalMs: 1e12 } }, /`health.activeCheckIntervalMs`/],
      [{ engines: ['http://user:secret@127.0.0.1:8000'] }, /without credentials[\s\S]*<credentials>@/],
      [{ engines: ['http://127.0.0.1:8000/?api_key=abc'] }, /without credentials, query[\s\S]*\?<query>/],
      // Passed to undici's `new Client` unchecked, they failed every request as ERR_CONNECTION and put the engine
      // in cooldown.
      [
        { transport: { keepAliveTimeoutThresholdMs: Number.NaN } },
        /`transport.keepAliveTimeoutThresholdMs` to be a number of ms >= 0, got `NaN`/,
      ],
      [{ transport: { keepAliveTimeoutThresholdMs: -1 } }, /`transport.keepAliveTimeoutThresholdMs`.*got `-1`/],
      [
        { transport: { keepAliveMaxTimeoutMs: -5 } },
        /`transport.keepAliveMaxTimeoutMs` to be a number of ms >= 1, got `-5`/,
      ],
      [{ transport: { keepAliveMaxTimeoutMs: 'x' } }, /`transport.keepAliveMaxTimeoutMs`.*got `"x"`/],
      [{ transport: { keepAliveMaxTimeoutMs: Number.POSITIVE_INFINITY } }, /got `Infinity`/],
    ];
    for (const [options, message] of cases) {
      let error: unknown;
      try {
        new RemoteInferenceClient({ engines, transport: { shared: false }, ...options } as never);
      } catch (caught) {
        error = caught;
      }
      expect(error, JSON.stringify(options)).toBeInstanceOf(InvalidOptionsError);
      expect((error as Error).message).toMatch(message);
      // The secret itself is never echoed.
      expect((error as Error).message).not.toMatch(/secret|abc/);
    }
  });
});
