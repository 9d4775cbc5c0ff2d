import type { SweepOptions } from './options.js';

/** What one worker reports about itself every second (cumulative counters since it started). */
export interface WorkerProgress {
  type: 'progress';
  worker: number;
  inFlight: number;
  completed: number;
  failed: number;
  outputTokens: number;
  retries: number;
  /** Event-loop lag p99 of the step being measured so far (ms), or undefined outside the measure window. */
  lagP99Ms: number | undefined;
  /** CPU of the worker over the last report interval, percent of one core. */
  cpuPercent: number;
}

export type Phase = 'start' | 'ramp' | 'warmup' | 'measure' | 'drain';

/** The sweep as the live view sees it. */
export interface LiveState {
  stepIndex: number;
  steps: number;
  /** The step's target: concurrency (closed loop) or requests/s (open loop). */
  target: number;
  openLoop: boolean;
  /** `--scenario rollout-step`: the target is N rollouts fired at once. */
  rolloutStep?: boolean;
  phase: Phase;
  /** Seconds into this phase, and its planned length (0 = until done, e.g. drain). */
  phaseElapsedS: number;
  phaseLengthS: number;
  sweepElapsedS: number;
  /** Fraction of the whole sweep done, 0..1. */
  fraction: number;
  /** Sums over workers of the latest reports. */
  inFlight: number;
  completed: number;
  failed: number;
  retries: number;
  /** Rates over the last report interval. */
  requestsPerSecond: number;
  tokensPerSecond: number;
  /** Worst worker. */
  lagP99Ms: number | undefined;
  cpuPercentMax: number;
}

const PHASE_LABEL: Record<Phase, string> = {
  start: 'starting workers',
  ramp: 'ramping',
  warmup: 'warming up',
  measure: 'measuring',
  drain: 'draining',
};

const int = (value: number) => Math.round(value).toLocaleString('en-US');
const clock = (seconds: number) => `${Math.floor(seconds / 60)}:${String(Math.floor(seconds % 60)).padStart(2, '0')}`;

/** A text progress bar of `width` cells. */
export function bar(fraction: number, width = 24): string {
  const clamped = Math.min(1, Math.max(0, Number.isFinite(fraction) ? fraction : 0));
  const full = Math.round(clamped * width);
  return `[${'#'.repeat(full)}${'-'.repeat(width - full)}] ${String(Math.floor(clamped * 100)).padStart(3)}%`;
}

/** The phase part of a line: `measuring 6/10 s`, `draining 2 s`. */
function phaseText(state: LiveState): string {
  const label = PHASE_LABEL[state.phase];
  return state.phaseLengthS > 0
    ? `${label} ${Math.min(state.phaseElapsedS, state.phaseLengthS).toFixed(0)}/${state.phaseLengthS.toFixed(0)} s`
    : `${label} ${state.phaseElapsedS.toFixed(0)} s`;
}

function figures(state: LiveState): string {
  const lag = state.lagP99Ms === undefined ? '-' : `${state.lagP99Ms.toFixed(1)} ms`;
  return `in flight ${int(state.inFlight)} | ${int(state.requestsPerSecond)} req/s ${int(state.tokensPerSecond)} tok/s | ok ${int(state.completed)} failed ${int(state.failed)} retries ${int(state.retries)} | loop lag p99 ${lag} CPU ${state.cpuPercentMax.toFixed(0)}%`;
}

/** The two lines a terminal shows, redrawn in place. */
export function renderLive(state: LiveState): string[] {
  const target = state.openLoop
    ? `rate ${int(state.target)}/s`
    : `${state.rolloutStep ? 'N' : 'C'}=${int(state.target)}`;
  return [
    `${bar(state.fraction)} step ${state.stepIndex + 1}/${state.steps} ${target} ${phaseText(state)}  elapsed ${clock(state.sweepElapsedS)}`,
    `  ${figures(state)}`,
  ];
}

/** One self-contained line for logs and CI. */
export function renderPlain(state: LiveState): string {
  const target = state.openLoop ? `rate=${state.target}/s` : `${state.rolloutStep ? 'N' : 'C'}=${state.target}`;
  return `[${clock(state.sweepElapsedS)}] ${Math.floor(state.fraction * 100)}% step ${state.stepIndex + 1}/${state.steps} ${target} ${phaseText(state)}: ${figures(state)}`;
}

/** Turns the workers' per-second reports and the coordinator's phases into {@link LiveState}s, twice a second. */
export class ProgressTracker {
  private readonly latest = new Map<number, WorkerProgress>();
  /** (time, completed, tokens) samples of the last few seconds, for rates. */
  private readonly samples: Array<[number, number, number]> = [];
  private readonly startedAtMs = performance.now();
  private readonly stepLengthMs: number;
  private state: Pick<LiveState, 'stepIndex' | 'target' | 'phase'> & { phaseStartMs: number; phaseLengthMs: number } = {
    stepIndex: 0,
    target: 0,
    phase: 'start',
    phaseStartMs: performance.now(),
    phaseLengthMs: 0,
  };
  private readonly timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly options: SweepOptions,
    private readonly onProgress: ((state: LiveState) => void) | undefined,
  ) {
    this.stepLengthMs = options.rampMs + options.warmupMs + options.measureMs;
    if (onProgress) {
      this.timer = setInterval(() => onProgress(this.snapshot()), 500);
      this.timer.unref();
    }
  }

  report(progress: WorkerProgress): void {
    this.latest.set(progress.worker, progress);
  }

  phase(stepIndex: number, target: number, phase: Phase, lengthMs: number): void {
    this.state = { stepIndex, target, phase, phaseStartMs: performance.now(), phaseLengthMs: lengthMs };
    this.onProgress?.(this.snapshot());
  }

  stop(): void {
    clearInterval(this.timer);
  }

  snapshot(): LiveState {
    const now = performance.now();
    const reports = [...this.latest.values()];
    const sum = (pick: (report: WorkerProgress) => number) =>
      reports.reduce((total, report) => total + pick(report), 0);
    const completed = sum((report) => report.completed);
    const tokens = sum((report) => report.outputTokens);
    this.samples.push([now, completed, tokens]);
    while (this.samples.length > 2 && now - this.samples[0]![0] > 3000) this.samples.shift();
    const [then, completedThen, tokensThen] = this.samples[0]!;
    const seconds = (now - then) / 1000;
    const { stepIndex, phase, phaseStartMs, phaseLengthMs } = this.state;
    const phaseElapsedMs = now - phaseStartMs;
    const offsetMs = {
      start: 0,
      ramp: 0,
      warmup: this.options.rampMs,
      measure: this.options.rampMs + this.options.warmupMs,
    };
    // A phase can outlast its plan (a ramp waits for every worker): clamp, so the fraction never goes back.
    const intoStep =
      phase === 'drain'
        ? this.stepLengthMs
        : offsetMs[phase] + (phase === 'start' ? 0 : Math.min(phaseElapsedMs, phaseLengthMs));
    const lags = reports.map((report) => report.lagP99Ms).filter((lag): lag is number => lag !== undefined);
    return {
      stepIndex,
      steps: this.options.steps.length,
      target: this.state.target,
      openLoop: this.options.arrival !== 'closed',
      rolloutStep: this.options.scenario === 'rollout-step',
      phase,
      phaseElapsedS: phaseElapsedMs / 1000,
      phaseLengthS: phaseLengthMs / 1000,
      sweepElapsedS: (now - this.startedAtMs) / 1000,
      fraction:
        (stepIndex + Math.min(0.99, intoStep / Math.max(1, this.stepLengthMs))) /
        Math.max(1, this.options.steps.length),
      inFlight: sum((report) => report.inFlight),
      completed,
      failed: sum((report) => report.failed),
      retries: sum((report) => report.retries),
      requestsPerSecond: seconds > 0 ? (completed - completedThen) / seconds : 0,
      tokensPerSecond: seconds > 0 ? (tokens - tokensThen) / seconds : 0,
      lagP99Ms: lags.length > 0 ? Math.max(...lags) : undefined,
      cpuPercentMax: Math.max(0, ...reports.map((report) => report.cpuPercent)),
    };
  }
}

/**
 * Draws the live view. On a terminal (and not in CI) it keeps two lines at the bottom, redrawn in place, with log
 * lines printed above them; otherwise it prints plain lines: every log line, plus a progress line every
 * `plainEveryS` seconds.
 */
export class LiveView {
  private drawn = 0;
  private lastPlainAtS = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly out: { write(text: string): unknown; isTTY?: boolean; columns?: number | undefined },
    private readonly interactive = out.isTTY === true && !process.env.CI,
    private readonly plainEveryS = 5,
  ) {}

  /** A line that stays (step results, notes). */
  log(line: string): void {
    this.clear();
    this.out.write(`${line}\n`);
  }

  update(state: LiveState): void {
    if (this.interactive) {
      this.clear();
      // A line longer than the terminal wraps, and the redraw would then erase too little: cut it to fit.
      const width = Math.max(20, (this.out.columns ?? 200) - 1);
      const lines = renderLive(state).map((line) => line.slice(0, width));
      this.out.write(`${lines.join('\n')}\n`);
      this.drawn = lines.length;
      return;
    }
    if (state.sweepElapsedS - this.lastPlainAtS < this.plainEveryS) return;
    this.lastPlainAtS = state.sweepElapsedS;
    this.out.write(`${renderPlain(state)}\n`);
  }

  /** Removes the live lines (before a log line, and at the end). */
  clear(): void {
    if (this.drawn === 0) return;
    // Cursor up one line and erase it, once per drawn line.
    this.out.write('\x1b[1A\x1b[2K'.repeat(this.drawn));
    this.drawn = 0;
  }
}
