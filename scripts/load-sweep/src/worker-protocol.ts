import type { WorkerProgress } from './live.js';
import type { RolloutPolicy, SweepOptions } from './options.js';

/**
 * The coordinator <-> worker IPC protocol, in one place: every message each side sends, and guards that check a
 * message's shape before it is trusted (IPC carries whatever a process sends).
 */

/** What the worker does with the requests it dispatches in a measure window. */
export interface InitMessage {
  type: 'init';
  options: SweepOptions;
  engines: string[];
  worker: number;
  /** Check each answer against fake-vllm's deterministic output (embedded engines only). */
  verify: boolean;
  /** Label the window's requests with fake-vllm's `x-fake-tally` so the engines count them (embedded engines only). */
  tally: boolean;
}

/** Coordinator -> worker. */
export type ToWorker =
  | InitMessage
  | { type: 'concurrency'; target: number; rampMs: number }
  | { type: 'rate'; rate: number; maxInFlight: number }
  | { type: 'measure-start'; step: number }
  | { type: 'measure-end'; step: number }
  | RolloutStepMessage
  /** Asks for {@link ClientTotals} now (answered with a `totals` message). */
  | { type: 'totals' }
  | { type: 'stop' };

/**
 * `--scenario rollout-step`: fire rollouts `first` .. `first + count - 1` of a step of `rollouts` at once through a
 * fresh SDK client with `policy`, wait for the last, and answer with a {@link StepResult} carrying `rollout`.
 */
export interface RolloutStepMessage {
  type: 'rollout-step';
  /** The run: its tally label on fake-vllm and its row (one per step and policy). */
  step: number;
  /** The step's index in `--steps`: with the rollout's index, it picks the rollout's lengths and prompt. */
  stepIndex: number;
  rollouts: number;
  first: number;
  count: number;
  policy: RolloutPolicy;
}

/** A worker's view of one rollout step (its share of the rollouts). */
export interface RolloutResult {
  /** From the worker's start of the step to each rollout's end (its last turn answered whole), for those that were. */
  completionsMs: number[];
  /** From the worker's start of the step to its last rollout's end, success or not. */
  makespanMs: number;
  /** Rollouts with a turn that failed (the rest of that session was not sent). */
  failedRollouts: number;
  /** Per rollout of this worker: turns and output tokens asked for (`max_tokens`), for the step's lower bound. */
  work: Array<{ turns: number; tokens: number }>;
  /** Requests answered whole, by the engine that answered (the SDK's `RequestStats.engine`). */
  answeredByEngine: Record<string, number>;
  /** The SDK's per-engine caps at the end (the learned ones with late binding). */
  finalCaps: Record<string, number>;
}

/**
 * What one worker counted since it started, every request whatever its step: for reconciling against engine
 * counters that cannot be attributed to a step (vLLM's Prometheus counters).
 */
export interface ClientTotals {
  /** Requests that left the generator. */
  dispatched: number;
  /** Whole successful responses received (before verification). */
  answered: number;
  /** Requests that ended any other way. */
  failed: number;
  /** HTTP attempts of the requests that ended (retries and resumes included). */
  attempts: number;
  staleRetries: number;
  /** Dispatched and not ended yet. */
  inFlight: number;
}

/** A worker's accounting of one step: the requests dispatched in its measure window, counted where they happen. */
export interface StepResult {
  type: 'step-result';
  step: number;
  worker: number;
  histograms: Record<string, string>;
  /** Requests dispatched in the window, counted when they left the generator. */
  sent: number;
  /** Outcomes counted for them (`completed` + `failed`), each where the outcome arrived. */
  completed: number;
  failed: number;
  /** Whole successful responses (before verification: `completed` + token mismatches). */
  answered: number;
  /** HTTP attempts of the window's requests whose outcome was counted, retries and resumes included. */
  attempts: number;
  /** Re-sends of those requests on a reused socket that died before any byte (may not have reached an engine). */
  requestStaleRetries: number;
  /** Requests of the window not settled when the step was reported. */
  unsettled: number;
  verified: number;
  mismatched: number;
  outputTokens: number;
  goodput: number;
  errors: Record<string, number>;
  tokensBySecond: Record<string, number>;
  meanInFlight: number;
  cpuPercent: number;
  eventLoopLagP99Ms: number;
  /** The SDK's counters over the window (every request in flight then, not only the window's). */
  retries: number;
  staleRetries: number;
  resumes: number;
  connectionsOpened: number;
  connectionsReused: number;
  /** Open loop: arrivals not sent because `maxConcurrency` was reached. */
  capped: number;
  /** Open loop: arrivals skipped because they were more than `maxCatchUpMs` late (the generator fell behind). */
  skippedLate: number;
  /**
   * TCP connects that failed over the window (the SDK's per-engine `connectErrors`): an attempt on such a connection
   * never reached an engine (refused by one restarting, say). Absent from direct mode (0).
   */
  connectErrors?: number;
  /** `--scenario rollout-step` only. */
  rollout?: RolloutResult;
}

/** Worker -> coordinator. */
export type FromWorker =
  | { type: 'ready' }
  | { type: 'ramped' }
  | { type: 'totals'; worker: number; totals: ClientTotals }
  | WorkerProgress
  | StepResult;

const TO_WORKER_TYPES = new Set([
  'init',
  'concurrency',
  'rate',
  'measure-start',
  'measure-end',
  'rollout-step',
  'totals',
  'stop',
]);
const FROM_WORKER_TYPES = new Set(['ready', 'ramped', 'totals', 'progress', 'step-result']);

const typeOf = (message: unknown): unknown =>
  typeof message === 'object' && message !== null ? (message as { type?: unknown }).type : undefined;

/** Whether `message` is a {@link ToWorker} (by its `type`). */
export function isToWorker(message: unknown): message is ToWorker {
  return TO_WORKER_TYPES.has(typeOf(message) as string);
}

/** Whether `message` is a {@link FromWorker} (by its `type`). */
export function isFromWorker(message: unknown): message is FromWorker {
  return FROM_WORKER_TYPES.has(typeOf(message) as string);
}

/** The {@link FromWorker} message of type `type`. */
export type FromWorkerOf<T extends FromWorker['type']> = Extract<FromWorker, { type: T }>;
