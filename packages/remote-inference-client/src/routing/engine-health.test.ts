import { describe, expect, it } from 'vitest';
import { EngineHealth, resolveHealthOptions } from './engine-health.js';

/** An EngineHealth on a clock the test moves. */
function health(options = {}) {
  const clock = { ms: 1000 };
  const engine = new EngineHealth(
    resolveHealthOptions({ failureThreshold: 3, cooldownMs: 100, ...options }),
    () => clock.ms,
  );
  return { engine, clock };
}

describe('EngineHealth', () => {
  it('stays healthy below the threshold and goes to cooldown at it', () => {
    const { engine } = health();
    engine.onConnectionFailure();
    engine.onConnectionFailure();
    expect(engine.state).toBe('healthy');
    engine.onConnectionFailure();
    expect(engine.state).toBe('cooldown');
    expect(engine.available()).toBe(false);
    expect(engine.msUntilAvailable()).toBe(100);
  });

  it('a success resets the count and the backoff', () => {
    const { engine } = health();
    engine.onConnectionFailure();
    engine.onConnectionFailure();
    engine.onSuccess();
    engine.onConnectionFailure();
    engine.onConnectionFailure();
    expect(engine.state).toBe('healthy');
  });

  it('half-open after the cooldown lets exactly one probe through', () => {
    const { engine, clock } = health();
    for (let i = 0; i < 3; i++) engine.onConnectionFailure();
    clock.ms += 100;
    expect(engine.state).toBe('half-open');
    expect(engine.available()).toBe(true);
    engine.onSend();
    expect(engine.available()).toBe(false);
    engine.onSuccess();
    expect(engine.state).toBe('healthy');
  });

  it('a failed half-open probe re-arms the cooldown, doubled each time, up to maxCooldownMs', () => {
    const { engine, clock } = health({ maxCooldownMs: 350 });
    for (let i = 0; i < 3; i++) engine.onConnectionFailure();
    const cooldowns: number[] = [];
    for (let probe = 0; probe < 4; probe++) {
      clock.ms += engine.msUntilAvailable();
      expect(engine.state).toBe('half-open');
      engine.onSend();
      engine.onConnectionFailure();
      expect(engine.state).toBe('cooldown');
      cooldowns.push(engine.msUntilAvailable());
    }
    expect(cooldowns).toEqual([200, 350, 350, 350]);
  });

  // Regression (half-open never re-armed): the request path settles its grant — onSettled() clears `probing` —
  // before it records the failure, so the failure arrived looking like an ordinary one and the engine stayed
  // half-open, open to every request.
  it('a half-open probe released before its failure is recorded still re-arms the cooldown', () => {
    const { engine, clock } = health();
    for (let i = 0; i < 3; i++) engine.onConnectionFailure();
    clock.ms += 100;
    engine.onSend();
    engine.onSettled();
    engine.onConnectionFailure();
    expect(engine.state).toBe('cooldown');
    expect(engine.available()).toBe(false);
    expect(engine.msUntilAvailable()).toBe(200);
  });

  it('a failure of a request sent before the cooldown began does not extend it', () => {
    const { engine } = health();
    for (let i = 0; i < 3; i++) engine.onConnectionFailure();
    engine.onConnectionFailure();
    expect(engine.msUntilAvailable()).toBe(100);
  });

  describe('an engine that refused connections (stopped or restarting)', () => {
    it('stays in cooldown past cooldownMs, admits no request, and is re-admitted by an answered /health probe', () => {
      const { engine, clock } = health({ probeIntervalMs: 50 });
      for (let i = 0; i < 3; i++) engine.onConnectionFailure(true);
      expect(engine.awaitsProbe).toBe(true);
      expect(engine.probeDueInMs()).toBe(50);
      clock.ms += 10_000; // far past the 100 ms cooldown: no half-open request probe
      expect(engine.state).toBe('cooldown');
      expect(engine.available()).toBe(false);
      expect(engine.probeDueInMs()).toBe(0);
      // Nothing for the scheduler to wait for: the prober wakes the queue when a probe is answered.
      expect(engine.msUntilAvailable()).toBe(0);
      engine.onProbe(true);
      expect(engine.state).toBe('healthy');
      expect(engine.available()).toBe(true);
      expect(engine.awaitsProbe).toBe(false);
    });

    it('waits twice as long after each probe that timed out or failed, up to 8x probeIntervalMs', () => {
      const { engine, clock } = health({ probeIntervalMs: 50 });
      for (let i = 0; i < 3; i++) engine.onConnectionFailure(true);
      const delays: number[] = [];
      for (let probe = 0; probe < 5; probe++) {
        clock.ms += engine.probeDueInMs()!;
        engine.onProbe(false);
        delays.push(engine.probeDueInMs()!);
      }
      expect(delays).toEqual([100, 200, 400, 400, 400]);
      expect(engine.state).toBe('cooldown');
    });

    it('probes again after probeIntervalMs while probes are refused (a restart in progress), then backs off', () => {
      const { engine, clock } = health({ probeIntervalMs: 50 });
      for (let i = 0; i < 3; i++) engine.onConnectionFailure(true);
      const delays: number[] = [];
      for (const refused of [true, true, true, false, false, true]) {
        clock.ms += engine.probeDueInMs()!;
        engine.onProbe(false, refused);
        delays.push(engine.probeDueInMs()!);
      }
      // A restarted engine is re-admitted within one interval of listening again, however long it was down.
      expect(delays).toEqual([50, 50, 50, 100, 200, 50]);
    });

    it('keeps its backoff after a probe re-admits it, until a request succeeds', () => {
      const { engine, clock } = health({ probeIntervalMs: 50 });
      for (let i = 0; i < 3; i++) engine.onConnectionFailure(); // resets: request-probe cooldown of 100 ms
      clock.ms += 100;
      engine.onSend();
      engine.onConnectionFailure(true); // the half-open request was refused: 200 ms, now a /health probe's
      expect(engine.awaitsProbe).toBe(true);
      engine.onProbe(true);
      // It answers probes but fails requests again: the next cooldown is doubled, not back to 100 ms.
      for (let i = 0; i < 3; i++) engine.onConnectionFailure();
      expect(engine.msUntilAvailable()).toBe(200);
      engine.onSuccess();
      for (let i = 0; i < 3; i++) engine.onConnectionFailure();
      expect(engine.msUntilAvailable()).toBe(100);
    });

    it('a reset arms the request-probe cooldown; only a refusal that (re)arms it switches to /health probes', () => {
      const { engine, clock } = health({ probeIntervalMs: 50 });
      for (let i = 0; i < 3; i++) engine.onConnectionFailure();
      engine.onConnectionFailure(true); // a request sent before the cooldown, refused later: changes nothing
      expect(engine.awaitsProbe).toBe(false);
      clock.ms += 100;
      expect(engine.state).toBe('half-open');
    });

    it('with probeIntervalMs 0 a refusal is probed by a half-open request, as before', () => {
      const { engine, clock } = health({ probeIntervalMs: 0 });
      for (let i = 0; i < 3; i++) engine.onConnectionFailure(true);
      expect(engine.awaitsProbe).toBe(false);
      expect(engine.probeDueInMs()).toBeUndefined();
      clock.ms += 100;
      expect(engine.state).toBe('half-open');
    });
  });
});
