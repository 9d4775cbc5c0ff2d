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
