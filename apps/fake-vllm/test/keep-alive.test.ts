import { connect, type Socket } from 'node:net';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { type FakeVllm, startFakeVllm } from '../src/index.js';

let server: FakeVllm;
beforeAll(async () => {
  server = await startFakeVllm({ keepAliveTimeoutMs: 300, ttftMs: 1, itlMs: 1 });
});
afterAll(() => server.close());

function rawRequest(socket: Socket): Promise<string> {
  return new Promise((resolve) => {
    let text = '';
    const onData = (chunk: Buffer) => {
      text += chunk.toString();
      if (text.includes('\r\n\r\n') && text.endsWith('}')) {
        socket.off('data', onData);
        resolve(text);
      }
    };
    socket.on('data', onData);
    socket.write('GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n');
  });
}

it('closes an idle keep-alive connection after keepAliveTimeoutMs without a Keep-Alive hint, like uvicorn', async () => {
  const port = Number(new URL(server.url).port);
  const socket = connect(port, '127.0.0.1');
  await new Promise((resolve) => socket.once('connect', resolve));
  const first = await rawRequest(socket);
  expect(first).toMatch(/^HTTP\/1\.1 200/);
  expect(first.toLowerCase()).not.toContain('keep-alive: timeout');
  // Reused: the same connection serves a second request.
  expect(await rawRequest(socket)).toMatch(/^HTTP\/1\.1 200/);
  const open = (await server.control.stats()).engines[0]!;
  expect(open.connectionsOpen).toBe(1);
  // Then idle: the server closes it on its own (we see its FIN), and its own counts agree.
  await new Promise((resolve) => socket.once('end', resolve));
  socket.destroy();
  let closed = (await server.control.stats()).engines[0]!;
  for (let polls = 0; closed.connectionsOpen !== 0 && polls < 100; polls++) {
    await new Promise((resolve) => setTimeout(resolve, 20));
    closed = (await server.control.stats()).engines[0]!;
  }
  expect(closed.connectionsTotal - open.connectionsTotal).toBe(0);
  expect(closed.connectionsOpen).toBe(0);
});

it('sends a Keep-Alive hint when asked', async () => {
  const hinted = await startFakeVllm({ keepAliveTimeoutMs: 4000, keepAliveHint: true, control: false });
  const response = await fetch(`${hinted.url}/v1/models`);
  expect(response.headers.get('keep-alive')).toBe('timeout=4');
  await response.text();
  await hinted.close();
});

it('never closes a connection whose response is still in its send buffer: a reader that is behind gets every byte', async () => {
  // uvicorn arms its keep-alive timer once a response is complete, and its send() waits for the transport to drain
  // below the high-water mark first; an idle close is `transport.close()`, which flushes what is buffered
  // (uvicorn/protocols/http/httptools_impl.py, flow_control.py). A client that reads a big stream late must still
  // get all of it, however long after the engine finished.
  const port = Number(new URL(server.url).port);
  const socket = connect(port, '127.0.0.1');
  await new Promise((resolve) => socket.once('connect', resolve));
  socket.pause(); // read nothing until the engine is done and keep-alive (300 ms) has passed several times
  const body = JSON.stringify({
    prompt: [1, 2, 3],
    max_tokens: 400,
    n: 16,
    temperature: 1,
    logprobs: 20,
    stream: true,
    seed: 5,
  });
  socket.write(
    `POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
  );
  for (let polls = 0; polls < 500; polls++) {
    const stats = (await server.control.stats()).engines[0]!;
    if (stats.completed > 0 && stats.running === 0) break;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  await new Promise((resolve) => setTimeout(resolve, 1500)); // 5x the keep-alive, the response still unread
  const chunks: Buffer[] = [];
  const ended = new Promise<string>((resolve) => {
    socket.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      if (Buffer.concat(chunks).includes('data: [DONE]')) resolve('done');
    });
    socket.on('close', () => resolve('closed'));
  });
  socket.resume();
  expect(await ended).toBe('done');
  socket.destroy();
});
