import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { type FakeVllm, startFakeVllm } from 'fake-vllm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  AbortError,
  InvalidOptionsError,
  RemoteInferenceClient,
  ServerStreamError,
  StreamParseError,
} from '../src/index.js';
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
  let listener: ChildProcess | undefined;
  afterAll(() => {
    listener?.kill('SIGKILL');
  });

  it('an abort while the TCP connect is pending (accept queue full) ends the request at once, typed', async () => {
    // A listener that never accepts, its backlog filled by one connection: further SYNs are dropped by the kernel,
    // so a connect stays pending (Node's own servers always accept, hence Python's socket module).
    listener = spawn(
      '/usr/bin/python3',
      [
        '-c',
        'import socket,sys,time\ns=socket.socket()\ns.bind(("127.0.0.1",0))\ns.listen(0)\nprint(s.getsockname()[1],flush=True)\ntime.sleep(300)',
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    const [line] = (await once(listener.stdout!, 'data')) as [Buffer];
    const url = `http://127.0.0.1:${Number(line.toString().trim())}`;
    const client = new RemoteInferenceClient({
      engines: [url],
      timeouts: { connectMs: 120_000 },
      retry: { maxAttempts: 1 },
      transport: { shared: false },
    });
    try {
      // Fill the accept queue: these connects complete in the kernel or hang; neither is accepted.
      const fillers = Array.from({ length: 4 }, () =>
        client.generate({ token_ids: [1], sampling_params: { max_tokens: 1 } }).catch((caught: unknown) => caught),
      );
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
