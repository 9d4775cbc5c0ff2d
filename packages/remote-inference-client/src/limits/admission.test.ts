import { describe, expect, it } from 'vitest';
import { LeastOutstandingPolicy, SessionAffinityPolicy } from '../routing/policies.js';
import { type AdmissionRequest, type EngineEntry, resolveLimits, Scheduler } from './admission.js';

// The scheduler alone: admission, the queue and its wake-ups, no network.

const request = (extra: Partial<AdmissionRequest> = {}): AdmissionRequest => ({
  signal: undefined,
  deadlineMs: Number.POSITIVE_INFINITY,
  priority: 0,
  sessionId: undefined,
  avoid: undefined,
  ...extra,
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('the scheduler', () => {
  it('a request aborted before it could wait is rejected and never counted as queued', async () => {
    const scheduler = new Scheduler(
      resolveLimits({ perEngine: { maxConcurrency: 1 } }),
      new LeastOutstandingPolicy(),
      undefined,
    );
    try {
      scheduler.setEngines(['http://a:1']);
      const held = scheduler.admit(request()) as EngineEntry;
      const controller = new AbortController();
      controller.abort();
      await expect(scheduler.admit(request({ signal: controller.signal }))).rejects.toMatchObject({
        code: 'ERR_ABORTED',
      });
      // It used to be uncounted without having been counted: -1 queued, and the next waiter's count off by one.
      expect(scheduler.queuedCount).toBe(0);
      scheduler.settle(held);
    } finally {
      await scheduler.close();
    }
  });

  it('a queued retry takes the engine whose cooldown ends first, not the one whose cooldown was scheduled first', async () => {
    const scheduler = new Scheduler(resolveLimits({ perEngine: { maxConcurrency: 1 } }), new LeastOutstandingPolicy(), {
      failureThreshold: 1,
      cooldownMs: 100,
      maxCooldownMs: 10_000,
      probeIntervalMs: 0,
    });
    try {
      scheduler.setEngines(['http://a:1', 'http://b:1']);
      const [a, b] = scheduler.list() as [EngineEntry, EngineEntry];
      // a: a long cooldown (failures doubling it); b: busy.
      a.health.onConnectionFailure();
      for (let index = 0; index < 4; index++) {
        await sleep(a.health.msUntilAvailable() + 5);
        a.health.onConnectionFailure();
      }
      expect(a.health.msUntilAvailable()).toBeGreaterThan(1400);
      const onB = scheduler.admit(request()) as EngineEntry;
      expect(onB).toBe(b);
      // Queued while b is busy and a cools down: the wake timer is set for a's cooldown end.
      const queued = scheduler.admit(request({ retry: true })) as Promise<EngineEntry>;
      // b's request fails: b goes into a 100 ms cooldown, much sooner over than a's.
      b.health.onConnectionFailure();
      scheduler.settle(onB);
      const granted = await queued;
      // Before, the timer kept a's cooldown end: the retry waited ~1.6 s, then went to whichever was back.
      expect(granted).toBe(b);
      expect(a.health.msUntilAvailable()).toBeGreaterThan(500);
      scheduler.settle(granted);
    } finally {
      await scheduler.close();
    }
  });

  it('a request without a session takes a free engine while a session waits for its own', async () => {
    const scheduler = new Scheduler(
      resolveLimits({ perEngine: { maxConcurrency: 1 } }),
      new SessionAffinityPolicy({ maxWaitMs: 2000 }),
      undefined,
    );
    try {
      scheduler.setEngines(['http://a:1', 'http://b:1']);
      const first = scheduler.admit(request({ sessionId: 's' })) as EngineEntry;
      // The session's next turn waits (up to 2 s) for the engine holding its prefix, which is full.
      const turn = (scheduler.admit(request({ sessionId: 's' })) as Promise<EngineEntry>).then((engine) => ({
        who: 'session turn',
        engine,
      }));
      const other = scheduler.admit(request()) as Promise<EngineEntry> | EngineEntry as Promise<EngineEntry>;
      const winner = await Promise.race([
        turn,
        Promise.resolve(other).then((engine) => ({ who: 'no session', engine })),
      ]);
      // Before, it queued behind the waiting turn: the other engine sat idle until the wait ended (2 s).
      expect(winner.who).toBe('no session');
      expect(winner.engine).not.toBe(first);
      scheduler.settle(first);
      scheduler.settle(winner.engine);
      scheduler.settle((await turn).engine);
    } finally {
      await scheduler.close();
    }
  });
});
