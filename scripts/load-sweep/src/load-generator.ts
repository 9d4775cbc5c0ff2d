import { createWriteStream, type WriteStream } from 'node:fs';
import { join } from 'node:path';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { TALLY_HEADER } from 'fake-vllm';
import { interArrivalMs } from './arrivals.js';
import type { WorkerProgress } from './live.js';
import type { SweepOptions } from './options.js';
import type { Outcome } from './outcome.js';
import { DirectSender, type RequestSender, SdkSender } from './request-senders.js';
import { expectedOutput, type PlannedRequest, RequestSource, rolloutSource } from './request-source.js';
import { outputTokenCount, StepAccumulator } from './step-accumulator.js';
import type { ClientTotals, InitMessage, RolloutStepMessage, StepResult } from './worker-protocol.js';

/**
 * A test-only seam: lets a test make the generator misbehave (lose an outcome, count one twice, send a request
 * twice) to prove that the sweep's reconciliation catches it. Production passes none.
 */
export interface LoadGeneratorSeam {
  /** Sends one request; the default calls `sendOnce` once. The outcome returned is the one counted. */
  send?(sendOnce: () => Promise<Outcome>, step: number | undefined): Promise<Outcome>;
  /** Counts a measured request's outcome; the default calls `count` once. */
  count?(count: () => void, step: number): void;
}

/** The tally label of a step's requests on fake-vllm (`x-fake-tally`). */
export const tallyLabel = (step: number): string => `step-${step}`;

const LOOP_RESOLUTION_MS = 5;

/**
 * One worker process's load: closed-loop slots or open-loop arrivals, sending through the SDK or plain undici,
 * accounting every request dispatched in a measure window to that window's {@link StepAccumulator}. It owns all its
 * state; {@link runWorker} (worker-host.ts) connects it to the coordinator.
 */
export class LoadGenerator {
  private readonly options: SweepOptions;
  /** The sender in use: the sweep's own, or during a rollout step that step's policy's fresh SDK client. */
  private sender: RequestSender;
  private readonly source: RequestSource;
  private readonly records: WriteStream;
  private readonly loopDelay = monitorEventLoopDelay({ resolution: LOOP_RESOLUTION_MS });
  private target = 0;
  private slots = 0;
  private stopping = false;
  private inFlight = 0;
  /** The window being measured: requests dispatched now count in it. */
  private measuring: StepAccumulator | undefined;
  private sampler: NodeJS.Timeout | undefined;
  /** Requests of each measured step not settled yet, and who waits for them. */
  private readonly unsettled = new Map<number, { count: number; drained?: () => void }>();
  private readonly totals: ClientTotals = {
    dispatched: 0,
    answered: 0,
    failed: 0,
    attempts: 0,
    staleRetries: 0,
    inFlight: 0,
  };
  /** Since the start, for the live view: outcomes as they arrive (before verification). */
  private readonly live = { completed: 0, failed: 0, outputTokens: 0 };
  private arrivalRate = 0;
  private arrivalCap = 0;
  private nextArrivalMs = 0;
  private arrivalTimer: NodeJS.Timeout | undefined;
  private arrivals = 0;

  constructor(
    private readonly init: InitMessage,
    private readonly seam: LoadGeneratorSeam = {},
  ) {
    this.options = init.options;
    this.source = new RequestSource(init.options, init.worker);
    this.records = createWriteStream(join(init.options.outDir, `requests-${init.worker}.jsonl`));
    this.sender =
      init.options.mode === 'sdk'
        ? new SdkSender(init.options, init.engines)
        : new DirectSender(init.options, init.engines);
  }

  /** Closed loop: runs `target` slots, adding new ones over `rampMs` (no start-up burst). */
  async setConcurrency(next: number, rampMs: number): Promise<void> {
    this.target = next;
    const toAdd = next - this.slots;
    if (toAdd <= 0) return;
    const started = this.slots;
    const batches = Math.max(1, Math.ceil(rampMs / 50));
    for (let batch = 0; batch < batches && !this.stopping; batch++) {
      const upTo = started + Math.ceil(((batch + 1) * toAdd) / batches);
      while (this.slots < upTo) void this.slot(this.slots++);
      await new Promise((resolve) => setTimeout(resolve, rampMs / batches));
    }
  }

  /** Open loop: arrivals at `rate` per second, never more than `maxInFlight` at once. */
  setRate(rate: number, maxInFlight: number): void {
    this.arrivalCap = maxInFlight;
    if (this.arrivalRate === 0) this.nextArrivalMs = performance.now();
    this.arrivalRate = rate;
    if (!this.arrivalTimer) this.pumpArrivals();
  }

  /** Opens the measure window of `step`: requests dispatched from now on count in it. */
  startMeasure(step: number): void {
    const accumulator = new StepAccumulator(step, this.options, this.init.verify, this.sender.stats());
    this.measuring = accumulator;
    this.unsettled.set(step, { count: 0 });
    this.sampler = setInterval(() => accumulator.sampleInFlight(this.inFlight), 100);
    this.loopDelay.reset();
    this.loopDelay.enable();
  }

  /** Closes the window of `step`, waits for every request dispatched in it to settle, and returns its result. */
  async endMeasure(step: number): Promise<StepResult> {
    const accumulator = this.measuring;
    if (accumulator === undefined || accumulator.step !== step) throw new Error(`step ${step} is not being measured`);
    this.measuring = undefined;
    clearInterval(this.sampler);
    // Open loop: arrivals stop while the step drains (the next step's `rate` starts them again); what is in flight
    // ends by its per-request deadline at the latest.
    this.arrivalRate = 0;
    clearTimeout(this.arrivalTimer);
    this.arrivalTimer = undefined;
    accumulator.closeWindow(this.loopLagP99Ms());
    this.loopDelay.disable();
    const pending = this.unsettled.get(step)!;
    if (pending.count > 0) await new Promise<void>((resolve) => (pending.drained = resolve));
    this.unsettled.delete(step);
    return accumulator.finish(this.init.worker, pending.count, this.sender.stats());
  }

  /**
   * `--scenario rollout-step`: fires this worker's rollouts of the step at once through a fresh SDK client with the
   * step's policy (learned caps start afresh, as a trainer's new client would), waits for the last, and returns the
   * step's result with `rollout`. A rollout of several turns sends each turn when the previous one is answered, its
   * prompt grown by that answer; a turn that fails fails the rollout and ends its session.
   */
  async rolloutStep(message: RolloutStepMessage): Promise<StepResult> {
    if (this.measuring)
      throw new Error(`rollout step ${message.step} started while step ${this.measuring.step} is measured`);
    const sender = new SdkSender(this.options, this.init.engines, message.policy);
    const previousSender = this.sender;
    this.sender = sender;
    try {
      const accumulator = new StepAccumulator(message.step, this.options, this.init.verify, sender.stats());
      this.measuring = accumulator;
      this.unsettled.set(message.step, { count: 0 });
      this.sampler = setInterval(() => accumulator.sampleInFlight(this.inFlight), 100);
      this.loopDelay.reset();
      this.loopDelay.enable();
      const completionsMs: number[] = [];
      const work: Array<{ turns: number; tokens: number }> = [];
      const answeredByEngine: Record<string, number> = {};
      let failedRollouts = 0;
      let makespanMs = 0;
      const { sessionTurns } = this.options;
      const start = performance.now();
      const rollout = async (index: number) => {
        const { source, firstToken } = rolloutSource(this.options, message.stepIndex, index, message.step);
        const sessionId = sessionTurns > 1 ? `rollout-${message.step}-${index}` : undefined;
        let previous: { request: PlannedRequest; outputTokenIds: number[] } | undefined;
        let ok = true;
        let turns = 0;
        let tokens = 0;
        while (ok && turns < sessionTurns && !this.stopping) {
          const request = source.next(previous, sessionId, firstToken);
          turns++;
          tokens += request.maxTokens;
          const result = await this.runOne(request, index);
          ok = result.ok;
          if (ok) answeredByEngine[result.engine] = (answeredByEngine[result.engine] ?? 0) + 1;
          previous = { request, outputTokenIds: result.tokenIds };
        }
        const endMs = performance.now() - start;
        makespanMs = Math.max(makespanMs, endMs);
        work.push({ turns, tokens });
        if (ok && turns === sessionTurns) completionsMs.push(endMs);
        else failedRollouts++;
      };
      await Promise.all(Array.from({ length: message.count }, (_, offset) => rollout(message.first + offset)));
      this.measuring = undefined;
      clearInterval(this.sampler);
      accumulator.closeWindow(this.loopLagP99Ms());
      this.loopDelay.disable();
      this.unsettled.delete(message.step);
      const stats = sender.stats();
      const result = accumulator.finish(this.init.worker, 0, stats);
      result.rollout = {
        completionsMs,
        makespanMs,
        failedRollouts,
        work,
        answeredByEngine,
        finalCaps: Object.fromEntries(stats.engines.map((engine) => [engine.endpoint, engine.maxConcurrency])),
      };
      return result;
    } finally {
      this.measuring = undefined;
      clearInterval(this.sampler);
      this.sender = previousSender;
      await sender.close();
    }
  }

  /** This worker's index. */
  get worker(): number {
    return this.init.worker;
  }

  /** What this worker counted since it started, every request whatever its step. */
  totalsNow(): ClientTotals {
    return { ...this.totals };
  }

  /** The live view's figures (cumulative since the start). */
  progress(cpuPercent: number): WorkerProgress {
    return {
      type: 'progress',
      worker: this.init.worker,
      inFlight: this.inFlight,
      ...this.live,
      retries: this.sender.stats()?.retries ?? 0,
      lagP99Ms: this.measuring && this.loopDelay.count > 0 ? this.loopLagP99Ms() : undefined,
      cpuPercent,
    };
  }

  /** Stops sending, closes the client (in-flight requests end) and the JSONL file. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.target = 0;
    clearInterval(this.sampler);
    clearTimeout(this.arrivalTimer);
    await this.sender.close();
    await new Promise<void>((resolve) => this.records.end(resolve));
  }

  /** Event-loop lag p99 (ms) since the measure window began. */
  private loopLagP99Ms(): number {
    // The histogram holds whole sampling intervals (idle p99 = the resolution, measured): subtract it.
    return Math.max(0, this.loopDelay.percentile(99) / 1e6 - LOOP_RESOLUTION_MS);
  }

  /**
   * Sends one request, accounting it to the window it was dispatched in. Returns whether it was answered whole (and,
   * when counted in a window with verification, verified), its output tokens (the expected ones when it failed, so
   * a session can go on) and the engine that served its last attempt.
   */
  private async runOne(
    request: PlannedRequest,
    engineIndex: number,
  ): Promise<{ ok: boolean; tokenIds: number[]; engine: string }> {
    const step = this.measuring;
    const pending = step ? this.unsettled.get(step.step) : undefined;
    this.totals.dispatched++;
    this.totals.inFlight++;
    this.inFlight++;
    if (step && pending) {
      step.dispatched();
      pending.count++;
    }
    const headers = step && this.init.tally ? { [TALLY_HEADER]: tallyLabel(step.step) } : undefined;
    const sendOnce = () => this.sender.send(request, engineIndex, headers);
    let outcome: Outcome | undefined;
    let ok = false;
    let engine = this.init.engines[engineIndex % this.init.engines.length]!;
    try {
      outcome = await (this.seam.send ? this.seam.send(sendOnce, step?.step) : sendOnce());
      this.countTotals(request, outcome);
      ok = outcome.ok;
      engine = outcome.stats?.engine ?? engine;
      if (step) {
        const count = () => {
          const record = step.record(request, outcome!, engine, this.init.worker);
          ok = record.ok;
          this.records.write(`${JSON.stringify(record)}\n`);
        };
        if (this.seam.count) this.seam.count(count, step.step);
        else count();
      }
    } finally {
      this.inFlight--;
      this.totals.inFlight--;
      if (pending && --pending.count === 0) pending.drained?.();
    }
    return {
      ok,
      tokenIds: outcome.tokenIds.length > 0 ? outcome.tokenIds : expectedOutput(request).tokenIds,
      engine,
    };
  }

  private countTotals(request: PlannedRequest, outcome: Outcome): void {
    const totals = this.totals;
    totals.attempts += outcome.attempts;
    totals.staleRetries += outcome.staleRetries;
    if (outcome.ok) {
      totals.answered++;
      this.live.completed++;
      this.live.outputTokens += outputTokenCount(this.options, request, outcome);
    } else {
      totals.failed++;
      this.live.failed++;
    }
  }

  private async slot(slotIndex: number): Promise<void> {
    let session = 0;
    const { sessionTurns } = this.options;
    while (!this.stopping && slotIndex < this.target) {
      const sessionId = sessionTurns > 1 ? `w${this.init.worker}-s${slotIndex}-${session++}` : undefined;
      let previous: { request: PlannedRequest; outputTokenIds: number[] } | undefined;
      for (let turn = 0; turn < sessionTurns && !this.stopping; turn++) {
        const request = this.source.next(previous, sessionId);
        previous = { request, outputTokenIds: (await this.runOne(request, slotIndex + turn)).tokenIds };
      }
    }
    this.slots--;
  }

  /** Fires every arrival that is due, against the absolute schedule; never more than `maxCatchUpMs` behind. */
  private pumpArrivals(): void {
    this.arrivalTimer = undefined;
    if (this.stopping || this.arrivalRate <= 0) return;
    const now = performance.now();
    const { options } = this;
    while (this.nextArrivalMs <= now) {
      const scheduled = this.nextArrivalMs;
      this.nextArrivalMs += interArrivalMs(options.arrival, this.arrivalRate, options.gammaShape, this.source.random);
      const step = this.measuring;
      const lag = now - scheduled;
      if (lag > options.maxCatchUpMs) {
        if (step) step.skippedLate++;
        continue;
      }
      if (this.inFlight >= this.arrivalCap) {
        if (step) step.capped++;
        continue;
      }
      if (step) step.histograms.recordMs('scheduleLag', lag);
      void this.runOne(this.source.next(undefined, undefined), this.arrivals++);
    }
    this.arrivalTimer = setTimeout(() => this.pumpArrivals(), Math.max(0, this.nextArrivalMs - performance.now()));
  }
}
