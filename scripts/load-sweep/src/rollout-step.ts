import type { FakeVllm } from 'fake-vllm';
import type { RolloutFleet, RolloutPolicy, SweepOptions } from './options.js';
import type { StepResult } from './worker-protocol.js';
import { abortableDelay } from './worker-supervision.js';

/**
 * `--scenario rollout-step`: what a synchronous RL step waits for. A step fires its N rollouts at once and ends
 * with the last one; these are its figures, on the row of each step and policy (`steps[i].rollout` in
 * summary.json).
 */
export interface RolloutFigures {
  rollouts: number;
  /** Turns per rollout (`--session-turns`; each turn's prompt grows by the previous turn's output). */
  turns: number;
  policy: RolloutPolicy;
  /** `uniform`, `slow-engine`, `restart`; `target` for `--target` engines (the fleet is what it is). */
  fleet: RolloutFleet | 'target';
  /** From firing the step to its last rollout's end (the slowest worker's), ms. */
  makespanMs: number;
  /** Rollouts' end times from the step's start, over those that came back whole (every turn answered). */
  p50Ms: number | null;
  p99Ms: number | null;
  /** Rollouts with a turn that failed after the SDK's retries. */
  failedRollouts: number;
  /**
   * `max(total work / total capacity, longest rollout)`, work = per turn TTFT + (tokens - 1) x ITL at the embedded
   * engines' settings, capacity = running slots, a half-speed engine counting half. Null with `--target` (its slots
   * and speed are not known here): `lowerBoundNote` says so.
   */
  lowerBoundMs: number | null;
  lowerBoundNote: string;
  /** `makespanMs / lowerBoundMs`: 1 is the limit no policy can beat. */
  makespanOverBound: number | null;
  /** The baseline's makespan at the same N over this one's (> 1: shorter), when the baseline ran. */
  speedupVsBaseline: number | null;
  /** Requests answered whole by each engine (by URL), and by whose count: the engines' own tallies when embedded. */
  answeredByEngine: Record<string, number>;
  answeredByEngineSource: 'fake-vllm tallies' | 'client';
  /** Each engine's per-engine cap in the SDK when the step ended (late binding: what it learned). */
  finalCaps: Record<string, number>;
  /** `--fleet restart`: which engine restarted, when, after how many answers; null when the step ended first. */
  restart: RestartRecord | null;
  /** Embedded engines: prompt tokens found in their prefix caches over those looked up, during the step. */
  prefixCacheHitRate: number | null;
}

/** The restart `--fleet restart` caused during a step. */
export interface RestartRecord {
  engine: string;
  /** From the step's start, ms. */
  atMs: number;
  /** Requests of the step the engines had answered whole when it was triggered. */
  afterAnswered: number;
  downMs: number;
  /** Requests in flight on the engine that the restart dropped (its own count). */
  dropped: number;
}

/** Which rollouts each of `workers` fires: contiguous shares of the step's indices, so the batch never depends on them. */
export function rolloutShares(rollouts: number, workers: number): Array<{ first: number; count: number }> {
  const shares: Array<{ first: number; count: number }> = [];
  let first = 0;
  for (let index = 0; index < workers; index++) {
    const count = Math.floor(rollouts / workers) + (index < rollouts % workers ? 1 : 0);
    shares.push({ first, count });
    first += count;
  }
  return shares;
}

/** Policies in the order they run at step `stepIndex`: rotated one place per step, so none always runs first. */
export function policyOrder(policies: readonly RolloutPolicy[], stepIndex: number): RolloutPolicy[] {
  return policies.map((_, index) => policies[(index + stepIndex) % policies.length]!);
}

/** The index of the engine `--fleet slow-engine` slows and `--fleet restart` restarts: the last. */
export const changedEngine = (engines: number): number => engines - 1;

/** Per-engine overrides for `--fleet slow-engine`: the last engine at half speed (TTFT and ITL doubled). */
export function slowEngineOverrides(options: SweepOptions): Array<{ itlMs?: number; ttftMs?: number }> {
  const overrides: Array<{ itlMs?: number; ttftMs?: number }> = Array.from(
    { length: options.fake.engines },
    () => ({}),
  );
  overrides[changedEngine(options.fake.engines)] = { itlMs: 2 * options.fake.itlMs, ttftMs: 2 * options.fake.ttftMs };
  return overrides;
}

/**
 * The step's lower bound from what the rollouts asked for (embedded engines: every answer is exactly `max_tokens`
 * long). A turn holds a slot for at least TTFT + (tokens - 1) x ITL (fake-vllm's first token comes at TTFT, then
 * one per step); prefill (0.02 ms per prompt token by default) and jitter are left out, and a restart's downtime is
 * not subtracted from the capacity, so the bound stays below what any policy can reach.
 */
export function rolloutLowerBoundMs(
  work: ReadonlyArray<{ turns: number; tokens: number }>,
  options: SweepOptions,
): number {
  const { ttftMs, itlMs, maxNumSeqs, engines } = options.fake;
  const speeds = options.fleet === 'slow-engine' ? engines - 0.5 : engines;
  let total = 0;
  let longest = 0;
  for (const { turns, tokens } of work) {
    const ms = turns * ttftMs + Math.max(0, tokens - turns) * itlMs;
    total += ms;
    longest = Math.max(longest, ms);
  }
  return Math.max(total / (maxNumSeqs * speeds), longest);
}

/** The `p`th percentile of `values` (nearest rank), or null when there are none. */
export function percentileOf(values: readonly number[], p: number): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

/** The workers' rollout results of one step, merged: completions, makespan, failures, work, caps, answers. */
export function mergeRolloutResults(results: readonly StepResult[]) {
  const completionsMs: number[] = [];
  const work: Array<{ turns: number; tokens: number }> = [];
  const answeredByEngine: Record<string, number> = {};
  const finalCaps: Record<string, number> = {};
  let makespanMs = 0;
  let failedRollouts = 0;
  for (const result of results) {
    const rollout = result.rollout;
    if (!rollout) continue;
    completionsMs.push(...rollout.completionsMs);
    work.push(...rollout.work);
    makespanMs = Math.max(makespanMs, rollout.makespanMs);
    failedRollouts += rollout.failedRollouts;
    for (const [engine, count] of Object.entries(rollout.answeredByEngine))
      answeredByEngine[engine] = (answeredByEngine[engine] ?? 0) + count;
    // With several workers each has its own caps: the sum is what the fleet was offered.
    for (const [engine, cap] of Object.entries(rollout.finalCaps)) finalCaps[engine] = (finalCaps[engine] ?? 0) + cap;
  }
  return { completionsMs, work, answeredByEngine, finalCaps, makespanMs, failedRollouts };
}

/**
 * `--fleet restart`: waits until the engines have answered `threshold` of the step's requests (their own tallies,
 * read every 50 ms), then restarts engine `engine` through fake-vllm's control plane. A trigger by count, not by
 * time, lands at the same point of the step however fast this machine runs. Resolves null when `done` is set first.
 */
export async function restartWhenAnswered(
  fake: FakeVllm,
  label: string,
  threshold: number,
  engine: number,
  downMs: number,
  startMs: number,
  done: { value: boolean },
): Promise<RestartRecord | null> {
  while (!done.value) {
    const stats = await fake.control.stats();
    const answered = stats.engines.reduce((total, entry) => total + (entry.tallies[label]?.answered ?? 0), 0);
    if (answered >= threshold && !done.value) {
      const droppedBefore = stats.engines[engine]?.droppedByRestart ?? 0;
      const atMs = performance.now() - startMs;
      await fake.control.restartEngine({ downMs }, engine);
      const after = await fake.control.stats();
      return {
        engine: fake.engines[engine]!.url,
        atMs,
        afterAnswered: answered,
        downMs,
        dropped: (after.engines[engine]?.droppedByRestart ?? droppedBefore) - droppedBefore,
      };
    }
    await abortableDelay(50, undefined);
  }
  return null;
}
