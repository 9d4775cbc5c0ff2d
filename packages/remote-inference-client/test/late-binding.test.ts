import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createRequire } from 'node:module';
import { createInterface } from 'node:readline';
import { type FakeVllm, startFakeVllm } from 'fake-vllm';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { AbortError, RemoteInferenceClient, SessionAffinityPolicy, TimeoutError } from '../src/index.js';
import { eventually, freePort } from './helpers.js';

// Late binding: each engine gets about what it can run, the rest waits in the client's queue for the engine that
// frees a slot first. Every check counts what the engines themselves report (fake-vllm's per-engine counters and
// `x-fake-tally` labels) or the cap the client learned; none measures time.

const fakeCli = createRequire(import.meta.url)
  .resolve('fake-vllm/package.json')
  .replace(/package\.json$/, 'dist/cli.js');

/** One engine in its own process on `port`, with `slots` running slots: killing it and starting another is a restart. */
async function spawnEngine(port: number, slots: number): Promise<ChildProcess> {
  const child = spawn(
    process.execPath,
    [
      fakeCli,
      '--port',
      String(port),
      '--max-num-seqs',
      String(slots),
      '--ttft-ms',
      '1',
      '--itl-ms',
      '3',
      '--jitter',
      '0',
      '--no-control',
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  await once(createInterface({ input: child.stdout! }), 'line');
  return child;
}

/** Keeps `concurrency` requests going until `done()` holds (or the guard fails the test); errors are ignored. */
async function loadUntil(
  client: RemoteInferenceClient,
  done: () => boolean,
  { concurrency = 40, maxTokens = 20 } = {},
): Promise<void> {
  let stop = false;
  const workers = Array.from({ length: concurrency }, async (_, worker) => {
    for (let index = 0; !stop; index++) {
      await client
        .generate({ token_ids: [worker + 1, index + 1], sampling_params: { max_tokens: maxTokens } })
        .catch(() => {});
    }
  });
  try {
    await eventually(done, 30_000);
  } finally {
    stop = true;
    await Promise.all(workers);
  }
}

const children: ChildProcess[] = [];
const clients: RemoteInferenceClient[] = [];
const fakes: FakeVllm[] = [];
afterEach(async () => {
  await Promise.all(clients.splice(0).map((client) => client.close()));
  await Promise.all(fakes.splice(0).map((fake) => fake.close()));
});
afterAll(() => {
  for (const child of children) child.kill('SIGKILL');
});

describe('the learned per-engine cap', () => {
  it("converges on an engine's running slots, and follows it through restarts with fewer and more slots", async () => {
    const port = await freePort();
    let engine = await spawnEngine(port, 6);
    children.push(engine);
    const client = new RemoteInferenceClient({
      engines: [`http://127.0.0.1:${port}`],
      limits: { perEngine: { adaptive: { initialCap: 2, intervalMs: 20 } } },
      retry: { maxAttempts: 2, baseBackoffMs: 5, maxBackoffMs: 20 },
      health: { cooldownMs: 50 },
      transport: { shared: false },
    });
    clients.push(client);
    const capacity = () => client.stats().engines[0]!.capacity!;
    expect(capacity().state).toBe('learning');
    expect(client.stats().engines[0]!.maxConcurrency).toBe(2);

    await loadUntil(client, () => capacity().state === 'learned' && capacity().learned === 6);
    // The learned capacity plus one request of headroom (5% of 6, at least 1).
    expect(client.stats().engines[0]!.maxConcurrency).toBe(7);

    for (const slots of [3, 12]) {
      const restartsBefore = capacity().restarts;
      engine.kill('SIGKILL');
      await once(engine, 'exit');
      engine = await spawnEngine(port, slots);
      children.push(engine);
      await loadUntil(
        client,
        () => capacity().restarts > restartsBefore && capacity().state === 'learned' && capacity().learned === slots,
      );
      expect(client.stats().engines[0]!.maxConcurrency).toBe(slots + 1);
    }
  });
});

describe('the default per-engine cap', () => {
  it('is learned when no fixed cap is given, and a cold burst learns it by the fast polls of the learning phase', async () => {
    const fake = await startFakeVllm({ engines: 1, maxNumSeqs: 64, ttftMs: 1, itlMs: 3, jitter: 0 });
    fakes.push(fake);
    // The steady poll is far longer than the test: only the learning phase's polls (100 ms) can learn the cap.
    const client = new RemoteInferenceClient({
      engines: [fake.url],
      limits: { perEngine: { adaptive: { intervalMs: 600_000 } } },
      transport: { shared: false },
    });
    clients.push(client);
    const capacity = () => client.stats().engines[0]!.capacity!;
    expect(capacity().state).toBe('learning');
    expect(client.stats().engines[0]!.maxConcurrency).toBe(32);
    await loadUntil(client, () => capacity().state === 'learned' && capacity().learned === 64, { concurrency: 100 });
    expect(client.stats().engines[0]!.maxConcurrency).toBe(64 + 4); // 5% headroom, rounded up

    const defaults = new RemoteInferenceClient({ engines: [fake.url], transport: { shared: false } });
    const fixed = new RemoteInferenceClient({
      engines: [fake.url],
      limits: { perEngine: { maxConcurrency: 100 } },
      transport: { shared: false },
    });
    clients.push(defaults, fixed);
    expect(defaults.stats().engines[0]!.capacity?.state).toBe('learning');
    expect(fixed.stats().engines[0]!.capacity).toBeUndefined();
    expect(fixed.stats().engines[0]!.maxConcurrency).toBe(100);
  });
});

describe('the learned per-engine cap, live', () => {
  it('follows an engine whose slots change while it runs: down at once, up by the headroom per poll', async () => {
    const fake = await startFakeVllm({ engines: 1, maxNumSeqs: 8, ttftMs: 1, itlMs: 3, jitter: 0 });
    fakes.push(fake);
    const client = new RemoteInferenceClient({
      engines: [fake.engines[0]!.url],
      limits: { perEngine: { adaptive: { initialCap: 4, intervalMs: 20 } } },
      transport: { shared: false },
    });
    clients.push(client);
    const capacity = () => client.stats().engines[0]!.capacity!;
    for (const slots of [8, 4, 12]) {
      await fake.control.setCapacity({ maxNumSeqs: slots }, 0);
      await loadUntil(client, () => capacity().state === 'learned' && capacity().learned === slots);
      expect(client.stats().engines[0]!.maxConcurrency).toBe(slots + 1);
    }
    expect(capacity().restarts).toBe(0);
  });

  it('an engine without vLLM gauges keeps the fixed cap; an engine added later starts learning from initialCap', async () => {
    const fake = await startFakeVllm({ engines: 1, maxNumSeqs: 8, ttftMs: 1, itlMs: 3, jitter: 0 });
    const bare = await startFakeVllm({
      engines: 1,
      maxNumSeqs: 8,
      ttftMs: 1,
      itlMs: 3,
      jitter: 0,
      routes: [{ method: 'GET', path: '/metrics', response: { status: 404, body: { detail: 'Not Found' } } }],
    });
    fakes.push(fake, bare);
    const client = new RemoteInferenceClient({
      engines: [bare.engines[0]!.url],
      limits: { perEngine: { maxConcurrency: 20, adaptive: { initialCap: 4, intervalMs: 20 } } },
      transport: { shared: false },
    });
    clients.push(client);
    const engine = (index: number) => client.stats().engines[index]!;
    await loadUntil(client, () => engine(0).capacity!.state === 'no-metrics');
    expect(engine(0).maxConcurrency).toBe(20);

    client.setEngines([bare.engines[0]!.url, fake.engines[0]!.url]);
    expect(engine(1).capacity!.state).toBe('learning');
    expect(engine(1).maxConcurrency).toBe(4);
    await loadUntil(client, () => engine(1).capacity!.state === 'learned' && engine(1).capacity!.learned === 8);
    expect(engine(0).maxConcurrency).toBe(20);
  });
});

describe('late binding', () => {
  it('queued requests go to the engine that frees a slot first: the fast engine serves most of them', async () => {
    const fake = await startFakeVllm({ engines: 2, maxNumSeqs: 4, ttftMs: 1, itlMs: 2, jitter: 0 });
    fakes.push(fake);
    await fake.control.setLatency({ itlMs: 20 }, 1); // engine 1 at a tenth of the speed
    const client = new RemoteInferenceClient({
      engines: fake.engines.map((engine) => engine.url),
      routing: 'round-robin',
      limits: { perEngine: { adaptive: { initialCap: 4, intervalMs: 20 } } },
      transport: { shared: false },
    });
    clients.push(client);
    await Promise.all(
      Array.from({ length: 120 }, (_, index) =>
        client.generate({ token_ids: [index + 1], sampling_params: { max_tokens: 20 } }),
      ),
    );
    const [fast, slow] = (await fake.control.stats()).engines;
    expect(fast!.completed + slow!.completed).toBe(120);
    // Bound at t = 0 (a cap of 512, round robin), each would serve 60. Late-bound, the fast one runs ~10 requests
    // in the time the slow one runs 1 (per slot): 3x is far inside that and far from an even split.
    expect(fast!.completed).toBeGreaterThan(3 * slow!.completed);
    // Both caps were learned from the engines' gauges: 4 slots each, whatever their speed.
    expect(client.stats().engines.map((engine) => engine.capacity?.learned)).toEqual([4, 4]);
  });

  it('a session stays on the engine it ran on while the engines are full, and others go around it', async () => {
    const fake = await startFakeVllm({ engines: 3, maxNumSeqs: 3, ttftMs: 1, itlMs: 2, jitter: 0 });
    fakes.push(fake);
    const client = new RemoteInferenceClient({
      engines: fake.engines.map((engine) => engine.url),
      routing: new SessionAffinityPolicy({ maxWaitMs: 60_000 }),
      limits: { perEngine: { maxConcurrency: 3 } },
      transport: { shared: false },
    });
    clients.push(client);
    const sessions = Array.from({ length: 9 }, (_, index) => `agent-${index}`);
    const turns = 4;
    let backgroundDone = false;
    // Requests without a session keep every engine full, so each turn finds its engine busy.
    const background = Array.from({ length: 12 }, async (_, worker) => {
      for (let index = 0; !backgroundDone; index++) {
        await client.generate({ token_ids: [100 + worker, index + 1], sampling_params: { max_tokens: 15 } });
      }
    });
    await Promise.all(
      sessions.map(async (sessionId, session) => {
        let prompt = [session + 1];
        for (let turn = 0; turn < turns; turn++) {
          const result = await client.generate(
            { token_ids: prompt, sampling_params: { max_tokens: 5 } },
            { sessionId, headers: { 'x-fake-tally': sessionId } },
          );
          prompt = [...prompt, ...result.choices[0]!.token_ids, turn + 1];
        }
      }),
    );
    backgroundDone = true;
    await Promise.all(background);
    const engines = (await fake.control.stats()).engines;
    for (const sessionId of sessions) {
      const received = engines.map((engine) => engine.tallies[sessionId]?.received ?? 0);
      expect(
        received.filter((count) => count > 0),
        `${sessionId} per engine: ${received.join(', ')}`,
      ).toEqual([turns]);
    }
    // The background requests were not held up behind the waiting sessions: every engine served them.
    for (const engine of engines) expect(engine.completed).toBeGreaterThan(turns);
  });

  it('a request waiting for its session engine leaves the queue at once on abort or deadline, with a typed error', async () => {
    const fake = await startFakeVllm({ engines: 2, maxNumSeqs: 1, ttftMs: 1, itlMs: 20, jitter: 0 });
    fakes.push(fake);
    const client = new RemoteInferenceClient({
      engines: fake.engines.map((engine) => engine.url),
      routing: new SessionAffinityPolicy({ maxWaitMs: 600_000 }),
      limits: { perEngine: { maxConcurrency: 1 } },
      transport: { shared: false },
    });
    clients.push(client);
    const first = await client.generate(
      { token_ids: [1], sampling_params: { max_tokens: 1 } },
      { sessionId: 'agent', headers: { 'x-fake-tally': 'agent' } },
    );
    expect(first.choices[0]!.token_ids).toHaveLength(1);
    const home = (await fake.control.stats()).engines.findIndex((engine) => engine.tallies.agent?.received === 1);
    // Its engine busy with a long request; the other engine is free, but the session waits for its own.
    const blocker = client.generate(
      { token_ids: [2], sampling_params: { max_tokens: 3000 } },
      { sessionId: 'agent', headers: { 'x-fake-tally': 'blocker' } },
    );
    await eventually(async () => (await fake.control.stats()).engines[home]!.running === 1);
    const controller = new AbortController();
    const aborted = client.generate(
      { token_ids: [3], sampling_params: { max_tokens: 1 } },
      { sessionId: 'agent', signal: controller.signal },
    );
    await eventually(() => client.stats().queued === 1);
    controller.abort();
    await expect(aborted).rejects.toBeInstanceOf(AbortError);
    const timedOut = client.generate(
      { token_ids: [4], sampling_params: { max_tokens: 1 } },
      { sessionId: 'agent', timeoutMs: 300 },
    );
    await expect(timedOut).rejects.toBeInstanceOf(TimeoutError);
    // Both left while the blocker still ran, and neither reached the free engine.
    expect(client.stats().queued).toBe(0);
    const engines = (await fake.control.stats()).engines;
    expect(engines[home]!.running).toBe(1);
    expect(engines[1 - home]!.requests).toBe(0);
    await client.close();
    await blocker.catch(() => {});
  });

  it('a retry waits for an engine it did not fail on, instead of going back to the one whose slot its failure freed', async () => {
    const fake = await startFakeVllm({ engines: 2, maxNumSeqs: 1, ttftMs: 1, itlMs: 2, jitter: 0 });
    fakes.push(fake);
    const client = new RemoteInferenceClient({
      engines: fake.engines.map((engine) => engine.url),
      limits: { perEngine: { maxConcurrency: 1 } },
      retry: { baseBackoffMs: 1, maxBackoffMs: 60_000 },
      transport: { shared: false },
    });
    clients.push(client);
    // One engine busy; the other free, but its next request is reset before any byte.
    const blocker = client.generate({ token_ids: [1], sampling_params: { max_tokens: 150 } });
    let busy = -1;
    await eventually(async () => {
      busy = (await fake.control.stats()).engines.findIndex((engine) => engine.running === 1);
      return busy >= 0;
    });
    const free = 1 - busy;
    await fake.control.setFaultProfile({ 'reset-before-response': { first: 1 } }, free);
    const result = await client.generate({ token_ids: [2], sampling_params: { max_tokens: 2 } });
    expect(result.choices[0]!.token_ids).toHaveLength(2);
    await blocker;
    const engines = (await fake.control.stats()).engines;
    expect(engines[free]!.faults['reset-before-response']).toBe(1);
    expect(engines[free]!.requests).toBe(1); // the retry did not go back to the engine that failed it
    expect(engines[busy]!.completed).toBe(2); // it waited for the busy one
    expect(client.stats().retries).toBe(1);
  });
});
