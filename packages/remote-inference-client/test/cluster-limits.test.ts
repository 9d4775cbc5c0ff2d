import { type ChildProcess, fork, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { skipReason } from '@rig/test-support';
import { type FakeVllm, startFakeVllm } from 'fake-vllm';
import { Redis as IORedis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RemoteInferenceClient } from '../src/index.js';
import { serverExcessOverRate } from './helpers.js';

async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** A real redis-server on a free loopback port, no persistence. */
async function startRedis(): Promise<{ url: string; child: ChildProcess }> {
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    const child = spawn(
      'redis-server',
      ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
      { stdio: 'ignore' },
    );
    const url = `redis://127.0.0.1:${port}`;
    const probe = new IORedis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    probe.on('error', () => {}); // refused until the server is up: expected while polling
    for (let tries = 0; tries < 50; tries++) {
      try {
        await probe.connect();
        await probe.ping();
        probe.disconnect();
        return { url, child };
      } catch {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
    probe.disconnect();
    child.kill('SIGKILL');
    if (attempt >= 2) throw new Error('redis-server did not start');
  }
}

const skipped = skipReason('remote-inference-client cluster-limits.test.ts', ['redis-server']);

describe.skipIf(skipped !== undefined)('cluster-wide limits on a real redis-server', () => {
  let fake: FakeVllm;
  beforeAll(async () => {
    fake = await startFakeVllm({ engines: 2, processes: 1, ttftMs: 1, itlMs: 1, jitter: 0 });
  });
  afterAll(() => fake.close());

  it('4 processes sharing a budget of R never run ahead of R together, by the server count', async () => {
    const redis = await startRedis();
    try {
      const rate = 400;
      const durationMs = 4000;
      const startAt = Date.now() + 1500;
      const worker = fileURLToPath(new URL('./fixtures/qps-worker.mjs', import.meta.url));
      const workers = Promise.all(
        Array.from({ length: 4 }, async () => {
          const child = fork(worker, [], {
            stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
            env: {
              ...process.env,
              ENGINES: fake.engines.map((engine) => engine.url).join(','),
              REDIS_URL: redis.url,
              LIMIT_ID: 'shared-test',
              RATE: String(rate),
              START_AT: String(startAt),
              DURATION_MS: String(durationMs),
            },
          });
          const [line] = (await once(createInterface({ input: child.stdout! }), 'line')) as [string];
          return JSON.parse(line) as { completed: number; admittedInWindow: number; errors: Record<string, number> };
        }),
      );
      // The bound is on what fake-vllm received (its own count), sampled while the workers run: never more than
      // the shared budget x elapsed time + one 50 ms lease per process. Four unshared budgets would run ~4x ahead.
      // How close the processes come to the budget is a throughput figure: bench/limits-bench.mjs prints it.
      const {
        result: outputs,
        maxExcess,
        received,
      } = await serverExcessOverRate(() => fake.control.stats(), rate, startAt, workers);
      const completed = outputs.reduce((sum, output) => sum + output.completed, 0);
      console.log(
        `cluster QPS: 4 processes, budget ${rate}/s for ${durationMs} ms: fake-vllm received ${received}, at most ${maxExcess.toFixed(0)} ahead of the budget; per process ${outputs.map((output) => output.completed).join(', ')}`,
      );
      expect(outputs.every((output) => Object.keys(output.errors).length === 0)).toBe(true);
      expect(outputs.every((output) => output.completed > 0)).toBe(true);
      expect(received).toBe(completed);
      expect(maxExcess).toBeLessThanOrEqual(4 * rate * 0.05 + 10);
    } finally {
      redis.child.kill('SIGKILL');
    }
  });

  it('the Redis URL is read whole: the database in its path holds the limiter state, db 0 stays empty', async () => {
    const redis = await startRedis();
    const client = new RemoteInferenceClient({
      engines: fake.engines.map((engine) => engine.url),
      limits: {
        maxQps: 500,
        maxConcurrency: 8,
        redis: { url: `${redis.url}/5`, id: 'db-test', onUnavailable: 'fail-closed' },
      },
      transport: { shared: false },
    });
    const probe = new IORedis(redis.url, { lazyConnect: true });
    try {
      await Promise.all(
        Array.from({ length: 20 }, (_, index) =>
          client.generate({ token_ids: [index + 1], sampling_params: { max_tokens: 1 } }),
        ),
      );
      await probe.connect();
      expect(await probe.keys('*')).toEqual([]);
      await probe.select(5);
      const keys = await probe.keys('*');
      expect(keys.some((key) => key.includes('remote-inference-client:db-test'))).toBe(true);
    } finally {
      probe.disconnect();
      await client.close();
      redis.child.kill('SIGKILL');
    }
  });

  it('Redis killed mid-run: fail-closed rejects with a typed error, fail-open carries on locally', async () => {
    const redis = await startRedis();
    const engines = fake.engines.map((engine) => engine.url);
    const closed = new RemoteInferenceClient({
      engines,
      limits: { maxQps: 1000, redis: { url: redis.url, id: 'kill-closed', onUnavailable: 'fail-closed' } },
      transport: { shared: false },
    });
    const open = new RemoteInferenceClient({
      engines,
      limits: { maxQps: 1000, redis: { url: redis.url, id: 'kill-open', onUnavailable: 'fail-open' } },
      transport: { shared: false },
    });
    try {
      const one = (client: RemoteInferenceClient) =>
        client.generate({ token_ids: [1], sampling_params: { max_tokens: 1 } }, { timeoutMs: 5000 });
      await Promise.all([one(closed), one(open)]);
      redis.child.kill('SIGKILL');
      await once(redis.child, 'exit');
      // A lease in hand (50 permits at 1000/s) is spent first; after it, every request fails fast with a typed error.
      const outcomes = await Promise.all(
        Array.from({ length: 300 }, () =>
          one(closed).then(
            () => 'ok',
            (error: { code: string }) => error.code,
          ),
        ),
      );
      expect(outcomes.filter((outcome) => outcome === 'ERR_LIMITER_UNAVAILABLE').length).toBeGreaterThan(200);
      expect(outcomes.filter((outcome) => outcome !== 'ok' && outcome !== 'ERR_LIMITER_UNAVAILABLE')).toEqual([]);
      const carried = await Promise.all(
        Array.from({ length: 300 }, () =>
          one(open).then(
            () => 'ok',
            (error: { code: string }) => error.code,
          ),
        ),
      );
      expect(carried.filter((outcome) => outcome !== 'ok')).toEqual([]);
    } finally {
      await closed.close();
      await open.close();
      redis.child.kill('SIGKILL');
    }
  });

  it("4 processes sharing maxConcurrency through Redis never exceed it together, per fake-vllm; a killed holder's slots come back", async () => {
    const redis = await startRedis();
    // In-process engines: fake-vllm's max-concurrent figure is exact across them.
    const local = await startFakeVllm({ engines: 2, ttftMs: 2, itlMs: 2, jitter: 0, control: false });
    try {
      const engines = local.engines.map((engine) => engine.url).join(',');
      const worker = fileURLToPath(new URL('./fixtures/concurrency-worker.mjs', import.meta.url));
      const env = {
        ...process.env,
        ENGINES: engines,
        REDIS_URL: redis.url,
        LIMIT_ID: 'shared-concurrency',
        MAX_CONCURRENCY: '40',
      };
      await local.control.resetHighWaterMarks();
      const outputs = await Promise.all(
        Array.from({ length: 4 }, async () => {
          const child = fork(worker, [], {
            stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
            env: { ...env, CALLERS: '30', DURATION_MS: '3000' },
          });
          const [line] = (await once(createInterface({ input: child.stdout! }), 'line')) as [string];
          return JSON.parse(line) as { completed: number; errors: Record<string, number>; maxInFlight: number };
        }),
      );
      const stats = await local.control.stats();
      console.log(
        `cluster concurrency: budget 40 over 4 processes x 30 callers: server max concurrent ${stats.total.maxConcurrent}; per process max ${outputs.map((output) => output.maxInFlight).join(', ')}; completed ${outputs.map((output) => output.completed).join(', ')}`,
      );
      expect(outputs.every((output) => Object.keys(output.errors).length === 0 && output.completed > 0)).toBe(true);
      expect(stats.total.maxConcurrentExact).toBe(true);
      expect(stats.total.maxConcurrent).toBeLessThanOrEqual(40);
      expect(stats.total.maxConcurrent).toBeGreaterThanOrEqual(30);

      // A process holding the whole budget is killed: after its heartbeat expires, another process gets the slots.
      const holder = fork(worker, [], {
        stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
        env: { ...env, CALLERS: '40', HOLD: '1' },
      });
      const lines = createInterface({ input: holder.stdout! });
      for await (const line of lines) if ((JSON.parse(line) as { inFlight: number }).inFlight === 40) break;
      holder.kill('SIGKILL');
      const next = fork(worker, [], {
        stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
        env: { ...env, CALLERS: '10', DURATION_MS: '5000' },
      });
      const [line] = (await once(createInterface({ input: next.stdout! }), 'line')) as [string];
      const after = JSON.parse(line) as { completed: number; errors: Record<string, number> };
      expect(after.errors).toEqual({});
      expect(after.completed).toBeGreaterThan(0);
    } finally {
      await local.close();
      redis.child.kill('SIGKILL');
    }
  });
});
