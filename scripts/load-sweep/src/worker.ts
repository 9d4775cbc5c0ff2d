import { createWriteStream, type WriteStream } from 'node:fs';
import { join } from 'node:path';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { isInferenceError, RemoteInferenceClient, type RequestStats } from 'remote-inference-client';
import { Agent, request as undiciRequest } from 'undici';
import { interArrivalMs } from './arrivals.js';
import { MetricHistograms } from './histograms.js';
import type { WorkerProgress } from './live.js';
import type { SweepOptions } from './options.js';
import { expectedOutput, type PlannedRequest, RequestSource } from './request-source.js';

/** Messages between the coordinator and a worker process. */
export type ToWorker =
  | { type: 'init'; options: SweepOptions; engines: string[]; worker: number; verify: boolean }
  | { type: 'concurrency'; target: number; rampMs: number }
  | { type: 'rate'; rate: number; maxInFlight: number }
  | { type: 'measure-start'; step: number }
  | { type: 'measure-end'; step: number }
  | { type: 'stop' };

/** A worker's accounting of one step: every request started in the window, finished. */
export interface StepResult {
  type: 'step-result';
  step: number;
  worker: number;
  histograms: Record<string, string>;
  sent: number;
  completed: number;
  failed: number;
  verified: number;
  mismatched: number;
  outputTokens: number;
  goodput: number;
  errors: Record<string, number>;
  tokensBySecond: Record<string, number>;
  meanInFlight: number;
  cpuPercent: number;
  eventLoopLagP99Ms: number;
  retries: number;
  staleRetries: number;
  resumes: number;
  connectionsOpened: number;
  connectionsReused: number;
  /** Open loop: arrivals not sent because `maxConcurrency` was reached. */
  capped: number;
  /** Open loop: arrivals skipped because they were more than `maxCatchUpMs` late (the generator fell behind). */
  skippedLate: number;
}

interface Outcome {
  ok: boolean;
  errorKind: string | undefined;
  tokenIds: number[];
  text: string;
  ttftMs: number | undefined;
  gapsMs: number[];
  e2eMs: number;
  stats: RequestStats | undefined;
}

/** Error kind for the report: HTTP status, reset, timeout, EADDRNOTAVAIL, EMFILE, parse, ... */
export function errorKind(error: unknown): string {
  if (!isInferenceError(error)) return 'other';
  switch (error.code) {
    case 'ERR_HTTP_STATUS':
      return `http_${error.status}`;
    case 'ERR_CONNECTION': {
      const system = (error as { systemCode?: string }).systemCode;
      return system === 'ECONNREFUSED' ? 'refused' : 'reset';
    }
    case 'ERR_TIMEOUT':
      return `timeout_${(error as { phase?: string }).phase}`;
    case 'ERR_PORTS_EXHAUSTED':
      return 'EADDRNOTAVAIL';
    case 'ERR_TOO_MANY_OPEN_FILES':
      return 'EMFILE';
    case 'ERR_STREAM_PARSE':
      return 'parse';
    case 'ERR_RETRIES_EXHAUSTED': {
      const errors = (error as { errors?: unknown[] }).errors ?? [];
      return `retries_exhausted:${errorKind(errors.at(-1))}`;
    }
    default:
      return error.code.replace(/^ERR_/, '').toLowerCase();
  }
}

let options: SweepOptions;
let workerIndex = 0;
let verify = false;
let client: RemoteInferenceClient | undefined;
let direct: Agent | undefined;
let engines: string[] = [];
let source: RequestSource;
let records: WriteStream;
let target = 0;
let slots = 0;
let stopping = false;
let measuringStep = -1;
let inFlight = 0;
let taggedInFlight = 0;
let drainResolve: (() => void) | undefined;
let current: StepAccumulator | undefined;
/** Counters since the worker started, for the live view (the measured accounting is {@link StepAccumulator}). */
const totals = { completed: 0, failed: 0, outputTokens: 0 };
let progressTimer: NodeJS.Timeout | undefined;
const LOOP_RESOLUTION_MS = 5;
const loopDelay = monitorEventLoopDelay({ resolution: LOOP_RESOLUTION_MS });

class StepAccumulator {
  readonly histograms = new MetricHistograms();
  sent = 0;
  completed = 0;
  failed = 0;
  verified = 0;
  mismatched = 0;
  outputTokens = 0;
  goodput = 0;
  capped = 0;
  skippedLate = 0;
  readonly errors: Record<string, number> = {};
  readonly tokensBySecond: Record<string, number> = {};
  inFlightSum = 0;
  inFlightSamples = 0;
  cpu = process.cpuUsage();
  wallStart = performance.now();
  cpuPercent = 0;
  lagP99Ms = 0;
  readonly clientStart = client?.stats();
  sampler = setInterval(() => {
    this.inFlightSum += inFlight;
    this.inFlightSamples++;
  }, 100);
  constructor(readonly step: number) {}
}

function meetsSlo(outcome: Outcome): boolean {
  for (const [key, limit] of Object.entries(options.slo)) {
    const metric = key.split('_')[0];
    const value =
      metric === 'ttft'
        ? outcome.ttftMs
        : metric === 'e2e'
          ? outcome.e2eMs
          : metric === 'itl'
            ? Math.max(0, ...outcome.gapsMs)
            : undefined;
    if (value !== undefined && value > limit) return false;
  }
  return true;
}

async function sendSdk(request: PlannedRequest): Promise<Outcome> {
  const started = performance.now();
  const holder: { stats?: RequestStats } = {};
  const requestOptions = { tag: holder, ...(request.sessionId ? { sessionId: request.sessionId } : {}) };
  const sampling = { max_tokens: request.maxTokens, seed: request.seed };
  const tokenIds: number[] = [];
  let text = '';
  try {
    if (options.endpoint === 'generate') {
      const body = {
        token_ids: request.promptTokenIds,
        sampling_params: sampling,
        ...(options.model ? { model: options.model } : {}),
      };
      if (options.stream) {
        const stream = await client!.generate({ ...body, stream: true }, { ...requestOptions, resume: options.resume });
        for await (const chunk of stream) tokenIds.push(...(chunk.choices[0]?.token_ids ?? []));
      } else {
        tokenIds.push(...((await client!.generate(body, requestOptions)).choices[0]?.token_ids ?? []));
      }
    } else if (options.endpoint === 'completions') {
      const body = { prompt: request.promptTokenIds, max_tokens: request.maxTokens, seed: request.seed };
      if (options.stream) {
        for await (const chunk of await client!.completions.create({ ...body, stream: true }, requestOptions))
          text += chunk.choices[0]?.text ?? '';
      } else {
        text = (await client!.completions.create(body, requestOptions)).choices[0]?.text ?? '';
      }
    } else {
      const body = { messages: request.messages!, max_tokens: request.maxTokens, seed: request.seed };
      if (options.stream) {
        for await (const chunk of await client!.chat.completions.create({ ...body, stream: true }, requestOptions))
          text += String(chunk.choices[0]?.delta.content ?? '');
      } else {
        text = String((await client!.chat.completions.create(body, requestOptions)).choices[0]?.message.content ?? '');
      }
    }
    const stats = holder.stats;
    return {
      ok: true,
      errorKind: undefined,
      tokenIds,
      text,
      ttftMs: stats?.ttftMs,
      gapsMs: stats?.interTokenGapsMs ?? [],
      e2eMs: performance.now() - started,
      stats,
    };
  } catch (error) {
    return {
      ok: false,
      errorKind: errorKind(error),
      tokenIds,
      text,
      ttftMs: holder.stats?.ttftMs,
      gapsMs: [],
      e2eMs: performance.now() - started,
      stats: holder.stats,
    };
  }
}

/** Plain undici with a stock Agent: no limits, routing, retries or resume; the baseline of the SDK's own cost. */
async function sendDirect(request: PlannedRequest, engine: string): Promise<Outcome> {
  const started = performance.now();
  const body =
    options.endpoint === 'generate'
      ? {
          token_ids: request.promptTokenIds,
          sampling_params: { max_tokens: request.maxTokens, seed: request.seed },
          stream: options.stream,
        }
      : options.endpoint === 'completions'
        ? { prompt: request.promptTokenIds, max_tokens: request.maxTokens, seed: request.seed, stream: options.stream }
        : { messages: request.messages, max_tokens: request.maxTokens, seed: request.seed, stream: options.stream };
  const path =
    options.endpoint === 'generate'
      ? '/inference/v1/generate'
      : options.endpoint === 'completions'
        ? '/v1/completions'
        : '/v1/chat/completions';
  const tokenIds: number[] = [];
  let text = '';
  let ttftMs: number | undefined;
  const gapsMs: number[] = [];
  let last = 0;
  const outcome = (ok: boolean, errorKind: string | undefined): Outcome => ({
    ok,
    errorKind,
    tokenIds,
    text,
    ttftMs,
    gapsMs,
    e2eMs: performance.now() - started,
    stats: undefined,
  });
  try {
    const response = await undiciRequest(`${engine}${path}`, {
      method: 'POST',
      dispatcher: direct!,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
      headersTimeout: 0,
      bodyTimeout: 0,
    });
    if (response.statusCode !== 200) {
      await response.body.text();
      return outcome(false, `http_${response.statusCode}`);
    }
    const take = (payload: Record<string, unknown>) => {
      const choice = (payload.choices as Array<Record<string, unknown>>)[0];
      if (!choice) return;
      tokenIds.push(...((choice.token_ids as number[] | undefined) ?? []));
      text +=
        (choice.text as string | undefined) ??
        ((choice.delta as { content?: string } | undefined)?.content ?? '') +
          ((choice.message as { content?: string } | undefined)?.content ?? '');
    };
    if (!options.stream) {
      take((await response.body.json()) as Record<string, unknown>);
    } else {
      let buffer = '';
      for await (const chunk of response.body) {
        const now = performance.now();
        buffer += chunk.toString();
        let end = buffer.indexOf('\n\n');
        while (end !== -1) {
          const event = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          end = buffer.indexOf('\n\n');
          if (!event.startsWith('data: ') || event === 'data: [DONE]') continue;
          if (ttftMs === undefined) ttftMs = now - started;
          else gapsMs.push(now - last);
          last = now;
          take(JSON.parse(event.slice(6)) as Record<string, unknown>);
        }
      }
    }
    return outcome(true, undefined);
  } catch (error) {
    const code = (error as { code?: string }).code ?? 'other';
    return outcome(false, code);
  }
}

/** Output tokens of a completed request (text endpoints are not tokenized here: the requested length). */
function outputTokenCount(request: PlannedRequest, outcome: Outcome): number {
  return options.endpoint === 'generate' ? outcome.tokenIds.length : request.maxTokens;
}

function account(step: StepAccumulator, request: PlannedRequest, outcome: Outcome, engine: string): void {
  step.sent++;
  let ok = outcome.ok;
  let kind = outcome.errorKind;
  if (ok && verify) {
    const expected = expectedOutput(request);
    const matches =
      options.endpoint === 'generate'
        ? outcome.tokenIds.join() === expected.tokenIds.join()
        : outcome.text === expected.text;
    if (matches) step.verified++;
    else {
      step.mismatched++;
      ok = false;
      kind = 'token_mismatch';
    }
  }
  if (ok) {
    step.completed++;
    const tokens = outputTokenCount(request, outcome);
    step.outputTokens += tokens;
    const second = String(Math.floor(Date.now() / 1000));
    step.tokensBySecond[second] = (step.tokensBySecond[second] ?? 0) + tokens;
    const h = step.histograms;
    if (outcome.ttftMs !== undefined) h.recordMs('ttft', outcome.ttftMs);
    for (const gap of outcome.gapsMs) h.recordMs('itl', gap);
    if (tokens > 1 && outcome.ttftMs !== undefined) h.recordMs('tpot', (outcome.e2eMs - outcome.ttftMs) / (tokens - 1));
    h.recordMs('e2e', outcome.e2eMs);
    const stats = outcome.stats;
    if (stats) {
      h.recordMs('queueWait', stats.queueMs);
      if (stats.connectMs !== undefined) h.recordMs('connect', stats.connectMs);
      if (stats.serverQueueMs !== undefined) h.recordMs('serverQueue', stats.serverQueueMs);
      if (outcome.ttftMs !== undefined && stats.serverTtftMs !== undefined)
        h.recordMs('clientAdded', outcome.ttftMs - stats.serverTtftMs);
    }
    if (meetsSlo(outcome)) step.goodput++;
  } else {
    step.failed++;
    step.errors[kind ?? 'other'] = (step.errors[kind ?? 'other'] ?? 0) + 1;
  }
  records.write(
    `${JSON.stringify({ step: step.step, worker: workerIndex, ok, error: ok ? undefined : kind, engine, ttftMs: outcome.ttftMs, e2eMs: outcome.e2eMs, tokens: outcome.tokenIds.length || undefined, queueMs: outcome.stats?.queueMs, connectMs: outcome.stats?.connectMs, serverTtftMs: outcome.stats?.serverTtftMs, attempts: outcome.stats?.attempts })}\n`,
  );
}

/** Sends one request, accounting it to the step being measured when it started. Returns its output tokens. */
async function runOne(request: PlannedRequest, engineIndex: number): Promise<number[]> {
  const step = measuringStep >= 0 ? current : undefined;
  if (step) taggedInFlight++;
  inFlight++;
  const engine = engines[engineIndex % engines.length]!;
  const outcome = options.mode === 'sdk' ? await sendSdk(request) : await sendDirect(request, engine);
  inFlight--;
  if (outcome.ok) {
    totals.completed++;
    totals.outputTokens += outputTokenCount(request, outcome);
  } else {
    totals.failed++;
  }
  if (step) {
    account(step, request, outcome, outcome.stats?.engine ?? engine);
    taggedInFlight--;
    if (taggedInFlight === 0) drainResolve?.();
  }
  return outcome.tokenIds.length > 0 ? outcome.tokenIds : expectedOutput(request).tokenIds;
}

async function slot(slotIndex: number): Promise<void> {
  let session = 0;
  while (!stopping && slotIndex < target) {
    const sessionId = options.sessionTurns > 1 ? `w${workerIndex}-s${slotIndex}-${session++}` : undefined;
    let previous: { request: PlannedRequest; outputTokenIds: number[] } | undefined;
    for (let turn = 0; turn < options.sessionTurns && !stopping; turn++) {
      const request = source.next(previous, sessionId);
      previous = { request, outputTokenIds: await runOne(request, slotIndex + turn) };
    }
  }
  slots--;
}

// ---- open loop ------------------------------------------------------------------------------------------------

let arrivalRate = 0;
let arrivalCap = 0;
let nextArrivalMs = 0;
let arrivalTimer: NodeJS.Timeout | undefined;
let arrivals = 0;

/** Fires every arrival that is due, against the absolute schedule; never more than `maxCatchUpMs` behind. */
function pumpArrivals(): void {
  arrivalTimer = undefined;
  if (stopping || arrivalRate <= 0) return;
  const now = performance.now();
  while (nextArrivalMs <= now) {
    const scheduled = nextArrivalMs;
    nextArrivalMs += interArrivalMs(options.arrival, arrivalRate, options.gammaShape, source.random);
    const step = measuringStep >= 0 ? current : undefined;
    const lag = now - scheduled;
    if (lag > options.maxCatchUpMs) {
      if (step) step.skippedLate++;
      continue;
    }
    if (inFlight >= arrivalCap) {
      if (step) step.capped++;
      continue;
    }
    if (step) step.histograms.recordMs('scheduleLag', lag);
    void runOne(source.next(undefined, undefined), arrivals++);
  }
  arrivalTimer = setTimeout(pumpArrivals, Math.max(0, nextArrivalMs - performance.now()));
}

function setRate(rate: number, maxInFlight: number): void {
  arrivalCap = maxInFlight;
  if (arrivalRate === 0) nextArrivalMs = performance.now();
  arrivalRate = rate;
  if (!arrivalTimer) pumpArrivals();
}

async function setConcurrency(next: number, rampMs: number): Promise<void> {
  target = next;
  const toAdd = next - slots;
  if (toAdd <= 0) return;
  const started = slots;
  const batches = Math.max(1, Math.ceil(rampMs / 50));
  for (let batch = 0; batch < batches && !stopping; batch++) {
    const upTo = started + Math.ceil(((batch + 1) * toAdd) / batches);
    while (slots < upTo) void slot(slots++);
    await new Promise((resolve) => setTimeout(resolve, rampMs / batches));
  }
}

function finishStep(step: StepAccumulator): StepResult {
  clearInterval(step.sampler);
  const clientEnd = client?.stats();
  const result: StepResult = {
    type: 'step-result',
    step: step.step,
    worker: workerIndex,
    histograms: step.histograms.encode(),
    sent: step.sent,
    completed: step.completed,
    failed: step.failed,
    verified: step.verified,
    mismatched: step.mismatched,
    outputTokens: step.outputTokens,
    goodput: step.goodput,
    errors: step.errors,
    tokensBySecond: step.tokensBySecond,
    meanInFlight: step.inFlightSamples > 0 ? step.inFlightSum / step.inFlightSamples : 0,
    cpuPercent: step.cpuPercent,
    eventLoopLagP99Ms: step.lagP99Ms,
    retries: (clientEnd?.retries ?? 0) - (step.clientStart?.retries ?? 0),
    staleRetries: (clientEnd?.staleRetries ?? 0) - (step.clientStart?.staleRetries ?? 0),
    resumes: (clientEnd?.resumes ?? 0) - (step.clientStart?.resumes ?? 0),
    connectionsOpened: (clientEnd?.connections.opened ?? 0) - (step.clientStart?.connections.opened ?? 0),
    connectionsReused: (clientEnd?.connections.reused ?? 0) - (step.clientStart?.connections.reused ?? 0),
    capped: step.capped,
    skippedLate: step.skippedLate,
  };
  step.histograms.destroy();
  return result;
}

/** Event-loop lag p99 (ms) since the measure window began. */
function loopLagP99Ms(): number {
  // The histogram holds whole sampling intervals (idle p99 = the resolution, measured): subtract it.
  return Math.max(0, loopDelay.percentile(99) / 1e6 - LOOP_RESOLUTION_MS);
}

/** Sends a {@link WorkerProgress} every second for the coordinator's live view. */
function startProgressReports(): void {
  let cpu = process.cpuUsage();
  let at = performance.now();
  progressTimer = setInterval(() => {
    const now = performance.now();
    const usage = process.cpuUsage(cpu);
    const measuring = measuringStep >= 0 && loopDelay.count > 0;
    process.send!({
      type: 'progress',
      worker: workerIndex,
      inFlight,
      ...totals,
      retries: client?.stats().retries ?? 0,
      lagP99Ms: measuring ? loopLagP99Ms() : undefined,
      cpuPercent: ((usage.user + usage.system) / 1000 / (now - at)) * 100,
    } satisfies WorkerProgress);
    cpu = process.cpuUsage();
    at = now;
  }, 1000);
  progressTimer.unref();
}

process.on('message', async (message: ToWorker) => {
  switch (message.type) {
    case 'init':
      options = message.options;
      workerIndex = message.worker;
      verify = message.verify;
      engines = message.engines;
      source = new RequestSource(options, workerIndex);
      records = createWriteStream(join(options.outDir, `requests-${workerIndex}.jsonl`));
      if (options.mode === 'sdk') {
        client = new RemoteInferenceClient({
          engines,
          ...(options.apiKey ? { apiKey: options.apiKey } : {}),
          ...(options.model ? { model: options.model } : {}),
          routing: options.sessionTurns > 1 ? 'session-affinity' : 'least-outstanding',
          sourceIps: options.sourceIps,
          limits: { perEngine: { maxConcurrency: 1_000_000 } },
          onRequestEnd: (stats) => {
            (stats.tag as { stats?: RequestStats }).stats = stats;
          },
        });
      } else {
        direct = new Agent({ connections: 50_000, headersTimeout: 0, bodyTimeout: 0 });
      }
      startProgressReports();
      process.send!({ type: 'ready' });
      return;
    case 'concurrency':
      await setConcurrency(message.target, message.rampMs);
      process.send!({ type: 'ramped' });
      return;
    case 'rate':
      setRate(message.rate, message.maxInFlight);
      process.send!({ type: 'ramped' });
      return;
    case 'measure-start':
      current = new StepAccumulator(message.step);
      measuringStep = message.step;
      loopDelay.reset();
      loopDelay.enable();
      return;
    case 'measure-end': {
      const step = current!;
      measuringStep = -1;
      const usage = process.cpuUsage(step.cpu);
      step.cpuPercent = ((usage.user + usage.system) / 1000 / (performance.now() - step.wallStart)) * 100;
      step.lagP99Ms = loopLagP99Ms();
      loopDelay.disable();
      clearInterval(step.sampler);
      if (taggedInFlight > 0) await new Promise<void>((resolve) => (drainResolve = resolve));
      drainResolve = undefined;
      process.send!(finishStep(step));
      return;
    }
    case 'stop':
      stopping = true;
      target = 0;
      clearInterval(progressTimer);
      clearTimeout(arrivalTimer);
      await client?.close();
      await direct?.destroy();
      records.end(() => process.exit(0));
      return;
  }
});
