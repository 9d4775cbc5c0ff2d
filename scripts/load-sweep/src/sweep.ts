import { type ChildProcess, fork } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, readFileSync } from 'node:fs';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { type FakeVllm, type FaultName, type FaultProfile, startFakeVllm } from 'fake-vllm';
import { type Dispatcher, request } from 'undici';
import { METRICS, MetricHistograms } from './histograms.js';
import { findKnee } from './knee.js';
import { type LiveState, ProgressTracker, type WorkerProgress } from './live.js';
import { SweepConfigError, type SweepOptions } from './options.js';
import { markdownTable, type StepRow, type Summary, writeReports } from './report.js';
import type { StepResult, ToWorker } from './worker.js';

const PERCENTILES = [50, 90, 99, 99.9] as const;

/** The soft open-file limit of this process (inherited by the workers), or Infinity when unknown. */
export function openFileLimit(): number {
  try {
    const line = readFileSync('/proc/self/limits', 'utf8')
      .split('\n')
      .find((entry) => entry.startsWith('Max open files'));
    const limit = Number(line?.split(/\s+/)[3]);
    return Number.isFinite(limit) ? limit : Number.POSITIVE_INFINITY;
  } catch {
    return Number.POSITIVE_INFINITY;
  }
}

/** Descriptors a worker keeps for itself (IPC, the JSONL file, DNS, ...) besides one socket per request. */
const WORKER_RESERVED_FDS = 200;
/**
 * In-flight requests one worker carries by default. Measured at 10,000 streams on 2 cores: scavenge pauses grow with
 * the live per-request state of one heap (13-50 ms with 5,000 streams per worker, event-loop lag p99 110-175 ms;
 * with 2,500 per worker lag p99 ~28 ms, no further gain at 1,700).
 */
const STREAMS_PER_WORKER = 2500;

/** Reads the open-file limit and the ephemeral port range; fails fast with advice when a step cannot fit. */
export function preflight(options: SweepOptions, workers: number, fileLimit = openFileLimit()): string[] {
  const notes: string[] = [];
  if (fileLimit === Number.POSITIVE_INFINITY) notes.push('open-file limit unknown (no /proc/self/limits)');
  const peak = Math.max(...options.steps);
  const perWorker = Math.ceil(peak / workers) + WORKER_RESERVED_FDS;
  if (perWorker > fileLimit) {
    throw new SweepConfigError(
      `A worker would need ~${perWorker} descriptors but the limit is ${fileLimit}: raise \`ulimit -n\` or pass --workers ${Math.ceil(peak / (fileLimit - WORKER_RESERVED_FDS))}`,
    );
  }
  try {
    const [low, high] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
    const ports = high! - low! + 1;
    const engines = options.targets.length || options.fake.engines;
    const perDestination = Math.ceil(peak / engines);
    const sources = Math.max(1, options.sourceIps.length);
    if (perDestination > ports * sources) {
      throw new SweepConfigError(
        `~${perDestination} connections per engine exceed ${ports} ephemeral ports x ${sources} source IP(s): add --source-ips auto:N or engines`,
      );
    }
    notes.push(`file limit ${fileLimit}, ephemeral ports ${low}-${high}, ~${perWorker} sockets per worker`);
  } catch (error) {
    if ((error as Error).message.includes('exceed')) throw error;
  }
  return notes;
}

/**
 * Client worker processes: `--workers`, else one per {@link STREAMS_PER_WORKER} slots of the peak step, at most two
 * per core, and always enough that each worker's sockets fit the open-file limit.
 */
export function workerCount(
  options: SweepOptions,
  cores = os.availableParallelism(),
  fileLimit = openFileLimit(),
): number {
  if (options.workers > 0) return options.workers;
  const peak = Math.max(...options.steps);
  const forFiles = Math.ceil(peak / Math.max(1, fileLimit - WORKER_RESERVED_FDS));
  return Math.max(forFiles, Math.min(Math.max(2, cores * 2), Math.ceil(peak / STREAMS_PER_WORKER)));
}

/**
 * `--target` engines: each must answer `GET /v1/models`, and serve `--model` when one is given; fails fast with
 * what the engine said, so a typo does not become a step of 100% errors. Engines without `/v1/models` (some
 * routers) only get a note.
 */
export async function checkTargets(options: SweepOptions, timeoutMs = 5000): Promise<string[]> {
  const notes: string[] = [];
  await Promise.all(
    options.targets.map(async (target) => {
      let response: Dispatcher.ResponseData;
      try {
        response = await request(`${target.replace(/\/+$/, '')}/v1/models`, {
          headers: options.apiKey ? { authorization: `Bearer ${options.apiKey}` } : {},
          headersTimeout: timeoutMs,
          bodyTimeout: timeoutMs,
        });
      } catch (error) {
        const cause = (error as { code?: string }).code ?? (error as Error).message;
        throw new SweepConfigError(
          `\`--target ${target}\` did not answer GET /v1/models (${cause}): check the URL and that the engine is up`,
        );
      }
      if (response.statusCode !== 200) {
        await response.body.dump();
        if (response.statusCode === 401 || response.statusCode === 403)
          throw new SweepConfigError(
            `\`--target ${target}\` refused GET /v1/models with ${response.statusCode}: pass its key with --api-key`,
          );
        notes.push(`${target}: GET /v1/models answered ${response.statusCode}; --model not checked`);
        return;
      }
      const body = (await response.body.json()) as { data?: Array<{ id?: string }> };
      const served = body.data?.map((model) => model.id) ?? [];
      if (options.model !== undefined && !served.includes(options.model)) {
        throw new SweepConfigError(
          `\`--target ${target}\` serves ${served.map((id) => `\`${id}\``).join(', ') || 'no model'}, not \`--model ${options.model}\``,
        );
      }
      notes.push(`${target} serves ${served.join(', ')}`);
    }),
  );
  return notes;
}

function faultProfile(text: string): FaultProfile | string {
  return text.trim().startsWith('{') ? (JSON.parse(text) as FaultProfile) : text;
}

/** Runs the whole sweep; returns the summary (also written to `options.outDir`). */
export async function runSweep(
  options: SweepOptions,
  log: (line: string) => void,
  onProgress?: (state: LiveState) => void,
): Promise<Summary> {
  const workers = workerCount(options);
  for (const note of preflight(options, workers)) log(`preflight: ${note}`);
  for (const note of await checkTargets(options)) log(`preflight: ${note}`);
  mkdirSync(options.outDir, { recursive: true });
  let fake: FakeVllm | undefined;
  let engines = options.targets;
  if (engines.length === 0) {
    fake = await startFakeVllm({
      engines: options.fake.engines,
      processes: options.fake.processes,
      maxNumSeqs: options.fake.maxNumSeqs,
      ttftMs: options.fake.ttftMs,
      itlMs: options.fake.itlMs,
      nice: options.fake.nice,
      maxModelLen: 1_000_000,
      control: false,
    });
    engines = fake.engines.map((engine) => engine.url);
    if (options.faults) await fake.control.setFaultProfile(faultProfile(options.faults));
    log(
      `embedded fake-vllm: ${engines.length} engines in ${options.fake.processes} processes, TTFT ${options.fake.ttftMs} ms, ITL ${options.fake.itlMs} ms, nice ${options.fake.nice}${options.faults ? `, faults ${options.faults}` : ''}`,
    );
  }
  // Under vitest this module runs from src/*.ts; worker processes must run the compiled JavaScript.
  const here = fileURLToPath(import.meta.url);
  const entry = fileURLToPath(
    new URL(here.endsWith('.ts') ? '../dist/worker-main.js' : './worker-main.js', import.meta.url),
  );
  const children: ChildProcess[] = [];
  const next = (child: ChildProcess, type: string) =>
    new Promise<unknown>((resolve, reject) => {
      const onMessage = (message: { type: string }) => {
        if (message.type !== type) return;
        child.off('message', onMessage);
        child.off('exit', onExit);
        resolve(message);
      };
      const onExit = (code: number | null) =>
        reject(new Error(`sweep worker ${child.pid} exited with ${code} while waiting for ${type}`));
      child.on('message', onMessage);
      child.once('exit', onExit);
    });
  const summary: Summary = {
    schema: 'load-sweep/summary@1',
    startedAt: new Date().toISOString(),
    machine: { cpus: os.cpus().length, node: process.version, platform: `${os.platform()} ${os.release()}` },
    options,
    target: fake ? `embedded fake-vllm (${engines.length} engines)` : engines.join(', '),
    steps: [],
    knee: null,
    slo: options.slo,
    stoppedEarly: null,
  };
  const progress = new ProgressTracker(options, onProgress);
  try {
    for (let index = 0; index < workers; index++) {
      // LOAD_SWEEP_WORKER_NODE_ARGS (e.g. "--cpu-prof") profiles the workers; Node refuses it in NODE_OPTIONS.
      const execArgv = (process.env.LOAD_SWEEP_WORKER_NODE_ARGS ?? '').split(' ').filter(Boolean);
      const child = fork(entry, [], {
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
        serialization: 'advanced',
        execArgv,
      });
      children.push(child);
      child.on('message', (message: { type: string }) => {
        if (message.type === 'progress') progress.report(message as WorkerProgress);
      });
      const ready = next(child, 'ready');
      child.send({ type: 'init', options, engines, worker: index, verify: fake !== undefined } satisfies ToWorker);
      await ready;
    }
    log(
      `${workers} client worker process(es), mode ${options.mode}, endpoint ${options.endpoint}${options.stream ? ' (stream)' : ''}`,
    );
    for (const [stepIndex, concurrency] of options.steps.entries()) {
      const share = (index: number) => Math.floor(concurrency / workers) + (index < concurrency % workers ? 1 : 0);
      const openLoop = options.arrival !== 'closed';
      progress.phase(stepIndex, concurrency, 'ramp', options.rampMs);
      await Promise.all(
        children.map((child, index) => {
          const ramped = next(child, 'ramped');
          child.send(
            openLoop
              ? ({
                  type: 'rate',
                  rate: concurrency / workers,
                  maxInFlight: Math.ceil(options.maxConcurrency / workers),
                } satisfies ToWorker)
              : ({ type: 'concurrency', target: share(index), rampMs: options.rampMs } satisfies ToWorker),
          );
          return ramped;
        }),
      );
      progress.phase(stepIndex, concurrency, 'warmup', options.warmupMs);
      await new Promise((resolve) => setTimeout(resolve, options.warmupMs));
      const faultsBefore = fake ? (await fake.control.stats()).total.faults : undefined;
      await fake?.control.resetHighWaterMarks();
      for (const child of children) child.send({ type: 'measure-start', step: stepIndex } satisfies ToWorker);
      const measureStart = performance.now();
      progress.phase(stepIndex, concurrency, 'measure', options.measureMs);
      await new Promise((resolve) => setTimeout(resolve, options.measureMs));
      const measuredS = (performance.now() - measureStart) / 1000;
      progress.phase(stepIndex, concurrency, 'drain', 0);
      const results = (await Promise.all(
        children.map((child) => {
          const result = next(child, 'step-result');
          child.send({ type: 'measure-end', step: stepIndex } satisfies ToWorker);
          return result;
        }),
      )) as StepResult[];
      const after = fake ? (await fake.control.stats()).total : undefined;
      const faultsAfter = after?.faults;
      const row = aggregate(concurrency, measuredS, results);
      row.serverLoopLagP99Ms = after?.eventLoopLagP99Ms ?? null;
      if (faultsBefore && faultsAfter) {
        for (const [name, count] of Object.entries(faultsAfter)) {
          const delta = count - faultsBefore[name as FaultName];
          if (delta > 0) row.faultsInjected[name] = delta;
        }
      }
      summary.steps.push(row);
      log(
        `step ${options.arrival === 'closed' ? 'C' : 'rate'}=${concurrency}: achieved ${row.achievedConcurrency.toFixed(0)}, ${row.requestsPerSecond.toFixed(0)} req/s, ${row.outputTokensPerSecond.toFixed(0)} tok/s, TTFT p99 ${row.percentiles.ttft_p99?.toFixed(0)} ms, sent ${row.sent} = ok ${row.completed} + failed ${row.failed}${Object.keys(row.errors).length ? ` ${JSON.stringify(row.errors)}` : ''}${Object.keys(row.faultsInjected).length ? `, faults ${JSON.stringify(row.faultsInjected)}, recovered ${row.retries + row.staleRetries + row.resumes}` : ''}${row.capped || row.skippedLate ? `, capped ${row.capped}, skipped late ${row.skippedLate}` : ''}${row.valid ? '' : ` INVALID: ${row.invalidReason}`}`,
      );
      if (row.errorRate > options.maxErrorRate) {
        summary.stoppedEarly = `error rate ${(row.errorRate * 100).toFixed(1)}% at C=${concurrency} exceeds ${(options.maxErrorRate * 100).toFixed(1)}%`;
        log(`stopping early: ${summary.stoppedEarly}`);
        break;
      }
    }
  } finally {
    progress.stop();
    await Promise.all(
      children.map(async (child) => {
        if (child.exitCode !== null) return;
        const exited = once(child, 'exit');
        child.send({ type: 'stop' } satisfies ToWorker);
        await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 10_000))]);
        child.kill('SIGKILL');
      }),
    );
    await fake?.close();
  }
  summary.knee = findKnee(
    summary.steps.map((step) => ({ ...step, concurrency: step.concurrency })),
    options.slo,
    options.maxErrorRate,
  );
  writeReports(options.outDir, summary);
  log(`\n${markdownTable(summary)}\n`);
  log(`knee (highest concurrency meeting ${JSON.stringify(options.slo)}): ${summary.knee ?? 'none'}`);
  log(`wrote ${options.outDir}/summary.json, summary.csv, report.html, requests-*.jsonl`);
  return summary;
}

/** Merges the workers' results of one step into a row. */
export function aggregate(concurrency: number, measuredS: number, results: readonly StepResult[]): StepRow {
  const histograms = new MetricHistograms();
  const errors: Record<string, number> = {};
  const tokensBySecond: Record<string, number> = {};
  const sum = (pick: (result: StepResult) => number) => results.reduce((total, result) => total + pick(result), 0);
  for (const result of results) {
    histograms.mergeEncoded(result.histograms as never);
    for (const [kind, count] of Object.entries(result.errors)) errors[kind] = (errors[kind] ?? 0) + count;
    for (const [second, count] of Object.entries(result.tokensBySecond))
      tokensBySecond[second] = (tokensBySecond[second] ?? 0) + count;
  }
  const percentiles: Record<string, number | null> = {};
  for (const metric of METRICS)
    for (const percentile of PERCENTILES)
      percentiles[`${metric}_p${percentile}`] = histograms.percentileMs(metric, percentile);
  histograms.destroy();
  const sent = sum((result) => result.sent);
  const lag = Math.max(...results.map((result) => result.eventLoopLagP99Ms));
  const cpu = Math.max(...results.map((result) => result.cpuPercent));
  const reasons: string[] = [];
  if (lag > 10) reasons.push(`client event-loop lag p99 ${lag.toFixed(1)} ms > 10 ms`);
  if (cpu > 90) reasons.push(`client CPU ${cpu.toFixed(0)}% > 90%`);
  const row: StepRow = {
    concurrency,
    achievedConcurrency: sum((result) => result.meanInFlight),
    durationS: measuredS,
    sent,
    completed: sum((result) => result.completed),
    failed: sum((result) => result.failed),
    verified: sum((result) => result.verified),
    errorRate: sent > 0 ? sum((result) => result.failed) / sent : 0,
    requestsPerSecond: sum((result) => result.completed) / measuredS,
    outputTokensPerSecond: sum((result) => result.outputTokens) / measuredS,
    peakOutputTokensPerSecond1s: Math.max(0, ...Object.values(tokensBySecond)),
    goodputPerSecond: sum((result) => result.goodput) / measuredS,
    percentiles,
    eventLoopLagP99Ms: lag,
    serverLoopLagP99Ms: null,
    clientCpuPercentMax: cpu,
    connectionsOpened: sum((result) => result.connectionsOpened),
    connectionsReused: sum((result) => result.connectionsReused),
    retries: sum((result) => result.retries),
    staleRetries: sum((result) => result.staleRetries),
    resumes: sum((result) => result.resumes),
    capped: sum((result) => result.capped),
    skippedLate: sum((result) => result.skippedLate),
    errors,
    faultsInjected: {},
    valid: reasons.length === 0,
    invalidReason: reasons.length ? reasons.join('; ') : null,
  };
  return row;
}
