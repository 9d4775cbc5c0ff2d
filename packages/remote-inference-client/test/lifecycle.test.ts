import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Worker } from 'node:worker_threads';
import { type FakeVllm, startFakeVllm } from 'fake-vllm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RemoteInferenceClient, TimeoutError } from '../src/index.js';
import { eventually, expectedTokens, openFds } from './helpers.js';

let fake: FakeVllm;
beforeAll(async () => {
  fake = await startFakeVllm({ engines: 2, processes: 1, ttftMs: 2, itlMs: 2, jitter: 0 });
});
afterAll(() => fake.close());

describe('resources', () => {
  it('leaks no file descriptor after close()', async () => {
    const baseline = openFds();
    // A fixed cap: all 300 on the wire at once (a learned cap starts at 32 per engine), and no /metrics polls.
    const client = new RemoteInferenceClient({
      engines: fake.engines.map((engine) => engine.url),
      limits: { perEngine: { adaptive: false } },
      transport: { shared: false },
    });
    const results = await Promise.all(
      Array.from({ length: 300 }, (_, index) =>
        client.generate({ token_ids: [index + 1], sampling_params: { max_tokens: 3, seed: 1 } }),
      ),
    );
    expect(
      results.every(
        (result, index) => result.choices[0]!.token_ids.join() === expectedTokens([index + 1], 1, 3).join(),
      ),
    ).toBe(true);
    expect(openFds()).toBeGreaterThan(baseline + 100);
    await client.close();
    await eventually(() => openFds() <= baseline, 5000);
    expect(openFds()).toBeLessThanOrEqual(baseline);
  });

  it('reuses the undici Clients of connections the server closed while idle, and leaks nothing after close()', async () => {
    // The RL step's shape: a burst, an idle gap in which the server closes every socket (uvicorn does after 5 s; 1 s
    // here), then a burst again. The second burst opens new sockets on the Clients kept as spares.
    const shortKeepAlive = await startFakeVllm({
      engines: 1,
      processes: 1,
      ttftMs: 2,
      itlMs: 2,
      jitter: 0,
      keepAliveTimeoutMs: 1000,
    });
    const baseline = openFds();
    // A fixed cap: the burst opens its connections at once, and no /metrics poll reuses one of them.
    const client = new RemoteInferenceClient({
      engines: [shortKeepAlive.url],
      limits: { perEngine: { adaptive: false } },
      transport: { shared: false },
    });
    const burst = () =>
      Promise.all(
        Array.from({ length: 50 }, (_, index) =>
          client.generate({ token_ids: [index + 1], sampling_params: { max_tokens: 3, seed: 1 } }),
        ),
      );
    try {
      const verify = (results: Awaited<ReturnType<typeof burst>>) =>
        results.every(
          (result, index) => result.choices[0]!.token_ids.join() === expectedTokens([index + 1], 1, 3).join(),
        );
      expect(verify(await burst())).toBe(true);
      const opened = client.stats().engines[0]!.connections.opened;
      expect(opened).toBeGreaterThan(10);
      await eventually(() => client.stats().engines[0]!.connections.open === 0, 10_000);
      expect(client.stats().engines[0]!.connections.spare).toBe(opened);
      expect(verify(await burst())).toBe(true);
      const after = client.stats().engines[0]!.connections;
      // Every socket of the second burst is new (none was reused across the gap), and each new one took a spare
      // Client before any Client was built.
      expect(after.reused).toBe(0);
      expect(after.opened).toBeGreaterThan(opened);
      expect(after.spare).toBe(Math.max(0, opened - (after.opened - opened)));
    } finally {
      await client.close();
      await shortKeepAlive.close();
    }
    await eventually(() => openFds() <= baseline, 5000);
    expect(openFds()).toBeLessThanOrEqual(baseline);
  });

  it('aborts in-flight requests on close() and rejects new ones', async () => {
    const client = new RemoteInferenceClient({ engines: [fake.url], transport: { shared: false } });
    const pending = client.completions.create({ prompt: 'x', max_tokens: 100_000 }).catch((error: unknown) => error);
    await eventually(() => client.stats().inFlight === 1);
    await client.close();
    expect(await pending).toMatchObject({ code: 'ERR_ABORTED' });
    await expect(client.completions.create({ prompt: 'x' })).rejects.toMatchObject({ code: 'ERR_CLIENT_CLOSED' });
  });

  it('shares one pool per event loop between clients with the same transport settings', async () => {
    const first = new RemoteInferenceClient({ engines: [fake.url] });
    const second = new RemoteInferenceClient({ engines: [fake.url] });
    await first.completions.create({ prompt: 'a', max_tokens: 1 });
    await second.completions.create({ prompt: 'a', max_tokens: 1 });
    // The second client reused the connection the first one opened.
    expect(second.stats().connections.reused).toBeGreaterThanOrEqual(1);
    expect(second.stats().connections.opened).toBe(first.stats().connections.opened);
    await first.close();
    await second.close();
  });
});

describe('worker threads', () => {
  it('a worker uses its own sockets; terminating it never disturbs the main thread', async () => {
    const engines = fake.engines.map((engine) => engine.url);
    const main = new RemoteInferenceClient({ engines });
    const workerSource = `
      const { parentPort, workerData } = require('node:worker_threads');
      import(workerData.entry).then(async ({ RemoteInferenceClient }) => {
        const client = new RemoteInferenceClient({ engines: workerData.engines });
        const first = await client.generate({ token_ids: [1], sampling_params: { max_tokens: 3, seed: 1 } });
        parentPort.postMessage({ tokens: first.choices[0].token_ids, opened: client.stats().connections.opened });
        // Keep requests in flight until terminated.
        for (;;) await client.generate({ token_ids: [2], sampling_params: { max_tokens: 50 } }).catch(() => {});
      });
    `;
    const entry = new URL('../dist/index.js', import.meta.url).href;
    const worker = new Worker(workerSource, { eval: true, workerData: { entry, engines } });
    const fromWorker = await new Promise<{ tokens: number[]; opened: number }>((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
    });
    expect(fromWorker.tokens).toEqual(expectedTokens([1], 1, 3));
    expect(fromWorker.opened).toBeGreaterThan(0);
    const inFlight = Array.from({ length: 50 }, (_, index) =>
      main.generate({ token_ids: [index + 100], sampling_params: { max_tokens: 40, seed: 3 } }),
    );
    await new Promise((resolve) => setTimeout(resolve, 30));
    await worker.terminate();
    const results = await Promise.all(inFlight);
    for (const [index, result] of results.entries()) {
      expect(result.choices[0]!.token_ids).toEqual(expectedTokens([index + 100], 3, 40));
    }
    expect(main.stats().failed).toBe(0);
    await main.close();
  });
});

describe('control plane', () => {
  it('fans out to every engine, one result per engine, and evicts idle sockets on phase changes', async () => {
    const engines = fake.engines.map((engine) => engine.url);
    const client = new RemoteInferenceClient({ engines, transport: { shared: false } });
    await client.completions.create({ prompt: 'warm', max_tokens: 1 });
    expect(client.stats().connections.idle).toBeGreaterThan(0);
    const paused = await client.control.pause({ mode: 'wait' });
    expect(paused.map((result) => result.ok)).toEqual([true, true]);
    expect(client.stats().connections.idle).toBe(0);
    expect((await client.control.isPaused()).map((result) => result.ok && result.value)).toEqual([
      { is_paused: true },
      { is_paused: true },
    ]);
    await client.control.resume();
    await client.control.sleep({ level: 1 });
    expect(
      (await client.control.isSleeping()).every(
        (result) => result.ok && (result.value as { is_sleeping: boolean }).is_sleeping,
      ),
    ).toBe(true);
    await client.control.wakeUp();
    expect((await client.control.resetPrefixCache()).every((result) => result.ok)).toBe(true);
    expect((await client.control.updateWeights({ update_info: { version: 2 } })).every((result) => result.ok)).toBe(
      true,
    );
    expect((await client.control.collectiveRpc({ method: 'noop' })).every((result) => result.ok)).toBe(true);
    expect((await client.control.getWorldSize()).map((result) => result.ok && result.value)).toEqual([
      { world_size: 1 },
      { world_size: 1 },
    ]);
    await client.close();
  });

  it('reports a per-engine error instead of throwing when one engine is down', async () => {
    const client = new RemoteInferenceClient({
      engines: [fake.url, 'http://127.0.0.1:9'],
      transport: { shared: false },
    });
    const results = await client.control.resetPrefixCache();
    expect(results[0]!.ok).toBe(true);
    expect(results[1]!.ok).toBe(false);
    if (!results[1]!.ok) expect(results[1]!.error.code).toBe('ERR_CONNECTION');
    await expect(client.waitUntilHealthy({ timeoutMs: 300 })).rejects.toMatchObject({ code: 'ERR_ENGINE_UNAVAILABLE' });
    await client.close();
  });

  it('waitUntilHealthy keeps to its timeoutMs with an engine that never answers; phase calls take a timeoutMs', async () => {
    const silent = createServer(() => {}); // accepts, never answers
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const { port } = silent.address() as AddressInfo;
    const client = new RemoteInferenceClient({ engines: [`http://127.0.0.1:${port}`], transport: { shared: false } });
    try {
      // Before, each round asked /health with 5 s whatever was left: this took 5 s (the test's own 4 s limit).
      await expect(client.waitUntilHealthy({ timeoutMs: 300 })).rejects.toMatchObject({
        code: 'ERR_ENGINE_UNAVAILABLE',
      });
      // pause/resume/sleep/wakeUp were fixed at 60 s: a pause that waits for a long rollout needs more, or less.
      const [paused] = await client.control.pause({ mode: 'wait', timeoutMs: 200 });
      expect(paused!.ok).toBe(false);
      if (!paused!.ok) expect((paused!.error as TimeoutError).phase).toBe('total');
    } finally {
      await client.close();
      silent.closeAllConnections();
      await new Promise((resolve) => silent.close(resolve));
    }
  }, 4000);

  it('a queued request with no deadline keeps the process alive until its engine is back', async () => {
    // A child process whose only engine is down (nothing listens): its request waits in the queue, and nothing but
    // the client keeps the process alive. The engine starts listening 1 s later, from a timer that does not hold
    // the process either. Before, the queue's timers were unref'd and the process exited at once with the request
    // still queued, its promise never settled.
    const script = `
      import { createServer } from 'node:http';
      import { RemoteInferenceClient } from ${JSON.stringify(new URL('../dist/index.js', import.meta.url).href)};
      const probe = createServer().listen(0, '127.0.0.1');
      await new Promise((resolve) => probe.once('listening', resolve));
      const port = probe.address().port;
      await new Promise((resolve) => probe.close(resolve));
      const client = new RemoteInferenceClient({
        engines: ['http://127.0.0.1:' + port],
        health: { failureThreshold: 1, cooldownMs: 200, probeIntervalMs: 100 },
        transport: { shared: false },
      });
      let outcome = 'unsettled';
      process.on('exit', () => console.log(JSON.stringify({ outcome, queued: client.stats().queued })));
      const engine = createServer((request, response) => {
        request.resume();
        request.on('end', () => response.end(request.url === '/health' ? '' : '{"request_id":"r","choices":[{"index":0,"token_ids":[7],"finish_reason":"length"}]}'));
      });
      setTimeout(() => engine.listen(port, '127.0.0.1'), 1000).unref();
      client.generate({ token_ids: [1], sampling_params: { max_tokens: 1 } }).then(
        () => { outcome = 'ok'; },
        (error) => { outcome = error.code; },
      ).finally(() => { engine.close(); engine.closeAllConnections(); return client.close(); });
    `;
    const { spawnSync } = await import('node:child_process');
    // The built package, as test/fixtures/concurrency-worker.mjs uses it (the test task builds first).
    const child = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
      encoding: 'utf8',
      timeout: 30_000,
    });
    const last = JSON.parse(child.stdout.trim().split('\n').at(-1)!) as { outcome: string; queued: number };
    expect(last).toEqual({ outcome: 'ok', queued: 0 });
  });

  it('a control call past its deadline is a typed total timeout for that engine, not a connection failure', async () => {
    // An engine that answers /health with its headers and then trickles the body: neither ttfb nor idle fires, only
    // the call's own deadline. (Its reason used to be AbortSignal.timeout's DOMException: ERR_CONNECTION, code 23.)
    const trickle = createServer((_request, response) => {
      response.writeHead(200, { 'content-type': 'text/plain' });
      const timer = setInterval(() => response.write('.'), 20);
      response.on('close', () => clearInterval(timer));
    });
    await new Promise<void>((resolve) => trickle.listen(0, '127.0.0.1', resolve));
    const { port } = trickle.address() as AddressInfo;
    const client = new RemoteInferenceClient({ engines: [`http://127.0.0.1:${port}`], transport: { shared: false } });
    const [result] = await client.control.health(200);
    expect(result!.ok).toBe(false);
    if (!result!.ok) {
      expect(result!.error).toBeInstanceOf(TimeoutError);
      expect((result!.error as TimeoutError).phase).toBe('total');
    }
    await client.close();
    trickle.closeAllConnections();
    await new Promise((resolve) => trickle.close(resolve));
  });
});
