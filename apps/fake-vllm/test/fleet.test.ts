import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, expect, it } from 'vitest';
import {
  ControlClient,
  type FakeVllm,
  FakeVllmConfigError,
  resolveFakeVllmOptions,
  startFakeVllm,
} from '../src/index.js';
import { get } from './helpers.js';

// Engines of different sizes in one fleet, and the gauges a client learns capacity from, named as vLLM's
// PrometheusStatLogger writes them (vllm/v1/metrics/loggers.py): vllm:num_requests_running (<= max_num_seqs),
// vllm:num_requests_waiting (the queue), vllm:kv_cache_usage_perc (BlockPool.get_usage in
// vllm/v1/core/block_pool.py: blocks held by running requests over the pool; cached free blocks count as free).

const cli = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
let server: FakeVllm;
const agent = new Agent({ connections: 100 });
beforeAll(async () => {
  server = await startFakeVllm({
    engines: 2,
    // Requests stay in prefill: they hold a slot and their prompt blocks, and no token moves the counts.
    ttftMs: 600_000,
    itlMs: 5,
    jitter: 0,
    kvCacheBlocks: 100,
    perEngine: [{ maxNumSeqs: 4 }, { maxNumSeqs: 2, itlMs: 10 }],
    control: false,
  });
});
afterAll(async () => {
  await server.close();
  await agent.close();
});

const labels = 'model_name="fake-model",engine="0"';
async function gauges(engine: number) {
  const text = (await get(`${server.engines[engine]!.url}/metrics`)).text;
  const sample = (name: string) => {
    const line = text.split('\n').find((candidate) => candidate.startsWith(`${name}{${labels}} `));
    if (!line) throw new Error(`no sample ${name}`);
    return Number(line.split(' ').at(-1));
  };
  return {
    running: sample('vllm:num_requests_running'),
    waiting: sample('vllm:num_requests_waiting'),
    usage: sample('vllm:kv_cache_usage_perc'),
  };
}

async function until<T>(read: () => Promise<T>, done: (value: T) => boolean): Promise<T> {
  for (let polls = 0; polls < 1000; polls++) {
    const value = await read();
    if (done(value)) return value;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error('condition never held');
}

/** Opens `count` streams to an engine (their headers come back at once) and returns their aborters. */
async function open(engine: number, count: number, shared: number[]): Promise<AbortController[]> {
  return Promise.all(
    Array.from({ length: count }, async (_, index) => {
      const controller = new AbortController();
      const response = await request(`${server.engines[engine]!.url}/v1/completions`, {
        method: 'POST',
        dispatcher: agent,
        signal: controller.signal,
        headers: { 'content-type': 'application/json' },
        // 32 shared tokens (2 full blocks) + 8 of its own (a partial block).
        body: JSON.stringify({ prompt: [...shared, ...Array(8).fill(500 + index)], max_tokens: 10, stream: true }),
      });
      response.body.resume().on('error', () => {});
      return controller;
    }),
  );
}

it('enforces each engine its own slots: running never exceeds them, the rest wait, as /metrics reports', async () => {
  const shared = Array.from({ length: 32 }, (_, index) => 1000 + index);
  const clients = [...(await open(0, 10, shared)), ...(await open(1, 10, shared))];
  const zero = await until(
    () => gauges(0),
    (value) => value.running + value.waiting === 10,
  );
  const one = await until(
    () => gauges(1),
    (value) => value.running + value.waiting === 10,
  );
  expect(zero).toMatchObject({ running: 4, waiting: 6 });
  expect(one).toMatchObject({ running: 2, waiting: 8 });
  // 2 shared prompt blocks + 1 partial block per running request, over 100 blocks.
  expect(zero.usage).toBeCloseTo((2 + 4) / 100, 10);
  expect(one.usage).toBeCloseTo((2 + 2) / 100, 10);

  // More slots live: waiting requests are admitted at once, on that engine only.
  await server.control.setCapacity({ maxNumSeqs: 6 }, 0);
  expect(await gauges(0)).toMatchObject({ running: 6, waiting: 4, usage: (2 + 6) / 100 });
  expect(await gauges(1)).toMatchObject({ running: 2, waiting: 8 });
  const stats = (await server.control.stats()).engines;
  expect(stats.map((engine) => [engine.maxNumSeqs, engine.maxRunning])).toEqual([
    [6, 6],
    [2, 2],
  ]);

  for (const client of clients) client.abort();
  await until(
    () => Promise.all([gauges(0), gauges(1)]),
    (both) => both.every((value) => value.running === 0 && value.waiting === 0),
  );
  // Nothing runs: no block is in use, and the shared prompt blocks stay cached (free, not counted as used).
  expect((await gauges(0)).usage).toBe(0);
  expect((await server.control.stats()).engines[0]!.cachedBlocks).toBe(2);
});

it('sets per-engine latency at start and live, one engine at a time', async () => {
  expect((await server.control.stats()).engines.map((engine) => engine.itlMs)).toEqual([5, 10]);
  await server.control.setLatency({ itlMs: 20, ttftMs: 1000 }, 1);
  const engines = (await server.control.stats()).engines;
  expect(engines.map((engine) => [engine.itlMs, engine.ttftMs])).toEqual([
    [5, 600_000],
    [20, 1000],
  ]);
  await expect(server.control.setCapacity({ maxNumSeqs: 0 }, 0)).rejects.toThrow('maxNumSeqs');
  await expect(server.control.setCapacity({ slots: 3 } as never, 0)).rejects.toThrow('Unknown capacity option');
});

it('reads perEngine from a config file, engine i getting entry i across --processes children', async () => {
  const directory = mkdtempSync(join(tmpdir(), 'fake-vllm-fleet-'));
  const file = join(directory, 'fleet.json');
  writeFileSync(
    file,
    JSON.stringify({
      engines: 3,
      processes: 2,
      perEngine: [{}, { itlMs: 24, ttftMs: 100 }, { maxNumSeqs: 64, kvCacheBlocks: 512 }],
      outputLengths: { distribution: 'pareto', scaleTokens: 20, alpha: 1.2 },
    }),
  );
  const child = spawn(process.execPath, [cli, '--config', file], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const [line] = (await once(createInterface({ input: child.stdout! }), 'line')) as [string];
    const control = await ControlClient.connect((JSON.parse(line) as { control: string }).control);
    const engines = (await control.stats()).engines;
    await control.close();
    expect(engines.map((engine) => [engine.itlMs, engine.ttftMs, engine.maxNumSeqs, engine.kvCacheBlocks])).toEqual([
      [12, 50, 256, 32_768],
      [24, 100, 256, 32_768],
      [12, 50, 64, 512],
    ]);
  } finally {
    child.kill('SIGKILL');
  }
});

it('names a bad perEngine entry in one line and exits 2', async () => {
  const child = spawn(process.execPath, [cli, '--engines', '2', '--per-engine', '[{},{"itlMs":-1}]'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (chunk) => {
    stderr += chunk;
  });
  const [code] = await once(child, 'exit');
  expect(code).toBe(2);
  expect(stderr.trimEnd().split('\n')).toHaveLength(1);
  expect(stderr).toContain('`perEngine[1].itlMs`');
  expect(() => resolveFakeVllmOptions({ engines: 1, perEngine: [{}, {}] })).toThrow(FakeVllmConfigError);
  expect(() => resolveFakeVllmOptions({ perEngine: [{ model: 'x' } as never] })).toThrow(
    /Unknown option `perEngine\[0\]\.model`/,
  );
});
