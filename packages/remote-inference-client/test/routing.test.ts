import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createRequire } from 'node:module';
import { createInterface } from 'node:readline';
import { type FakeVllm, startFakeVllm } from 'fake-vllm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isInferenceError, RemoteInferenceClient, type RequestStats } from '../src/index.js';
import { eventually, expectedTokens } from './helpers.js';

const fakeCli = createRequire(import.meta.url)
  .resolve('fake-vllm/package.json')
  .replace(/package\.json$/, 'dist/cli.js');

/** One engine in its own process, so it can really crash (SIGKILL). */
async function spawnEngine(port = 0): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(
    process.execPath,
    [fakeCli, '--port', String(port), '--ttft-ms', '2', '--itl-ms', '2', '--jitter', '0', '--no-control'],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const [line] = (await once(createInterface({ input: child.stdout! }), 'line')) as [string];
  return { child, url: JSON.parse(line).engines[0].url as string };
}

describe('failover and health', () => {
  const children: ChildProcess[] = [];
  afterAll(() => {
    for (const child of children) child.kill('SIGKILL');
  });

  it('an engine killed mid-run: traffic moves, nothing is lost, and the revived engine is used again', async () => {
    const engines = await Promise.all([spawnEngine(), spawnEngine(), spawnEngine()]);
    children.push(...engines.map((engine) => engine.child));
    const client = new RemoteInferenceClient({
      engines: engines.map((engine) => engine.url),
      health: { failureThreshold: 2, cooldownMs: 200 },
      retry: { baseBackoffMs: 5, maxBackoffMs: 50, maxAttempts: 6 },
      transport: { shared: false },
    });
    let completed = 0;
    let verified = 0;
    let typedFailures = 0;
    let untyped = 0;
    const failureCodes: Record<string, number> = {};
    const lastCodes: Record<string, number> = {};
    const sent = 1500;
    const run = async (index: number) => {
      const prompt = [index + 1];
      try {
        const result = await client.generate({ token_ids: prompt, sampling_params: { max_tokens: 20, seed: 2 } });
        completed++;
        if (result.choices[0]!.token_ids.join() === expectedTokens(prompt, 2, 20).join()) verified++;
      } catch (error) {
        if (isInferenceError(error)) {
          typedFailures++;
          failureCodes[error.code] = (failureCodes[error.code] ?? 0) + 1;
          if (error.code === 'ERR_RETRIES_EXHAUSTED')
            lastCodes[(error as { errors?: { code: string }[] }).errors?.map((e) => e.code).join(',') ?? ''] = 1;
        } else untyped++;
      }
    };
    let next = 0;
    const workers = Array.from({ length: 60 }, async () => {
      while (next < sent) await run(next++);
    });
    await eventually(() => next > 300);
    const victim = engines[1]!;
    victim.child.kill('SIGKILL');
    await workers[0];
    await Promise.all(workers);
    console.log(
      JSON.stringify({ completed, typedFailures, failureCodes, lastCodes: Object.keys(lastCodes).slice(0, 5) }),
    );
    expect(completed + typedFailures).toBe(sent);
    expect(untyped).toBe(0);
    expect(verified).toBe(completed);
    // Requests cut mid-generation on the killed engine end as typed errors; everything else completed elsewhere.
    expect(completed).toBeGreaterThan(sent - 60);
    const victimStats = client.stats().engines[1]!;
    expect(victimStats.state).not.toBe('healthy');
    const before = victimStats.requests;
    // Revive it on the same port: after the cooldown a probe succeeds and it takes traffic again.
    const revived = await spawnEngine(Number(new URL(victim.url).port));
    children.push(revived.child);
    await eventually(async () => {
      await Promise.all(Array.from({ length: 20 }, (_, index) => run(index)));
      return client.stats().engines[1]!.requests > before + 5;
    }, 10_000);
    expect(client.stats().engines[1]!.state).toBe('healthy');
    await client.close();
  });

  it('every engine down: requests fail with a typed error at their deadline, not a silent wait', async () => {
    const client = new RemoteInferenceClient({
      engines: ['http://127.0.0.1:9', 'http://127.0.0.1:10'],
      health: { failureThreshold: 1, cooldownMs: 60_000 },
      retry: { maxAttempts: 2, baseBackoffMs: 1 },
      transport: { shared: false },
    });
    // Both attempts are refused (one per engine, failover), which puts both engines in cooldown.
    const first = await client
      .generate({ token_ids: [1], sampling_params: { max_tokens: 1 } })
      .catch((caught: unknown) => caught);
    expect(first).toMatchObject({ code: 'ERR_RETRIES_EXHAUSTED', attempts: 2 });
    expect(client.stats().engines.map((engine) => engine.state)).toEqual(['cooldown', 'cooldown']);
    const second = await client.generate({ token_ids: [1] }, { timeoutMs: 300 }).catch((caught: unknown) => caught);
    expect(second).toMatchObject({ code: 'ERR_ENGINE_UNAVAILABLE' });
    await client.close();
  });
});

describe('routing', () => {
  let fake: FakeVllm;
  beforeAll(async () => {
    fake = await startFakeVllm({ engines: 4, ttftMs: 1, itlMs: 1, jitter: 0 });
  });
  afterAll(() => fake.close());

  it('session affinity keeps every turn of a session on one engine and spreads sessions', async () => {
    const enginesBySession = new Map<string, Set<string>>();
    const client = new RemoteInferenceClient({
      engines: fake.engines.map((engine) => engine.url),
      routing: 'session-affinity',
      transport: { shared: false },
      onRequestEnd: (stats: RequestStats) => {
        const engines = enginesBySession.get(stats.sessionId!) ?? new Set<string>();
        engines.add(stats.engine);
        enginesBySession.set(stats.sessionId!, engines);
      },
    });
    for (let turn = 0; turn < 5; turn++) {
      await Promise.all(
        Array.from({ length: 30 }, (_, session) =>
          client.completions.create({ prompt: `turn ${turn}`, max_tokens: 2 }, { sessionId: `rollout-${session}` }),
        ),
      );
    }
    expect(enginesBySession.size).toBe(30);
    for (const engines of enginesBySession.values()) expect(engines.size).toBe(1);
    const used = new Set([...enginesBySession.values()].flatMap((engines) => [...engines]));
    expect(used.size).toBeGreaterThanOrEqual(3);
    await client.close();
  });

  it('round robin spreads evenly; setEngines adds and drains engines', async () => {
    const [a, b, c] = fake.engines.map((engine) => engine.url);
    const client = new RemoteInferenceClient({
      engines: [a!, b!],
      routing: 'round-robin',
      transport: { shared: false },
    });
    for (let index = 0; index < 10; index++) await client.completions.create({ prompt: 'x', max_tokens: 1 });
    expect(client.stats().engines.map((engine) => engine.requests)).toEqual([5, 5]);
    const long = client.completions.create({ prompt: 'x', max_tokens: 200 });
    await eventually(() => client.stats().inFlight === 1);
    const busy = client.stats().engines.find((engine) => engine.inFlight === 1)!.endpoint;
    client.setEngines([c!, ...(busy === a ? [b!] : [a!])]);
    expect((await long).choices[0]!.finish_reason).toBe('length');
    for (let index = 0; index < 6; index++) await client.completions.create({ prompt: 'x', max_tokens: 1 });
    const stats = client.stats();
    expect(stats.engines.map((engine) => engine.endpoint)).not.toContain(busy);
    expect(stats.engines.find((engine) => engine.endpoint === c)!.requests).toBe(3);
    await client.close();
  });
});
