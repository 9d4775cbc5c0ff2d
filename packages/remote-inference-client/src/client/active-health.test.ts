import { describe, expect, it } from 'vitest';
import { ConnectionError, TimeoutError } from '../errors.js';
import { EngineEntry, type Scheduler } from '../limits/admission.js';
import { resolveHealthOptions } from '../routing/engine-health.js';
import { AttemptFailure, type AttemptTiming } from '../transport/attempt.js';
import { RecoveryProber } from './active-health.js';

const timing: AttemptTiming = {
  poolWaitMs: 0,
  connectMs: undefined,
  ttfbMs: 0,
  reusedConnection: false,
  staleRetries: 0,
  startedAtMs: 0,
  headersAtMs: 0,
  endedAtMs: 0,
};

/** An engine in cooldown because it refused connections, and a prober whose one /health probe fails with `error`. */
async function afterOneProbe(error: Error) {
  const probeIntervalMs = 10_000;
  const entry = new EngineEntry('http://e1:1', 0, 512, undefined, resolveHealthOptions({ probeIntervalMs }));
  for (let i = 0; i < 3; i++) entry.health.onConnectionFailure(true);
  let probed!: () => void;
  const probeSent = new Promise<void>((resolve) => {
    probed = resolve;
  });
  const prober = new RecoveryProber(
    { pump: () => {} } as unknown as Scheduler,
    async () => {
      probed();
      throw new AttemptFailure(error as ConnectionError, false, timing);
    },
    {},
    1000,
  );
  // Due at once: the prober's first probe goes out on the next timer tick.
  (entry.health as unknown as { probeAtMs: number }).probeAtMs = 0;
  prober.watch(entry);
  await probeSent;
  await new Promise((resolve) => setImmediate(resolve));
  const dueInMs = entry.health.probeDueInMs()!;
  prober.close();
  return { dueInMs, probeIntervalMs };
}

describe('RecoveryProber', () => {
  it('probes a refusing engine again after probeIntervalMs (a restart in progress: re-admitted within one interval)', async () => {
    const { dueInMs, probeIntervalMs } = await afterOneProbe(new ConnectionError('refused', 'ECONNREFUSED'));
    expect(dueInMs).toBeGreaterThan(probeIntervalMs / 2);
    expect(dueInMs).toBeLessThanOrEqual(probeIntervalMs);
  });

  it('backs off after a probe that timed out (a host that does not answer)', async () => {
    const { dueInMs, probeIntervalMs } = await afterOneProbe(new TimeoutError('connect', 1000));
    expect(dueInMs).toBeGreaterThan(1.5 * probeIntervalMs);
  });
});
