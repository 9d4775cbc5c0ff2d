import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { type AddressInfo, createServer as createTcpServer, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { ConnectionError, HttpStatusError, RemoteInferenceClient } from '../src/index.js';
import { eventually } from './helpers.js';

// HTTP edges a review of the transport found mishandled (2026-12-06): informational responses, a server that resets
// what it read, an endless error body, source addresses after idle closes, header names in two cases. Each server
// here is a real one on loopback.

const closers: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  await Promise.all(closers.splice(0).map((close) => close()));
});

async function httpServer(respond: (request: IncomingMessage, response: ServerResponse) => void, keepAliveMs = 5000) {
  const server: Server = createServer(respond);
  server.keepAliveTimeout = keepAliveMs;
  server.listen(0, '0.0.0.0');
  await once(server, 'listening');
  closers.push(() => {
    server.closeAllConnections();
    return new Promise((resolve) => server.close(resolve));
  });
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

function client(url: string, extra: Record<string, unknown> = {}) {
  const made = new RemoteInferenceClient({ engines: [url], transport: { shared: false }, ...extra });
  closers.push(() => made.close());
  return made;
}

const generated = (tokens: number[]) =>
  JSON.stringify({ request_id: 'r', choices: [{ index: 0, token_ids: tokens, finish_reason: 'length' }] });
const body = { token_ids: [1], sampling_params: { max_tokens: 2 } };

describe('informational responses', () => {
  it("a 102 and a 103 before a stream's 200 are skipped: every event reaches the caller", async () => {
    const url = await httpServer((request, response) => {
      request.resume();
      response.writeProcessing();
      response.writeEarlyHints({ link: '</style.css>; rel=preload' });
      response.writeHead(200, { 'content-type': 'text/event-stream' });
      for (const token of [5, 6]) {
        response.write(`data: ${JSON.stringify({ request_id: 'r', choices: [{ index: 0, token_ids: [token] }] })}\n\n`);
      }
      response.end('data: [DONE]\n\n');
    });
    const stream = await client(url).generate({ ...body, stream: true });
    const tokens: number[] = [];
    for await (const chunk of stream) tokens.push(...chunk.choices[0]!.token_ids);
    // It used to take the 103 for the final status: the 200's body went to an error buffer, and the stream ended
    // as truncated (or timed out) with no event.
    expect(tokens).toEqual([5, 6]);
  });

  it('an unsolicited 100 Continue is a typed error, sent once: not a stale socket re-sent, not retried', async () => {
    let received = 0;
    const url = await httpServer((request, response) => {
      received++;
      request.resume();
      response.writeContinue(); // nobody sent Expect: 100-continue; undici refuses it ("bad response")
      response.end(generated([7, 8]));
    });
    const made = client(url);
    await made.generate(body).catch(() => undefined); // a connection to reuse for the next one
    received = 0;
    const error = await made.generate(body).then(
      () => undefined,
      (caught: unknown) => caught,
    );
    expect(error).toBeInstanceOf(ConnectionError);
    expect((error as ConnectionError).retryable).toBe(false);
    expect((error as ConnectionError).message).toMatch(/unsolicited 100 Continue/);
    // The server did the whole generation 7 times per request (3 stale re-sends, then 3 retries).
    expect(received).toBe(1);
    expect(made.stats().staleRetries).toBe(0);
  });
});

describe('stale-socket re-sends', () => {
  it('a reused socket reset before the response is re-sent once, on a new connection: not along every idle socket', async () => {
    // Four connections are opened and left idle; then the server reads each request whole and resets it.
    let resetting = false;
    let posts = 0;
    const sockets = new Set<Socket>();
    const server = createTcpServer((socket) => {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      let buffered = '';
      socket.on('data', (data) => {
        buffered += data.toString('latin1');
        for (;;) {
          const headEnd = buffered.indexOf('\r\n\r\n');
          if (headEnd < 0) return;
          const length = Number(/content-length: *(\d+)/i.exec(buffered.slice(0, headEnd))?.[1] ?? 0);
          if (buffered.length < headEnd + 4 + length) return;
          buffered = buffered.slice(headEnd + 4 + length);
          posts++;
          if (resetting) {
            socket.resetAndDestroy();
            return;
          }
          const answer = generated([7, 8]);
          socket.write(
            `HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: ${answer.length}\r\n\r\n${answer}`,
          );
        }
      });
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    closers.push(() => {
      for (const socket of sockets) socket.destroy();
      return new Promise((resolve) => server.close(resolve));
    });
    const made = client(`http://127.0.0.1:${(server.address() as AddressInfo).port}`, { retry: { maxAttempts: 1 } });
    await Promise.all([1, 2, 3, 4].map(() => made.generate(body)));
    resetting = true;
    posts = 0;
    await expect(made.generate(body)).rejects.toMatchObject({ code: 'ERR_RETRIES_EXHAUSTED' });
    // Before: 4 sends (one per idle socket) for one attempt of maxAttempts 1.
    expect(posts).toBe(2);
    expect(made.stats().staleRetries).toBe(1);
  });
});

describe('error bodies', () => {
  it('an endless error body ends the request with its status and the first 64 KB, instead of reading forever', async () => {
    let timer: NodeJS.Timeout | undefined;
    const url = await httpServer((request, response) => {
      request.resume();
      response.writeHead(500, { 'content-type': 'text/plain' });
      const chunk = Buffer.alloc(16 * 1024, 'x');
      timer = setInterval(() => response.write(chunk), 5);
      response.on('close', () => clearInterval(timer));
    });
    closers.push(async () => clearInterval(timer));
    const error = await client(url, { retry: { maxAttempts: 1 } })
      .generate(body)
      .then(
        () => undefined,
        (caught: unknown) => caught,
      );
    // It used to stay pending (headers had stopped the ttfb deadline; the trickle kept the idle one from firing).
    const status = ((error as { errors?: unknown[] }).errors?.[0] ?? error) as HttpStatusError;
    expect(status).toBeInstanceOf(HttpStatusError);
    expect(status.status).toBe(500);
  });
});

describe('source addresses', () => {
  it('new connections keep the round robin over sourceIps after idle sockets closed', async () => {
    const from: string[] = [];
    const url = await httpServer((request, response) => {
      from.push(request.socket.remoteAddress!);
      request.resume();
      response.end(generated([7, 8]));
    }, 30);
    // A fixed cap: no /metrics polls, whose connections would take turns in the round robin too.
    const made = client(url, { sourceIps: ['127.0.0.2', '127.0.0.3'], limits: { perEngine: { adaptive: false } } });
    for (let index = 0; index < 6; index++) {
      await made.generate(body);
      // The server closes the idle socket after 30 ms; the pool keeps its Client as a spare.
      await eventually(() => made.stats().engines[0]!.connections.idle === 0);
    }
    // Each new connection reused the Client of the last closed one, with its address: all 6 came from one.
    expect(from.filter((address) => address === '127.0.0.2')).toHaveLength(3);
    expect(from.filter((address) => address === '127.0.0.3')).toHaveLength(3);
    // One connection open at a time: the Clients kept (open and spare) stay within that, a spare of the other
    // address retired for each new one (they used to pile up, one per address).
    const { open, spare } = made.stats().engines[0]!.connections;
    expect(open + spare).toBeLessThanOrEqual(1);
  });
});

describe('header names', () => {
  it("a caller's Content-Type replaces the client's content-type: one header, the caller's value", async () => {
    let seen: string[] = [];
    const url = await httpServer((request, response) => {
      seen = [];
      for (let index = 0; index < request.rawHeaders.length; index += 2) {
        if (request.rawHeaders[index]!.toLowerCase() === 'content-type') seen.push(request.rawHeaders[index + 1]!);
      }
      request.resume();
      response.end(generated([7, 8]));
    });
    await client(url).generate(body, { headers: { 'Content-Type': 'application/json; charset=utf-8' } });
    expect(seen).toEqual(['application/json; charset=utf-8']);
  });
});
