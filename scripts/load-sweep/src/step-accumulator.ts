import { performance } from 'node:perf_hooks';
import type { ClientStats } from 'remote-inference-client';
import { MetricHistograms } from './histograms.js';
import type { SweepOptions } from './options.js';
import type { Outcome } from './outcome.js';
import { expectedOutput, type PlannedRequest } from './request-source.js';
import { requestMeetsSlo, type SloThreshold, sloThresholds } from './slo.js';
import type { StepResult } from './worker-protocol.js';

/** One measured request as written to `requests-<worker>.jsonl`. */
export interface RequestRecord {
  step: number;
  worker: number;
  ok: boolean;
  error: string | undefined;
  engine: string;
  ttftMs: number | undefined;
  e2eMs: number;
  tokens: number | undefined;
  queueMs: number | undefined;
  connectMs: number | undefined;
  serverTtftMs: number | undefined;
  attempts: number;
}

/** Failed TCP connects over every engine's pool (their attempts never reached an engine). */
const connectErrors = (stats: ClientStats): number =>
  stats.engines.reduce((total, engine) => total + engine.connections.connectErrors, 0);

/** Output tokens of a completed request (text endpoints are not tokenized here: the requested length). */
export function outputTokenCount(options: SweepOptions, request: PlannedRequest, outcome: Outcome): number {
  return options.endpoint === 'generate' ? outcome.tokenIds.length : request.maxTokens;
}

/**
 * One worker's accounting of one measure window. `sent` is counted by {@link dispatched} when a request leaves the
 * generator, outcomes by {@link record} when they arrive: two places, so a request whose outcome is lost (or
 * counted twice) shows as a difference instead of vanishing from both.
 */
export class StepAccumulator {
  readonly histograms = new MetricHistograms();
  sent = 0;
  completed = 0;
  failed = 0;
  answered = 0;
  attempts = 0;
  requestStaleRetries = 0;
  verified = 0;
  mismatched = 0;
  outputTokens = 0;
  goodput = 0;
  capped = 0;
  skippedLate = 0;
  readonly errors: Record<string, number> = {};
  readonly tokensBySecond: Record<string, number> = {};
  private inFlightSum = 0;
  private inFlightSamples = 0;
  private readonly cpuStart = process.cpuUsage();
  private readonly wallStartMs = performance.now();
  private cpuPercent = 0;
  private lagP99Ms = 0;
  private readonly slo: SloThreshold[];

  constructor(
    readonly step: number,
    private readonly options: SweepOptions,
    private readonly verify: boolean,
    private readonly clientStart: ClientStats | undefined,
  ) {
    this.slo = sloThresholds(options.slo);
  }

  /** A request of this window left the generator. */
  dispatched(): void {
    this.sent++;
  }

  /** Samples the generator's in-flight count (for the mean achieved concurrency). */
  sampleInFlight(inFlight: number): void {
    this.inFlightSum += inFlight;
    this.inFlightSamples++;
  }

  /** Closes the window's CPU and event-loop figures (the drain that follows is not measured). */
  closeWindow(lagP99Ms: number): void {
    const usage = process.cpuUsage(this.cpuStart);
    this.cpuPercent = ((usage.user + usage.system) / 1000 / (performance.now() - this.wallStartMs)) * 100;
    this.lagP99Ms = lagP99Ms;
  }

  /** Counts one request's outcome (verifying it when asked); returns its line for the JSONL file. */
  record(request: PlannedRequest, outcome: Outcome, engine: string, worker: number): RequestRecord {
    let ok = outcome.ok;
    let kind = outcome.errorKind;
    this.attempts += outcome.attempts;
    this.requestStaleRetries += outcome.staleRetries;
    if (ok) this.answered++;
    if (ok && this.verify) {
      const expected = expectedOutput(request);
      const matches =
        this.options.endpoint === 'generate'
          ? outcome.tokenIds.join() === expected.tokenIds.join()
          : outcome.text === expected.text;
      if (matches) this.verified++;
      else {
        this.mismatched++;
        ok = false;
        kind = 'token_mismatch';
      }
    }
    if (ok) this.recordSuccess(request, outcome);
    else {
      this.failed++;
      this.errors[kind ?? 'other'] = (this.errors[kind ?? 'other'] ?? 0) + 1;
    }
    const stats = outcome.stats;
    return {
      step: this.step,
      worker,
      ok,
      error: ok ? undefined : kind,
      engine,
      ttftMs: outcome.ttftMs,
      e2eMs: outcome.e2eMs,
      tokens: outcome.tokenIds.length || undefined,
      queueMs: stats?.queueMs,
      connectMs: stats?.connectMs,
      serverTtftMs: stats?.serverTtftMs,
      attempts: outcome.attempts,
    };
  }

  private recordSuccess(request: PlannedRequest, outcome: Outcome): void {
    this.completed++;
    const tokens = outputTokenCount(this.options, request, outcome);
    this.outputTokens += tokens;
    const second = String(Math.floor(Date.now() / 1000));
    this.tokensBySecond[second] = (this.tokensBySecond[second] ?? 0) + tokens;
    const h = this.histograms;
    const tpotMs =
      tokens > 1 && outcome.ttftMs !== undefined ? (outcome.e2eMs - outcome.ttftMs) / (tokens - 1) : undefined;
    if (outcome.ttftMs !== undefined) h.recordMs('ttft', outcome.ttftMs);
    for (const gap of outcome.gapsMs) h.recordMs('itl', gap);
    if (tpotMs !== undefined) h.recordMs('tpot', tpotMs);
    h.recordMs('e2e', outcome.e2eMs);
    const stats = outcome.stats;
    if (stats) {
      h.recordMs('queueWait', stats.queueMs);
      if (stats.connectMs !== undefined) h.recordMs('connect', stats.connectMs);
      if (stats.serverQueueMs !== undefined) h.recordMs('serverQueue', stats.serverQueueMs);
      if (outcome.ttftMs !== undefined && stats.serverTtftMs !== undefined)
        h.recordMs('clientAdded', outcome.ttftMs - stats.serverTtftMs);
    }
    const latency = {
      ttftMs: outcome.ttftMs,
      maxItlMs: outcome.gapsMs.length > 0 ? Math.max(...outcome.gapsMs) : undefined,
      tpotMs,
      e2eMs: outcome.e2eMs,
    };
    if (requestMeetsSlo(latency, this.slo)) this.goodput++;
  }

  /** The step's result; `unsettled` = requests of the window still in flight. Frees the histograms. */
  finish(worker: number, unsettled: number, clientEnd: ClientStats | undefined): StepResult {
    const start = this.clientStart;
    const delta = (pick: (stats: ClientStats) => number) => (clientEnd && start ? pick(clientEnd) - pick(start) : 0);
    const result: StepResult = {
      type: 'step-result',
      step: this.step,
      worker,
      histograms: this.histograms.encode(),
      sent: this.sent,
      completed: this.completed,
      failed: this.failed,
      answered: this.answered,
      attempts: this.attempts,
      requestStaleRetries: this.requestStaleRetries,
      unsettled,
      verified: this.verified,
      mismatched: this.mismatched,
      outputTokens: this.outputTokens,
      goodput: this.goodput,
      errors: this.errors,
      tokensBySecond: this.tokensBySecond,
      meanInFlight: this.inFlightSamples > 0 ? this.inFlightSum / this.inFlightSamples : 0,
      cpuPercent: this.cpuPercent,
      eventLoopLagP99Ms: this.lagP99Ms,
      retries: delta((stats) => stats.retries),
      staleRetries: delta((stats) => stats.staleRetries),
      resumes: delta((stats) => stats.resumes),
      connectionsOpened: delta((stats) => stats.connections.opened),
      connectionsReused: delta((stats) => stats.connections.reused),
      capped: this.capped,
      skippedLate: this.skippedLate,
      connectErrors: delta(connectErrors),
    };
    this.histograms.destroy();
    return result;
  }
}
