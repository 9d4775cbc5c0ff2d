import { describe, expect, it } from 'vitest';
import {
  ConnectionError,
  HttpStatusError,
  InvalidOptionsError,
  RetriesExhaustedError,
  StreamInterruptedError,
  TimeoutError,
  UnexpectedError,
} from '../errors.js';
import type { AttemptRequest, AttemptResult, AttemptSink, AttemptTiming } from '../transport/attempt.js';
import { RemoteInferenceClient } from './client.js';

// The attempt loop through the `sendAttempt` seam: no network, every attempt scripted and counted exactly.

const timing = (): AttemptTiming => ({
  poolWaitMs: 0,
  connectMs: undefined,
  ttfbMs: 0,
  reusedConnection: true,
  staleRetries: 0,
  startedAtMs: 0,
  headersAtMs: 0,
  endedAtMs: 0,
});

const json = (body: unknown, status = 200): AttemptResult => ({
  status,
  headers: { 'content-type': 'application/json' },
  body: Buffer.from(typeof body === 'string' ? body : JSON.stringify(body)),
  trailers: {},
  timing: timing(),
});

/** Streams `tokens` as generate chunks into the sink, then [DONE] unless `cut` (then throws it). */
function streamed(sink: AttemptSink | undefined, tokens: number[], cut?: Error): AttemptResult {
  for (const token of tokens) {
    sink!.onData(
      Buffer.from(`data: ${JSON.stringify({ request_id: 'r', choices: [{ index: 0, token_ids: [token] }] })}\n\n`),
      0,
    );
  }
  if (cut) throw cut;
  sink!.onData(Buffer.from('data: [DONE]\n\n'), 0);
  return { status: 200, headers: {}, body: undefined, trailers: {}, timing: timing() };
}

type Script = (call: {
  engine: string;
  request: AttemptRequest;
  sink: AttemptSink | undefined;
  index: number;
}) => AttemptResult | Promise<AttemptResult>;

function scripted(script: Script, engines = ['http://e1:1', 'http://e2:2'], extra = {}) {
  const calls: { engine: string; body: unknown }[] = [];
  const client = new RemoteInferenceClient({
    engines,
    retry: { baseBackoffMs: 0, maxBackoffMs: 0 },
    transport: { shared: false },
    ...extra,
    sendAttempt: async (engine, request, sink) => {
      calls.push({ engine, body: request.body === undefined ? undefined : JSON.parse(request.body) });
      return script({ engine, request, sink, index: calls.length - 1 });
    },
  });
  return { client, calls };
}

const generate = { token_ids: [1, 2], sampling_params: { max_tokens: 3 } };

/** Attempts that wait until `release()` answers the latest one with a 1-token result. */
function heldAttempts(): { script: Script; release: () => void } {
  let answer: () => void = () => {};
  const script: Script = () =>
    new Promise<AttemptResult>((resolve) => {
      answer = () =>
        resolve(json({ request_id: 'r', choices: [{ index: 0, token_ids: [7], finish_reason: 'length' }] }));
    });
  return { script, release: () => answer() };
}

describe('the attempt loop, through the sendAttempt seam', () => {
  it('re-sends a retryable failure and counts each attempt', async () => {
    const { client, calls } = scripted(({ index }) => {
      if (index < 2) throw new ConnectionError('refused', 'ECONNREFUSED');
      return json({ request_id: 'r', choices: [{ index: 0, token_ids: [7], finish_reason: 'length' }] });
    });
    const result = await client.generate(generate);
    expect(result.choices[0]!.token_ids).toEqual([7]);
    expect(calls).toHaveLength(3);
    expect(client.stats().retries).toBe(2);
    // Failover: the second attempt avoided the engine of the first.
    expect(calls[1]!.engine).not.toBe(calls[0]!.engine);
    await client.close();
  });

  it('never re-sends a JSON 5xx (the engine did the work) or a 400', async () => {
    for (const [status, body] of [
      [500, '{"error":{"message":"boom"}}'],
      [400, '{"error":{"message":"bad"}}'],
    ] as const) {
      const { client, calls } = scripted(() => json(body, status));
      await expect(client.generate(generate)).rejects.toBeInstanceOf(HttpStatusError);
      expect(calls).toHaveLength(1);
      await client.close();
    }
  });

  it('stops at maxAttempts with every attempt error kept', async () => {
    const { client, calls } = scripted(
      () => {
        throw new ConnectionError('reset', 'ECONNRESET');
      },
      undefined,
      { retry: { maxAttempts: 3, baseBackoffMs: 0, maxBackoffMs: 0 } },
    );
    const error = (await client.generate(generate).catch((caught: unknown) => caught)) as RetriesExhaustedError;
    expect(error).toBeInstanceOf(RetriesExhaustedError);
    expect(error.errors).toHaveLength(3);
    expect(calls).toHaveLength(3);
    await client.close();
  });

  it('a stream that failed before its first data event is re-sent; after one, it is not', async () => {
    const before = scripted(({ sink, index }) =>
      index === 0 ? streamed(sink, [], new ConnectionError('reset', 'ECONNRESET')) : streamed(sink, [4, 5, 6]),
    );
    const tokens: number[] = [];
    for await (const chunk of await before.client.generate({ ...generate, stream: true })) {
      tokens.push(...chunk.choices[0]!.token_ids);
    }
    expect(tokens).toEqual([4, 5, 6]);
    expect(before.calls).toHaveLength(2);
    await before.client.close();

    const after = scripted(({ sink }) => streamed(sink, [4], new ConnectionError('reset', 'ECONNRESET')));
    const seen: number[] = [];
    const error = await (async () => {
      for await (const chunk of await after.client.generate({ ...generate, stream: true })) {
        seen.push(...chunk.choices[0]!.token_ids);
      }
    })().catch((caught: unknown) => caught);
    expect(seen).toEqual([4]);
    expect(error).toBeInstanceOf(StreamInterruptedError);
    expect(after.calls).toHaveLength(1);
    await after.client.close();
  });

  // Regression (resume skipped failure accounting): the resume branch continued the stream without recording the
  // failure, so the engine that cut it got no error count, was not avoided, and nothing was charged to the retry
  // budget. A resume now goes through the same path as a retry.
  it('a resumed stream counts the cut against its engine, avoids it, and is charged to the retry budget', async () => {
    const { client, calls } = scripted(
      ({ sink, index }) =>
        index === 0 ? streamed(sink, [10, 11], new StreamInterruptedError('cut')) : streamed(sink, [12]),
      undefined,
      // A budget of 0 retries per request and 1 per second: the one resume fits, a second would not.
      { retry: { baseBackoffMs: 0, maxBackoffMs: 0, budgetRatio: 0, minRetriesPerSecond: 1 } },
    );
    const result = await client.generate(generate, { resume: true });
    expect(result.choices[0]!.token_ids).toEqual([10, 11, 12]);
    expect(calls).toHaveLength(2);
    // The continuation re-sends prompt + received tokens for the remaining max_tokens.
    expect(calls[1]!.body).toMatchObject({ token_ids: [1, 2, 10, 11], sampling_params: { max_tokens: 1 } });
    expect(calls[1]!.engine).not.toBe(calls[0]!.engine);
    const stats = client.stats();
    expect(stats.resumes).toBe(1);
    const cutEngine = stats.engines.find((engine) => engine.endpoint === calls[0]!.engine)!;
    expect(cutEngine.errors.ERR_STREAM_INTERRUPTED).toBe(1);
    // The budget was charged: with it spent, the next resume is refused.
    const again = scripted(({ sink }) => streamed(sink, [10], new StreamInterruptedError('cut')), undefined, {
      retry: { baseBackoffMs: 0, maxBackoffMs: 0, budgetRatio: 0, minRetriesPerSecond: 1 },
    });
    const refused = (await again.client
      .generate(generate, { resume: true })
      .catch((caught: unknown) => caught)) as RetriesExhaustedError;
    expect(refused).toBeInstanceOf(RetriesExhaustedError);
    expect(refused.message).toMatch(/Retry budget spent/);
    expect(again.calls).toHaveLength(2);
    await client.close();
    await again.client.close();
  });

  it('a resumed continuation that fails before its first event (a 503) is retried with the same body, not final', async () => {
    const { client, calls } = scripted(({ sink, index }) => {
      if (index === 0) return streamed(sink, [7], new ConnectionError('reset', 'ECONNRESET'));
      if (index === 1) return json('overloaded', 503);
      return streamed(sink, [8, 9]);
    });
    // Before, "delivered" was the whole run's: the continuation's 503 was final and the token already received lost.
    const result = await client.generate(generate, { resume: true });
    expect(result.choices[0]!.token_ids).toEqual([7, 8, 9]);
    expect(calls).toHaveLength(3);
    expect(calls[2]!.body).toEqual(calls[1]!.body);
    expect(calls[1]!.body).toMatchObject({ token_ids: [1, 2, 7], sampling_params: { max_tokens: 2 } });
    expect(client.stats()).toMatchObject({ resumes: 1, retries: 1 });
    await client.close();
  });

  it('a cut after the engine finished (finish_reason, or [DONE]) ends the generation: nothing is generated past it', async () => {
    const chunk = (tokens: number[], finish: string | null) =>
      Buffer.from(
        `data: ${JSON.stringify({ request_id: 'r', choices: [{ index: 0, token_ids: tokens, finish_reason: finish }] })}\n\n`,
      );
    // EOS after 3 of max_tokens 10, then the connection drops before [DONE].
    const { client, calls } = scripted(({ sink }) => {
      sink!.onData(chunk([11, 12], null), 0);
      sink!.onData(chunk([2], 'stop'), 0);
      throw new ConnectionError('reset', 'ECONNRESET');
    });
    const result = await client.generate({ token_ids: [1], sampling_params: { max_tokens: 10 } }, { resume: true });
    // Before: a continuation was sent and the engine generated past the EOS ([11, 12, 2, ...], finish "length").
    expect(result.choices[0]).toMatchObject({ token_ids: [11, 12, 2], finish_reason: 'stop' });
    expect(calls).toHaveLength(1);
    // Without resume, a reset after [DONE] loses nothing either (it used to end in ERR_STREAM_INTERRUPTED).
    const done = scripted(({ sink }) => {
      sink!.onData(chunk([5], 'length'), 0);
      sink!.onData(Buffer.from('data: [DONE]\n\n'), 0);
      throw new ConnectionError('reset', 'ECONNRESET');
    });
    const seen: unknown[] = [];
    for await (const part of await done.client.generate({
      token_ids: [1],
      sampling_params: { max_tokens: 1 },
      stream: true,
    }))
      seen.push(part.choices[0]!.token_ids);
    expect(seen).toEqual([[5]]);
    expect(done.calls).toHaveLength(1);
    await client.close();
    await done.client.close();
  });

  it('a stream the client cut for idleness is resumed, and what is owed of min_tokens is re-sent, not all of it', async () => {
    const { client, calls } = scripted(({ sink, index }) =>
      index === 0 ? streamed(sink, [7, 8], new TimeoutError('idle', 200)) : streamed(sink, [9]),
    );
    const result = await client.generate(
      { token_ids: [1, 2], sampling_params: { max_tokens: 3, min_tokens: 3 } },
      { resume: true },
    );
    // Before, an idle timeout was not resumable: the rollout failed with the two tokens received lost.
    expect(result.choices[0]!.token_ids).toEqual([7, 8, 9]);
    expect(calls).toHaveLength(2);
    expect(calls[1]!.body).toMatchObject({
      token_ids: [1, 2, 7, 8],
      sampling_params: { max_tokens: 1, min_tokens: 1 },
    });
    await client.close();
  });

  it('a seam that throws a plain value surfaces as ERR_UNEXPECTED, not as an abort', async () => {
    const { client } = scripted(() => {
      throw 'oops';
    });
    const error = await client.generate(generate).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(UnexpectedError);
    await client.close();
  });

  it('re-admits an engine that refused connections after an answered GET /health probe, risking no request on it', async () => {
    let up = false;
    const sent: { engine: string; path: string }[] = [];
    const { client } = scripted(
      ({ engine, request }) => {
        sent.push({ engine, path: request.path });
        if (engine === 'http://e2:2' && !up) throw new ConnectionError('refused', 'ECONNREFUSED');
        if (request.path === '/health') return json('', 200);
        return json({ request_id: 'r', choices: [{ index: 0, token_ids: [7], finish_reason: 'length' }] });
      },
      undefined,
      // A cooldown far longer than the test: only the probe can bring e2 back.
      { routing: 'round-robin', health: { failureThreshold: 1, cooldownMs: 600_000, probeIntervalMs: 5 } },
    );
    const to = (engine: string, path: string) =>
      sent.filter((call) => call.engine === engine && call.path === path).length;
    for (let index = 0; index < 4; index++) await client.generate(generate); // one refused on e2, failed over to e1
    expect(to('http://e2:2', '/inference/v1/generate')).toBe(1);
    expect(client.stats().engines[1]!.state).toBe('cooldown');
    // Refused /health probes keep it out; wait for a few of them.
    while (to('http://e2:2', '/health') < 3) await new Promise((resolve) => setTimeout(resolve, 5));
    expect(client.stats().engines[1]!.state).toBe('cooldown');
    up = true;
    while (client.stats().engines[1]!.state !== 'healthy') await new Promise((resolve) => setTimeout(resolve, 5));
    // Back without a request sent to it while it was down, and round robin uses it again at once.
    expect(to('http://e2:2', '/inference/v1/generate')).toBe(1);
    for (let index = 0; index < 4; index++) await client.generate(generate);
    expect(to('http://e2:2', '/inference/v1/generate')).toBe(3);
    expect(client.stats().failed).toBe(0);
    await client.close();
  });

  // Regression (one request let through after a failed half-open probe): the probe's grant was settled, waking the
  // queue, before its failure re-armed the cooldown; a request waiting for the engine was granted in that gap and
  // sent to the engine that had just failed.
  it('a failed half-open probe lets no waiting request through: it waits out the re-armed cooldown', async () => {
    const cooldownMs = 200;
    let probeFailedAt = 0;
    let waiterSentAt = 0;
    const { client } = scripted(
      ({ index }) => {
        if (index === 0) throw new ConnectionError('reset', 'ECONNRESET'); // arms the cooldown
        if (index === 1) {
          probeFailedAt = performance.now();
          throw new ConnectionError('reset', 'ECONNRESET'); // the half-open probe fails
        }
        waiterSentAt = performance.now();
        return json({ request_id: 'r', choices: [{ index: 0, token_ids: [7], finish_reason: 'length' }] });
      },
      ['http://e1:1'],
      { retry: { maxAttempts: 1 }, health: { failureThreshold: 1, cooldownMs, probeIntervalMs: 0 } },
    );
    await expect(client.generate(generate)).rejects.toBeInstanceOf(RetriesExhaustedError);
    expect(client.stats().engines[0]!.state).toBe('cooldown');
    while (client.stats().engines[0]!.state !== 'half-open') await new Promise((resolve) => setTimeout(resolve, 5));
    const probe = client.generate(generate);
    const waiter = client.generate(generate); // queued behind the probe: one request at a time while half-open
    await expect(probe).rejects.toBeInstanceOf(RetriesExhaustedError);
    expect(client.stats().engines[0]!.state).toBe('cooldown');
    await waiter;
    // Sent as the next probe, once the doubled cooldown (400 ms) was over; the bug sent it at once (0 ms).
    expect(waiterSentAt - probeFailedAt).toBeGreaterThanOrEqual(2 * cooldownMs - 50);
    await client.close();
  });

  it('waitUntilHealthy and the control plane go through the seam too: a mocked network is never contacted', async () => {
    const paths: string[] = [];
    const { client } = scripted(({ engine, request }) => {
      paths.push(`${engine}${request.path}`);
      if (request.path === '/is_paused') return json({ is_paused: false });
      return json('', 200);
    });
    await client.waitUntilHealthy({ timeoutMs: 1000 });
    const paused = await client.control.isPaused();
    expect(paused.map((result) => result.ok && result.value)).toEqual([{ is_paused: false }, { is_paused: false }]);
    expect(paths).toEqual([
      'http://e1:1/health',
      'http://e2:2/health',
      'http://e1:1/is_paused',
      'http://e2:2/is_paused',
    ]);
    await client.close();
  });

  it('every control-plane call keeps to its timeoutMs', async () => {
    // An engine that never answers: each call must end as a TimeoutError at its own deadline, not at 60 s.
    const { client } = scripted(
      ({ request }) =>
        new Promise<AttemptResult>((_, reject) => {
          request.signal!.addEventListener('abort', () => reject(request.signal!.reason));
        }),
      ['http://e1:1'],
    );
    const calls = [
      client.control.isPaused({ timeoutMs: 30 }),
      client.control.isSleeping({ timeoutMs: 30 }),
      client.control.resetPrefixCache({ timeoutMs: 30 }),
      client.control.initWeightTransferEngine({}, { timeoutMs: 30 }),
      client.control.collectiveRpc({ method: 'noop' }, { timeoutMs: 30 }),
      client.control.getWorldSize({ timeoutMs: 30 }),
    ];
    for (const [result] of await Promise.all(calls)) {
      expect(result!.ok).toBe(false);
      expect(!result!.ok && result!.error).toBeInstanceOf(TimeoutError);
    }
    await client.close();
  });

  it('an engine that cuts streams mid-generation goes into cooldown without resume too', async () => {
    const { client } = scripted(
      ({ sink }) => streamed(sink, [5, 6], new ConnectionError('reset mid-stream', 'ECONNRESET')),
      ['http://e1:1'],
      { health: { failureThreshold: 2, cooldownMs: 60_000 } },
    );
    for (let index = 0; index < 2; index++) {
      const stream = await client.generate({ ...generate, stream: true });
      await expect(
        (async () => {
          for await (const _chunk of stream) {
          }
        })(),
      ).rejects.toBeInstanceOf(StreamInterruptedError);
    }
    // Without `resume` the cuts were never counted: the engine stayed healthy and took every next stream.
    expect(client.stats().engines[0]!.state).toBe('cooldown');
    await client.close();
  });

  it('a retry whose backoff the caller aborted is not counted as a retry', async () => {
    const { client, calls } = scripted(
      () => {
        throw new ConnectionError('refused', 'ECONNREFUSED');
      },
      ['http://e1:1'],
      { retry: { baseBackoffMs: 60_000, maxBackoffMs: 60_000 } },
    );
    const controller = new AbortController();
    const pending = client.generate(generate, { signal: controller.signal });
    while (calls.length < 1) await new Promise((resolve) => setTimeout(resolve, 1));
    await new Promise((resolve) => setTimeout(resolve, 5)); // in the backoff now
    controller.abort();
    await expect(pending).rejects.toMatchObject({ code: 'ERR_ABORTED' });
    expect(calls).toHaveLength(1);
    expect(client.stats().retries).toBe(0);
    await client.close();
  });

  it('a caller abort is not an engine error', async () => {
    const { client } = scripted(
      ({ request }) =>
        new Promise<AttemptResult>((_, reject) => {
          request.signal?.addEventListener('abort', () => reject(request.signal!.reason));
        }),
      ['http://e1:1'],
    );
    const controller = new AbortController();
    const pending = client.generate(generate, { signal: controller.signal });
    await new Promise((resolve) => setTimeout(resolve, 5));
    controller.abort();
    await expect(pending).rejects.toMatchObject({ code: 'ERR_ABORTED' });
    expect(client.stats().engines[0]!.errors).toEqual({});
    await client.close();
  });

  it('a continuation refused before its first event counts as a retry, not as a second resume', async () => {
    const { client, calls } = scripted(
      ({ index, sink }) => {
        if (index === 0) return streamed(sink, [10], new ConnectionError('reset', 'ECONNRESET'));
        if (index === 1) throw new ConnectionError('refused', 'ECONNREFUSED');
        return streamed(sink, [11, 12]);
      },
      ['http://e1:1'],
    );
    const result = await client.generate(generate, { resume: true });
    expect(result.choices[0]!.token_ids).toEqual([10, 11, 12]);
    expect(calls).toHaveLength(3);
    expect(calls[2]!.body).toEqual(calls[1]!.body); // the same continuation, re-sent
    expect(client.stats()).toMatchObject({ resumes: 1, retries: 1 });
    await client.close();
  });

  it('a continuation that ends before its first event (a ping, then a clean end) is continued again, not final', async () => {
    const ok = (): AttemptResult => ({ status: 200, headers: {}, body: undefined, trailers: {}, timing: timing() });
    const event = (token: number) =>
      Buffer.from(`data: ${JSON.stringify({ request_id: 'r', choices: [{ index: 0, token_ids: [token] }] })}\n\n`);
    const { client, calls } = scripted(
      ({ index, sink }) => {
        if (index === 0) {
          sink!.onData(event(10), 0); // one token, then a clean end without [DONE]: truncated
          return ok();
        }
        if (index === 1) {
          sink!.onData(Buffer.from(': ping\n\n'), 0); // the continuation ends before its first event
          return ok();
        }
        return streamed(sink, [11, 12]);
      },
      ['http://e1:1'],
    );
    // A review of the per-attempt rule found this one final (ERR_STREAM_TRUNCATED, the token received lost).
    const result = await client.generate(generate, { resume: true });
    expect(result.choices[0]!.token_ids).toEqual([10, 11, 12]);
    expect(calls).toHaveLength(3);
    expect(calls[2]!.body).toEqual(calls[1]!.body);
    expect(client.stats()).toMatchObject({ resumes: 1, retries: 1 });
    await client.close();
  });

  it('a routing policy that throws gives back the global QPS permit it was granted', async () => {
    let picks = 0;
    const { client } = scripted(
      () => json({ request_id: 'r', choices: [{ index: 0, token_ids: [7], finish_reason: 'length' }] }),
      ['http://e1:1'],
      {
        limits: { maxQps: 1 },
        routing: {
          name: 'throws-first',
          pick: (engines: readonly { endpoint: string }[]) => {
            if (++picks === 1) throw new Error('policy bug');
            return engines[0]!;
          },
        },
      },
    );
    await expect(client.generate(generate)).rejects.toBeInstanceOf(UnexpectedError);
    // The one permit of this second is still there: without it, the next request waits a second for a new one.
    await expect(client.generate(generate, { timeoutMs: 300 })).resolves.toMatchObject({
      choices: [{ token_ids: [7] }],
    });
    await client.close();
  });

  it('a queue per priority lives only while requests wait in it', async () => {
    const { script, release } = heldAttempts();
    const { client } = scripted(script, ['http://e1:1'], { limits: { perEngine: { maxConcurrency: 1 } } });
    const queues = () => (client as unknown as { scheduler: { queues: Map<number, unknown> } }).scheduler.queues;
    for (let step = 0; step < 50; step++) {
      const first = client.generate(generate, { priority: step });
      const second = client.generate(generate, { priority: step }); // waits in this step's queue
      await new Promise((resolve) => setTimeout(resolve, 0));
      release();
      await first;
      await new Promise((resolve) => setTimeout(resolve, 0));
      release();
      await second;
    }
    // 50 priorities used, none waiting: no queue kept (each pump walked all 50).
    expect(queues().size).toBe(0);
    await client.close();
  });

  it("a routing policy that throws fails the queued request it was picking for, not another request's settle", async () => {
    let picks = 0;
    const { script, release } = heldAttempts();
    const { client } = scripted(script, ['http://e1:1'], {
      limits: { perEngine: { maxConcurrency: 1 } },
      routing: {
        name: 'throws-second',
        pick: (engines: readonly { endpoint: string }[]) => {
          if (++picks === 2) throw new Error('policy bug');
          return engines[0]!;
        },
      },
    });
    const first = client.generate(generate);
    const second = client.generate(generate); // queued; its pick throws when the first settles
    await new Promise((resolve) => setTimeout(resolve, 0));
    release();
    await expect(first).resolves.toMatchObject({ choices: [{ token_ids: [7] }] });
    await expect(second).rejects.toBeInstanceOf(UnexpectedError);
    expect(client.stats()).toMatchObject({ queued: 0, inFlight: 0 });
    await client.close();
  });

  it('stops probing an engine removed from the fleet while it refused connections', async () => {
    const sent: { engine: string; path: string }[] = [];
    const { client } = scripted(
      ({ engine, request }) => {
        sent.push({ engine, path: request.path });
        if (engine === 'http://e2:2') throw new ConnectionError('refused', 'ECONNREFUSED');
        return json({ request_id: 'r', choices: [{ index: 0, token_ids: [7], finish_reason: 'length' }] });
      },
      undefined,
      { routing: 'round-robin', health: { failureThreshold: 1, cooldownMs: 600_000, probeIntervalMs: 5 } },
    );
    const probes = () => sent.filter((call) => call.engine === 'http://e2:2' && call.path === '/health').length;
    for (let index = 0; index < 2; index++) await client.generate(generate);
    while (probes() < 2) await new Promise((resolve) => setTimeout(resolve, 5));
    client.setEngines(['http://e1:1']);
    const atRemoval = probes();
    // Probes of e2 come every 5-40 ms while it is in the fleet; 200 ms later at most the one already due has run.
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(probes()).toBeLessThanOrEqual(atRemoval + 1);
    await client.close();
  });

  // The learned per-engine cap (the default) polls /metrics through the same seam: a mocked network is not polled
  // for real (which read as an unreachable engine and held the cap at initialCap, 32), and a cap is polled fast only
  // while it binds.
  it('polls /metrics through the seam, fast only while a learning cap binds', async () => {
    let inFlight = 0;
    let peak = 0;
    let metricsPolls = 0;
    const { client } = scripted(
      async ({ request }) => {
        if (request.path === '/metrics') {
          metricsPolls++;
          return { ...json(''), status: 404 }; // no vLLM gauges here: the fixed cap (512) applies
        }
        inFlight++;
        peak = Math.max(peak, inFlight);
        await new Promise((resolve) => setTimeout(resolve, 20));
        inFlight--;
        return json({ request_id: 'r', choices: [{ index: 0, token_ids: [7], finish_reason: 'length' }] });
      },
      ['http://e1:1'],
      { limits: { perEngine: { adaptive: { intervalMs: 600_000 } } } },
    );
    // Below the starting cap (32): nothing binds, so nothing is polled before the 600 s tick.
    await Promise.all(Array.from({ length: 10 }, () => client.generate(generate)));
    expect(metricsPolls).toBe(0);
    // 200 at once: the cap binds at 32, the poller polls at once, the 404 restores the fixed cap.
    await Promise.all(Array.from({ length: 200 }, () => client.generate(generate)));
    expect(metricsPolls).toBeGreaterThanOrEqual(1);
    expect(client.stats().engines[0]!.capacity!.state).toBe('no-metrics');
    expect(client.stats().engines[0]!.maxConcurrency).toBe(512);
    expect(peak).toBeGreaterThan(32);
    await client.close();
  });

  it('a /metrics answer of 503 or 429 keeps the learned cap; only a 404 or a body without gauges means none', async () => {
    let metricsStatus = 200;
    let failedPolls = 0;
    const { client } = scripted(
      async ({ request }) => {
        if (request.path === '/metrics') {
          if (metricsStatus !== 200) {
            failedPolls++;
            return { ...json('upstream busy'), status: metricsStatus };
          }
          return json('vllm:num_requests_running 6\nvllm:num_requests_waiting 4\n');
        }
        await new Promise((resolve) => setTimeout(resolve, 30));
        return json({ request_id: 'r', choices: [{ index: 0, token_ids: [7], finish_reason: 'length' }] });
      },
      ['http://e1:1'],
      { limits: { perEngine: { adaptive: { intervalMs: 20 } } } },
    );
    const load = Promise.all(Array.from({ length: 200 }, () => client.generate(generate)));
    const cap = () => client.stats().engines[0]!.maxConcurrency;
    while (client.stats().engines[0]!.capacity!.state !== 'learned')
      await new Promise((resolve) => setTimeout(resolve, 5));
    const learned = cap();
    expect(learned).toBeLessThan(32);
    for (const status of [503, 429]) {
      metricsStatus = status;
      const before = failedPolls;
      while (failedPolls < before + 2) await new Promise((resolve) => setTimeout(resolve, 5));
      // Before, one such answer switched the engine to the fixed cap, 512: the whole queue bound to it at once.
      expect(cap(), `after a ${status}`).toBe(learned);
    }
    metricsStatus = 200;
    await load;
    await client.close();
  });

  it('an engine added back while it drained, its recovery probe stopped meanwhile, is probed again', async () => {
    let healthy = false;
    let probes = 0;
    // Removed while its recovery probe was pending (the probe stops for a draining engine), then added back.
    let release: () => void = () => {};
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    const again = scripted(
      async ({ engine, request }) => {
        if (request.path === '/health') {
          if (engine === 'http://e1:1') probes++;
          return healthy ? json('', 200) : Promise.reject(new ConnectionError('refused', 'ECONNREFUSED'));
        }
        if (engine === 'http://e1:1' && request.body?.includes('"hold"')) {
          await held;
          return json({ request_id: 'r', choices: [] }, 500);
        }
        if (engine === 'http://e1:1' && !healthy) throw new ConnectionError('refused', 'ECONNREFUSED');
        return json({ request_id: 'r', choices: [{ index: 0, token_ids: [7], finish_reason: 'length' }] });
      },
      undefined,
      {
        routing: 'round-robin',
        retry: { maxAttempts: 1 },
        health: { failureThreshold: 1, cooldownMs: 600_000, probeIntervalMs: 50 },
      },
    );
    const holding = again.client.generate({ ...generate, hold: true } as never).catch(() => undefined); // on e1
    await again.client.generate(generate); // on e2
    await again.client.generate(generate).catch(() => undefined); // e1 refuses: cooldown, a probe in 50 ms
    expect(again.client.stats().engines[0]!.state).toBe('cooldown');
    again.client.setEngines(['http://e2:2']); // e1 drains (its held request)
    await new Promise((resolve) => setTimeout(resolve, 150)); // its probe came and stopped: it drains
    again.client.setEngines(['http://e1:1', 'http://e2:2']); // back before it drained
    release();
    await holding;
    healthy = true;
    const before = probes;
    // Before, nothing probed it again: in cooldown for the 600 s, every request to e2. (Probes come every 50 ms.)
    const deadline = Date.now() + 5000;
    while (again.client.stats().engines[0]!.state !== 'healthy' && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    expect(again.client.stats().engines[0]!.state).toBe('healthy');
    expect(probes).toBeGreaterThan(before);
    await again.client.close();
  });

  it('a learning cap that never binds is polled at the steady interval, not the learning one', async () => {
    let metricsPolls = 0;
    const metrics = 'vllm:num_requests_running 10\nvllm:num_requests_waiting 0\n';
    const { client } = scripted(
      async ({ request }) => {
        if (request.path === '/metrics') {
          metricsPolls++;
          return { ...json(''), headers: { 'content-type': 'text/plain' }, body: Buffer.from(metrics) };
        }
        await new Promise((resolve) => setTimeout(resolve, 400));
        return json({ request_id: 'r', choices: [{ index: 0, token_ids: [7], finish_reason: 'length' }] });
      },
      ['http://e1:1'],
      { limits: { perEngine: { adaptive: { intervalMs: 200, learningIntervalMs: 5 } } } },
    );
    // 10 in flight for 400 ms against a cap of 32: busy but never full. Steady polls come every 200 ms (about 2);
    // learning-interval polls would come every 5 ms (dozens).
    await Promise.all(Array.from({ length: 10 }, () => client.generate(generate)));
    expect(client.stats().engines[0]!.capacity!.state).toBe('learning');
    expect(metricsPolls).toBeLessThanOrEqual(6);
    await client.close();
  });
});

describe('caller mistakes and odd events, through the sendAttempt seam', () => {
  it('every request method rejects a caller mistake with a typed error; none throws synchronously', async () => {
    const { client, calls } = scripted(() => json({}));
    const calls_ = [
      () => client.generate(null as never),
      () => client.generate(generate, null as never),
      () => client.completions.create(null as never),
      () => client.chat.completions.create(null as never),
      () => client.tokenize(null as never),
      () => client.detokenize(null as never),
    ];
    for (const call of calls_) {
      let promise: Promise<unknown> | undefined;
      expect(() => {
        promise = call();
      }).not.toThrow();
      await expect(promise).rejects.toBeInstanceOf(InvalidOptionsError);
    }
    // Nothing was sent or counted for any of them.
    expect(calls).toHaveLength(0);
    expect(client.stats().requests).toBe(0);
    await client.close();
  });

  it("the client's default model goes into every body, a resumed continuation's included", async () => {
    const { client, calls } = scripted(
      ({ sink, index }) =>
        index === 0
          ? streamed(sink, [10], new StreamInterruptedError('cut'))
          : index === 1
            ? streamed(sink, [11, 12])
            : json({ request_id: 'r', choices: [{ index: 0, token_ids: [7], finish_reason: 'length' }] }),
      undefined,
      { model: 'policy-v7' },
    );
    await client.generate(generate, { resume: true });
    await client.generate({ ...generate, model: 'named' });
    expect(calls.map((call) => (call.body as { model?: string }).model)).toEqual(['policy-v7', 'policy-v7', 'named']);
    await client.close();
  });

  it('a resumed generation whose stream carries an event without `choices` still collects its tokens', async () => {
    const { client } = scripted(({ sink }) => {
      sink!.onData(Buffer.from('data: {"request_id":"r","usage":{"completion_tokens":0}}\n\n'), 0);
      return streamed(sink, [4, 5, 6]);
    });
    const result = await client.generate(generate, { resume: true });
    expect(result.choices[0]!.token_ids).toEqual([4, 5, 6]);
    await client.close();
  });

  it('generateBatch reports a failure that is not an InferenceError as ERR_UNEXPECTED, not as an abort', async () => {
    const { client } = scripted(() => json({}));
    // Every failure inside the request path is typed already; this is the batch's own last line of defence.
    client.generate = (() => Promise.reject(new TypeError('not typed'))) as never;
    const [outcome] = await client.generateBatch([generate]);
    expect(outcome!.ok).toBe(false);
    expect((outcome as { error: unknown }).error).toBeInstanceOf(UnexpectedError);
    await client.close();
  });
});
