import { setTimeout as sleep } from 'node:timers/promises';
import { startFakeVllm } from 'fake-vllm';
import { expect, it } from 'vitest';
import { RemoteInferenceClient } from '../src/index.js';

// The retry budget's base was the requests started in the last one to two seconds. An RL step starts all its
// rollouts at once and they run for seconds or minutes: an engine restarting after that found a base of zero, the
// budget at its 10/s floor, and most of the requests it held failed "Retry budget spent" (54 of 80 in a check with
// 4 engines). The base is now the requests started lately or in flight, whichever is more.
it('an engine restarting seconds into a step of long requests: every request it held is retried elsewhere', async () => {
  const fake = await startFakeVllm({ engines: 5, maxNumSeqs: 64, ttftMs: 1, itlMs: 10, jitter: 0 });
  const client = new RemoteInferenceClient({
    engines: fake.engines.map((engine) => engine.url),
    routing: 'round-robin',
    transport: { shared: false },
  });
  try {
    const step = Promise.allSettled(
      Array.from({ length: 100 }, (_, index) =>
        client.generate({ token_ids: [index + 1], sampling_params: { max_tokens: 400 } }),
      ),
    );
    // Past the budget's two-second window: nothing has started since (a setup wait; nothing below is timed).
    await sleep(2200);
    await fake.control.restartEngine({ downMs: 300 }, 0);
    const results = await step;
    const failed = results.filter((result) => result.status === 'rejected');
    const restarted = (await fake.control.stats()).engines[0]!;
    expect(restarted.droppedByRestart).toBeGreaterThan(0); // the restart did cut requests that were running
    expect(failed.map((result) => (result as PromiseRejectedResult).reason.message)).toEqual([]);
    expect(client.stats().retryBudgetDenied).toBe(0);
  } finally {
    await client.close();
    await fake.close();
  }
});
