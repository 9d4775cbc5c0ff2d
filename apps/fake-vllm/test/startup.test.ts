import { connect } from 'node:net';
import { expect, it } from 'vitest';
import { startFakeVllm } from '../src/index.js';

// vLLM binds its port but starts uvicorn only once the engine is built (openai/api_server.py build_async_engine_client
// before serve_http): a client that connects early is refused, it is not answered 503 by a half-started server.
function connectOutcome(url: string): Promise<'accepted' | string> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = connect(Number(port), hostname);
    socket.once('connect', () => {
      socket.destroy();
      resolve('accepted');
    });
    socket.once('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message));
  });
}

it('refuses connections during startupMs, then serves on the same port', async () => {
  const fake = await startFakeVllm({ startupMs: 1500, control: false, ttftMs: 1, itlMs: 1 });
  try {
    expect(await connectOutcome(fake.url)).toBe('ECONNREFUSED');
    let outcome = 'ECONNREFUSED';
    for (let attempt = 0; outcome !== 'accepted'; attempt++) {
      if (attempt > 500) throw new Error(`never accepted: ${outcome}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
      outcome = await connectOutcome(fake.url);
      expect(['accepted', 'ECONNREFUSED']).toContain(outcome);
    }
    const response = await fetch(`${fake.url}/health`);
    expect([response.status, await response.text()]).toEqual([200, '']);
  } finally {
    await fake.close();
  }
});

it('rejects a startupMs that is not a number of milliseconds, naming it', async () => {
  await expect(startFakeVllm({ startupMs: -1 })).rejects.toThrow(/`startupMs`/);
});
