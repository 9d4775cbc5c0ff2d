import { expect, it } from 'vitest';
import { startFakeVllm } from '../src/index.js';

it('starts 50 engines concurrently, 20 times, with no port race', async () => {
  for (let round = 0; round < 20; round++) {
    const servers = await Promise.all(Array.from({ length: 50 }, () => startFakeVllm({ control: false })));
    const ports = new Set(servers.map((server) => new URL(server.url).port));
    expect(ports.size).toBe(50);
    const health = await Promise.all(
      servers.map((server) => fetch(`${server.url}/health`).then((response) => response.status)),
    );
    expect(health.every((status) => status === 200)).toBe(true);
    await Promise.all(servers.map((server) => server.close()));
  }
});
