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

  // Regression (half-open never re-armed): the request path releases its ticket — onSettled() clears `probing` —
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
});
