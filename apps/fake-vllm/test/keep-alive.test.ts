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
  // Reused before the timeout: still open.
  await new Promise((resolve) => setTimeout(resolve, 150));
  expect(await rawRequest(socket)).toMatch(/^HTTP\/1\.1 200/);
  const idleSince = performance.now();
  await new Promise((resolve) => socket.once('end', resolve));
  const idleMs = performance.now() - idleSince;
  // The server closed it (we saw its FIN), and not before the idle timeout.
  expect(idleMs).toBeGreaterThanOrEqual(290);
  socket.destroy();
});

it('sends a Keep-Alive hint when asked', async () => {
  const hinted = await startFakeVllm({ keepAliveTimeoutMs: 4000, keepAliveHint: true, control: false });
  const response = await fetch(`${hinted.url}/v1/models`);
  expect(response.headers.get('keep-alive')).toBe('timeout=4');
  await response.text();
  await hinted.close();
});
