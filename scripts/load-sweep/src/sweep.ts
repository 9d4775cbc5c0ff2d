import { type ChildProcess, fork } from 'node:child_process';
import { once } from 'node:events';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { type FakeVllm, type FaultName, startFakeVllm } from 'fake-vllm';
import { clientCounts, reconcileStep, type StepAccounting, scrapeVllmCounters } from './accounting.js';
import { METRICS, MetricHistograms } from './histograms.js';
import { findKnee } from './knee.js';
import { type LiveState, ProgressTracker, type WorkerProgress } from './live.js';
import { tallyLabel } from './load-generator.js';
import type { RolloutPolicy, SweepOptions } from './options.js';
import {
  checkClientOptions,
  checkTargets,
  openFileLimit,
  preflight,
  prepareOutDir,
  WORKER_RESERVED_FDS,
} from './preflight.js';
import { markdownTable, type StepRow, type Summary, writeReports } from './report.js';
import {
  changedEngine,
  mergeRolloutResults,
  percentileOf,
  policyOrder,
  restartWhenAnswered,
  rolloutLowerBoundMs,
  rolloutShares,
  slowEngineOverrides,
} from './rollout-step.js';
import type { ClientTotals, FromWorkerOf, StepResult, ToWorker } from './worker-protocol.js';
import {
  abortableDelay,
  awaitWorkerMessage,
  exitOf,
  StepNotMeasuredError,
  SweepIncompleteError,
  throwIfStopped,
  unmeasuredRow,
  WORKER_GRACE_MS,
  WORKER_START_MS,
} from './worker-supervision.js';

export { checkTargets, openFileLimit, preflight } from './preflight.js';
export { StepNotMeasuredError, SweepIncompleteError } from './worker-supervision.js';

const PERCENTILES = [50, 90, 99, 99.9] as const;

/**
 * In-flight requests one worker carries by default. Measured at 10,000 streams on 2 cores: scavenge pauses grow with
 * the live per-request state of one heap (13-50 ms with 5,000 streams per worker, event-loop lag p99 110-175 ms;
 * with 2,500 per worker lag p99 ~28 ms, no further gain at 1,700).
 */
const STREAMS_PER_WORKER = 2500;

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
 * Test-only: start the workers from another entry (one that gives its {@link LoadGenerator} a seam), with arguments.
 */
export interface WorkerOverride {
  entry: string;
  args?: string[];
}

/** Runs the whole sweep; returns the summary (also written to `options.outDir`). */
export async function runSweep(
  options: SweepOptions,
  log: (line: string) => void,
  onProgress?: (state: LiveState) => void,
  workerOverride?: WorkerOverride,
  /**
   * Stops the sweep (the CLI aborts it on SIGINT/SIGTERM): the step running could not measure, the workers and
   * engines are stopped, and what was measured is written; then it rejects with {@link SweepIncompleteError}.
   */
  signal?: AbortSignal,
): Promise<Summary> {
  const workers = workerCount(options);
  const rolloutScenario = options.scenario === 'rollout-step';
  for (const note of preflight(options, workers)) log(`preflight: ${note}`);
  await checkClientOptions(options);
  for (const note of await checkTargets(options)) log(`preflight: ${note}`);
  prepareOutDir(options.outDir);
  let fake: FakeVllm | undefined;
  let engines = options.targets;
  if (engines.length === 0) {
    fake = await startFakeVllm({
      engines: options.fake.engines,
      processes: options.fake.processes,
      maxNumSeqs: options.fake.maxNumSeqs,
      ttftMs: options.fake.ttftMs,
      itlMs: options.fake.itlMs,
      nice: options.fake.nice === 'idle' ? 0 : options.fake.nice,
      idleScheduling: options.fake.nice === 'idle',
      maxModelLen: 1_000_000,
      control: false,
      ...(rolloutScenario && options.fleet === 'slow-engine' ? { perEngine: slowEngineOverrides(options) } : {}),
    });
    engines = fake.engines.map((engine) => engine.url);
    if (options.faults) await fake.control.setFaultProfile(options.faults);
    log(
      `embedded fake-vllm: ${engines.length} engines in ${options.fake.processes} processes, TTFT ${options.fake.ttftMs} ms, ITL ${options.fake.itlMs} ms, ${options.fake.nice === 'idle' ? 'SCHED_IDLE' : `nice ${options.fake.nice}`}${options.faults ? `, faults ${typeof options.faults === 'string' ? options.faults : JSON.stringify(options.faults)}` : ''}${rolloutScenario ? `, ${fleetText(options)}` : ''}`,
    );
  }
  // Under vitest this module runs from src/*.ts; worker processes must run the compiled JavaScript.
  const here = fileURLToPath(import.meta.url);
  const entry =
    workerOverride?.entry ??
    fileURLToPath(new URL(here.endsWith('.ts') ? '../dist/worker-main.js' : './worker-main.js', import.meta.url));
  const children: ChildProcess[] = [];
  // Every wait on a worker has a deadline and ends if the worker dies: the step then could not measure.
  const next = (child: ChildProcess, type: string, deadlineMs: number) =>
    awaitWorkerMessage<unknown>(child, type, deadlineMs, children.indexOf(child), signal);
  /** Waits `ms`, or less when the sweep is stopped; then throws if it was. */
  const pause = async (ms: number) => {
    await abortableDelay(ms, signal);
    throwIfStopped(signal);
  };
  /** The step being run, for the row that says it could not measure (and, for a rollout step, its policy). */
  let running: number | undefined;
  let runningPolicy: RolloutPolicy | undefined;
  /** Why the sweep stopped before its end, when a step could not measure (or the workers could not start). */
  let incomplete: string | undefined;
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
      // A 2 MB semi-space (V8's default is 16 MB): with 2,500 streams a worker's young generation holds so much live
      // state that each scavenge paused it 10-42 ms (10,000 streams on 2 cores, four workers); at 2 MB they are more
      // frequent and 5-6 ms, and the client's lag p99 fell from 10.4-13.2 ms to 8.4-8.6 ms.
      // LOAD_SWEEP_WORKER_NODE_ARGS (e.g. "--cpu-prof") adds flags, later ones win; Node refuses it in NODE_OPTIONS.
      const execArgv = [
        '--max-semi-space-size=2',
        ...(process.env.LOAD_SWEEP_WORKER_NODE_ARGS ?? '').split(' ').filter(Boolean),
      ];
      const child = fork(entry, workerOverride?.args ?? [], {
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
        serialization: 'advanced',
        execArgv,
      });
      children.push(child);
      // A send to a worker that just died fails on the channel; unhandled, that 'error' would end the sweep.
      child.on('error', () => {});
      child.on('message', (message: { type: string }) => {
        if (message.type === 'progress') progress.report(message as WorkerProgress);
      });
      const ready = next(child, 'ready', WORKER_START_MS);
      const embedded = fake !== undefined;
      child.send({
        type: 'init',
        options,
        engines,
        worker: index,
        verify: embedded,
        tally: embedded,
      } satisfies ToWorker);
      await ready;
    }
    log(
      `${workers} client worker process(es), mode ${options.mode}, endpoint ${options.endpoint}${options.stream ? ' (stream)' : ''}`,
    );
    let enginesDown = 0;
    /** Marks the step invalid when embedded engines died during it; returns why, or undefined. */
    const noteEnginesDown = (row: StepRow, downNow: number): string | undefined => {
      if (downNow <= enginesDown) return undefined;
      const reason = `${downNow - enginesDown} of ${engines.length} embedded engines went down during the step (their process died)`;
      markInvalid(row, reason);
      enginesDown = downNow;
      return reason;
    };
    /**
     * `--scenario rollout-step`: one run per step and policy. Each worker fires its share of the step's rollouts at
     * once through a fresh SDK client with the policy and answers when its last rollout has ended; the books are kept
     * as for a ramp step, over every request of the run.
     */
    const rolloutRun = async (
      run: number,
      stepIndex: number,
      rollouts: number,
      policy: RolloutPolicy,
      /** False for the warm-up: `--fleet restart` leaves it alone. */
      measured = true,
    ) => {
      const turns = options.sessionTurns;
      const label = tallyLabel(run);
      const before = fake ? await fake.control.stats() : undefined;
      await fake?.control.resetHighWaterMarks();
      const metricsBefore = fake ? undefined : await scrapeVllmCounters(engines, options.apiKey);
      const totalsBefore = metricsBefore ? await clientTotals(children) : undefined;
      progress.phase(stepIndex, rollouts, 'measure', 0);
      const shares = rolloutShares(rollouts, children.length);
      const startMs = performance.now();
      const done = { value: false };
      const restart =
        fake && options.fleet === 'restart' && measured
          ? restartWhenAnswered(
              fake,
              label,
              Math.ceil((rollouts * turns) / 4),
              changedEngine(engines.length),
              options.restartDownMs,
              startMs,
              done,
            ).catch((error: unknown) => {
              log(`--fleet restart: the restart failed: ${(error as Error).message}`);
              return null;
            })
          : Promise.resolve(null);
      let results: StepResult[];
      try {
        results = (await Promise.all(
          children.map((child, index) => {
            // Every turn of a rollout ends by its own deadline; a rollout's turns run one after another.
            const result = next(child, 'step-result', options.requestTimeoutMs * turns + WORKER_GRACE_MS);
            child.send({
              type: 'rollout-step',
              step: run,
              stepIndex,
              rollouts,
              ...shares[index]!,
              policy,
            } satisfies ToWorker);
            return result;
          }),
        )) as StepResult[];
      } finally {
        done.value = true;
      }
      const restartRecord = await restart;
      progress.phase(stepIndex, rollouts, 'drain', 0);
      const totalsAfter = metricsBefore ? await clientTotals(children) : undefined;
      const metricsAfter = metricsBefore ? await scrapeVllmCounters(engines, options.apiKey) : undefined;
      const after = fake ? await fake.control.stats() : undefined;
      const merged = mergeRolloutResults(results);
      const row = aggregate(rollouts, Math.max(merged.makespanMs, 1) / 1000, results);
      const client = clientCounts(results);
      const accounting = reconcileStep(client, {
        label,
        ...(after && { engines: after.engines }),
        ...(metricsBefore &&
          metricsAfter &&
          totalsBefore &&
          totalsAfter && {
            vllm: { before: metricsBefore, after: metricsAfter, clientStart: totalsBefore, clientEnd: totalsAfter },
          }),
      });
      let answeredByEngine = merged.answeredByEngine;
      if (after) {
        answeredByEngine = {};
        for (const [index, engine] of after.engines.entries()) {
          answeredByEngine[engines[index]!] = engine.tallies[label]?.answered ?? 0;
        }
      }
      applyAccounting(row, accounting);
      row.serverLoopLagP99Ms = after?.total.eventLoopLagP99Ms ?? null;
      if (before && after) {
        for (const [name, count] of Object.entries(after.total.faults)) {
          const delta = count - before.total.faults[name as FaultName];
          if (delta > 0) row.faultsInjected[name] = delta;
        }
      }
      const cache = (stats: typeof after, pick: 'prefixCacheQueryTokens' | 'prefixCacheHitTokens') =>
        (stats?.engines ?? []).reduce((total, engine) => total + engine[pick], 0);
      const queries = cache(after, 'prefixCacheQueryTokens') - cache(before, 'prefixCacheQueryTokens');
      const lowerBoundMs = fake ? rolloutLowerBoundMs(merged.work, options) : null;
      row.scenario = 'rollout-step';
      row.policy = policy;
      row.fleet = fake ? options.fleet : 'target';
      row.rollout = {
        rollouts,
        turns,
        policy,
        fleet: row.fleet,
        makespanMs: merged.makespanMs,
        p50Ms: percentileOf(merged.completionsMs, 50),
        p99Ms: percentileOf(merged.completionsMs, 99),
        failedRollouts: merged.failedRollouts,
        lowerBoundMs,
        lowerBoundNote: fake
          ? 'max(total work / total capacity, longest rollout); work per turn = TTFT + (tokens - 1) x ITL of the embedded engines, a half-speed engine counting half, prefill and restart downtime left out'
          : 'unknown: the running slots and speed of --target engines are not known to the sweep',
        makespanOverBound: lowerBoundMs ? merged.makespanMs / lowerBoundMs : null,
        speedupVsBaseline: null,
        answeredByEngine,
        answeredByEngineSource: after ? 'fake-vllm tallies' : 'client',
        finalCaps: merged.finalCaps,
        restart: restartRecord,
        prefixCacheHitRate:
          fake && queries > 0
            ? (cache(after, 'prefixCacheHitTokens') - cache(before, 'prefixCacheHitTokens')) / queries
            : null,
      };
      if (options.fleet === 'restart' && fake && measured && restartRecord === null) {
        // The step ended before a quarter of it was answered: it measured a uniform fleet, not a restart.
        markInvalid(row, 'the step ended before the restart was triggered (a quarter of its requests answered)');
      }
      const fleetShrank = noteEnginesDown(row, after?.total.enginesDown ?? 0);
      return { row, accounting, fleetShrank };
    };
    if (rolloutScenario) {
      let run = 0;
      // An untimed batch first, so that no policy's row pays for a cold client (JIT, first connections): measured
      // here, the first run of a sweep was flagged client-bound (loop lag p99 10-12.5 ms, CPU 91%) and later runs
      // were not. It has its own tally label and no row.
      const warmup = Math.min(options.steps[0]!, WARMUP_ROLLOUTS);
      running = warmup;
      runningPolicy = options.policies[0]!;
      const warm = await rolloutRun(run++, 0, warmup, options.policies[0]!, false);
      log(`warm-up (not measured): ${warm.row.completed} of ${warmup} rollouts answered`);
      running = undefined;
      runningPolicy = undefined;
      steps: for (const [stepIndex, rollouts] of options.steps.entries()) {
        const rows: StepRow[] = [];
        for (const policy of policyOrder(options.policies, stepIndex)) {
          running = rollouts;
          runningPolicy = policy;
          throwIfStopped(signal);
          const { row, accounting, fleetShrank } = await rolloutRun(run++, stepIndex, rollouts, policy);
          summary.steps.push(row);
          rows.push(row);
          running = undefined;
          runningPolicy = undefined;
          log(`${rolloutLine(row)}, ${booksText(accounting)}${row.valid ? '' : ` INVALID: ${row.invalidReason}`}`);
          if (fleetShrank) {
            summary.stoppedEarly = `${fleetShrank} at N=${rollouts} (${policy}); later steps would measure a smaller fleet`;
            log(`stopping early: ${summary.stoppedEarly}`);
            break steps;
          }
        }
        const baseline = rows.find((row) => row.policy === 'baseline')?.rollout?.makespanMs;
        for (const row of rows)
          if (row.rollout && baseline !== undefined && row.rollout.makespanMs > 0)
            row.rollout.speedupVsBaseline = baseline / row.rollout.makespanMs;
        // Every policy of a step runs, so they can be compared (a restart fails a fixed-cap policy's cut streams
        // without --resume); the error-rate rule stops the sweep before the next step.
        const erring = rows.find((row) => row.errorRate > options.maxErrorRate);
        if (erring) {
          summary.stoppedEarly = `error rate ${(erring.errorRate * 100).toFixed(1)}% at N=${rollouts} (${erring.policy}) exceeds ${(options.maxErrorRate * 100).toFixed(1)}%`;
          log(`stopping early: ${summary.stoppedEarly}`);
          break;
        }
      }
    }
    for (const [stepIndex, concurrency] of rolloutScenario ? [] : options.steps.entries()) {
      running = concurrency;
      throwIfStopped(signal);
      const share = (index: number) => Math.floor(concurrency / workers) + (index < concurrency % workers ? 1 : 0);
      const openLoop = options.arrival !== 'closed';
      progress.phase(stepIndex, concurrency, 'ramp', options.rampMs);
      await Promise.all(
        children.map((child, index) => {
          const ramped = next(child, 'ramped', options.rampMs + WORKER_GRACE_MS);
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
      await pause(options.warmupMs);
      const faultsBefore = fake ? (await fake.control.stats()).total.faults : undefined;
      await fake?.control.resetHighWaterMarks();
      // --target: vLLM's counters are read before the clients' totals here, and after them at the end, so that every
      // request the clients count between their two snapshots falls between the two reads (see accounting.ts).
      const metricsBefore = fake ? undefined : await scrapeVllmCounters(engines, options.apiKey);
      const totalsBefore = metricsBefore ? await clientTotals(children) : undefined;
      for (const child of children) child.send({ type: 'measure-start', step: stepIndex } satisfies ToWorker);
      const measureStart = performance.now();
      progress.phase(stepIndex, concurrency, 'measure', options.measureMs);
      await pause(options.measureMs);
      const measuredS = (performance.now() - measureStart) / 1000;
      progress.phase(stepIndex, concurrency, 'drain', 0);
      const results = (await Promise.all(
        children.map((child) => {
          const result = next(child, 'step-result', options.requestTimeoutMs + WORKER_GRACE_MS);
          child.send({ type: 'measure-end', step: stepIndex } satisfies ToWorker);
          return result;
        }),
      )) as StepResult[];
      const totalsAfter = metricsBefore ? await clientTotals(children) : undefined;
      const metricsAfter = metricsBefore ? await scrapeVllmCounters(engines, options.apiKey) : undefined;
      const fakeStats = fake ? await fake.control.stats() : undefined;
      const after = fakeStats?.total;
      const faultsAfter = after?.faults;
      const row = aggregate(concurrency, measuredS, results);
      if (row.sent === 0) {
        // A closed loop whose every slot waits on a request started before the window sends nothing in it: a step
        // of "0 sent, 0 failed" is not a valid measurement of anything.
        throw new StepNotMeasuredError(
          `no request started in the ${options.measureMs} ms window: the ${row.achievedConcurrency.toFixed(0)} in flight all started before it and none ended (each ends by --request-timeout-ms ${options.requestTimeoutMs}); check that the target answers, or lengthen --warmup-ms and --measure-ms past one request's duration`,
        );
      }
      const client = clientCounts(results);
      const accounting = reconcileStep(client, {
        label: tallyLabel(stepIndex),
        ...(fakeStats && { engines: fakeStats.engines }),
        ...(metricsBefore &&
          metricsAfter &&
          totalsBefore &&
          totalsAfter && {
            vllm: { before: metricsBefore, after: metricsAfter, clientStart: totalsBefore, clientEnd: totalsAfter },
          }),
      });
      applyAccounting(row, accounting);
      row.serverLoopLagP99Ms = after?.eventLoopLagP99Ms ?? null;
      if (faultsBefore && faultsAfter) {
        for (const [name, count] of Object.entries(faultsAfter)) {
          const delta = count - faultsBefore[name as FaultName];
          if (delta > 0) row.faultsInjected[name] = delta;
        }
      }
      // Embedded engines whose process died (killed, out of memory): the SDK routed around them, but the step
      // measured a smaller fleet than configured, and so would every later one.
      const fleetShrank = noteEnginesDown(row, fakeStats?.total.enginesDown ?? 0);
      summary.steps.push(row);
      running = undefined;
      log(
        `step ${options.arrival === 'closed' ? 'C' : 'rate'}=${concurrency}: achieved ${row.achievedConcurrency.toFixed(0)}, ${row.requestsPerSecond.toFixed(0)} req/s, ${row.outputTokensPerSecond.toFixed(0)} tok/s, TTFT p99 ${row.percentiles.ttft_p99?.toFixed(0)} ms, sent ${row.sent}, ok ${row.completed}, failed ${row.failed}, ${booksText(accounting)}${Object.keys(row.errors).length ? ` ${JSON.stringify(row.errors)}` : ''}${Object.keys(row.faultsInjected).length ? `, faults ${JSON.stringify(row.faultsInjected)}, recovered ${row.retries + row.staleRetries + row.resumes}` : ''}${row.capped || row.skippedLate ? `, capped ${row.capped}, skipped late ${row.skippedLate}` : ''}${row.valid ? '' : ` INVALID: ${row.invalidReason}`}`,
      );
      if (fleetShrank) {
        summary.stoppedEarly = `${fleetShrank} at ${options.arrival === 'closed' ? 'C' : 'rate'}=${concurrency}; later steps would measure a smaller fleet`;
        log(`stopping early: ${summary.stoppedEarly}`);
        break;
      }
      if (row.errorRate > options.maxErrorRate) {
        summary.stoppedEarly = `error rate ${(row.errorRate * 100).toFixed(1)}% at C=${concurrency} exceeds ${(options.maxErrorRate * 100).toFixed(1)}%`;
        log(`stopping early: ${summary.stoppedEarly}`);
        break;
      }
    }
  } catch (error) {
    // Whatever stopped the sweep mid-way (a worker killed, a deadline passed, an engine call failing), the steps
    // already measured are written below, and the step that was running says why it has no figures.
    const reason = (error as Error).message;
    if (running !== undefined) {
      const row = unmeasuredRow(running, reason);
      if (runningPolicy !== undefined) Object.assign(row, { scenario: 'rollout-step', policy: runningPolicy });
      summary.steps.push(row);
    }
    const stepText = rolloutScenario
      ? `N=${running} (${runningPolicy})`
      : `${options.arrival === 'closed' ? 'C' : 'rate'}=${running}`;
    summary.stoppedEarly = `${running === undefined ? 'could not start' : `${stepText} could not measure`}: ${reason}`;
    incomplete = summary.stoppedEarly;
    log(`stopping: ${summary.stoppedEarly}`);
  } finally {
    progress.stop();
    await Promise.all(
      children.map(async (child) => {
        if (exitOf(child) !== undefined) return;
        const exited = once(child, 'exit');
        child.send({ type: 'stop' } satisfies ToWorker);
        await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 10_000))]);
        child.kill('SIGKILL');
      }),
    );
    try {
      await fake?.close();
    } catch (error) {
      log(`embedded fake-vllm did not close cleanly: ${(error as Error).message}`);
    }
  }
  // A rollout step is judged by its makespan, not by an SLO at a concurrency: no knee.
  summary.knee = rolloutScenario
    ? null
    : findKnee(
        summary.steps.map((step) => ({ ...step, concurrency: step.concurrency })),
        options.slo,
        options.maxErrorRate,
      );
  writeReports(options.outDir, summary);
  log(`\n${markdownTable(summary)}\n`);
  if (!rolloutScenario)
    log(`knee (highest concurrency meeting ${JSON.stringify(options.slo)}): ${summary.knee ?? 'none'}`);
  log(`wrote ${options.outDir}/summary.json, summary.csv, report.html, requests-*.jsonl`);
  if (incomplete !== undefined) throw new SweepIncompleteError(incomplete, summary);
  return summary;
}

/** Asks every worker for its {@link ClientTotals} and sums them. */
async function clientTotals(children: readonly ChildProcess[]): Promise<ClientTotals> {
  const answers = await Promise.all(
    children.map((child, index) => {
      const answer = awaitWorkerMessage<FromWorkerOf<'totals'>>(child, 'totals', WORKER_GRACE_MS, index);
      child.send({ type: 'totals' } satisfies ToWorker);
      return answer.then((message) => message.totals);
    }),
  );
  const sum = { dispatched: 0, answered: 0, failed: 0, attempts: 0, staleRetries: 0, inFlight: 0 };
  for (const totals of answers)
    for (const key of Object.keys(sum) as Array<keyof ClientTotals>) sum[key] += totals[key];
  return sum;
}

/** Rollouts of the untimed batch a rollout-step sweep starts with (at most the first step's N). */
const WARMUP_ROLLOUTS = 64;

/** The embedded fleet of a rollout step in words. */
function fleetText(options: SweepOptions): string {
  const last = changedEngine(options.fake.engines);
  if (options.fleet === 'slow-engine') return `fleet slow-engine (engine ${last} at half speed)`;
  if (options.fleet === 'restart')
    return `fleet restart (engine ${last} restarted, ${options.restartDownMs} ms down, once a quarter of each step is answered)`;
  return 'fleet uniform';
}

/** A rollout step's log line: makespan against its bound, rollout latency, failures, each engine's share. */
export function rolloutLine(row: StepRow): string {
  const figures = row.rollout!;
  const seconds = (ms: number | null) => (ms === null ? '-' : (ms / 1000).toFixed(2));
  const total = Object.values(figures.answeredByEngine).reduce((sum, count) => sum + count, 0);
  const shares = Object.values(figures.answeredByEngine)
    .map((count) => `${total > 0 ? ((100 * count) / total).toFixed(0) : 0}%`)
    .join('/');
  return `rollout step N=${figures.rollouts}${figures.turns > 1 ? ` x ${figures.turns} turns` : ''} ${figures.policy} (${figures.fleet}): makespan ${seconds(figures.makespanMs)} s (lower bound ${figures.lowerBoundMs === null ? 'unknown' : `${seconds(figures.lowerBoundMs)} s`}), p50/p99 ${seconds(figures.p50Ms)}/${seconds(figures.p99Ms)} s, ${figures.failedRollouts} rollouts failed, engines' shares ${shares || '-'}${figures.restart ? `, restarted ${figures.restart.engine} at ${seconds(figures.restart.atMs)} s (${figures.restart.dropped} dropped)` : ''}${figures.prefixCacheHitRate === null ? '' : `, prefix hits ${(100 * figures.prefixCacheHitRate).toFixed(0)}%`}; sent ${row.sent}, ok ${row.completed}, failed ${row.failed}`;
}

/** The books in a few words for the step's log line. */
export function booksText(accounting: StepAccounting): string {
  const engines =
    accounting.engineReceived === null
      ? 'no engine counters'
      : `engines received ${accounting.engineReceived}, answered ${accounting.engineAnswered}`;
  return `${engines}; ${accounting.offBy === 0 ? 'books balance' : `BOOKS OFF BY ${accounting.offBy}`}`;
}

/** Puts the step's books on its row; books that do not balance make the step invalid and say by how much. */
export function applyAccounting(row: StepRow, accounting: StepAccounting): void {
  row.accounting = accounting;
  if (accounting.offBy === 0) return;
  markInvalid(row, `books off by ${accounting.offBy}: ${accounting.explanation}`);
}

/** Marks a step invalid, adding `reason` to any it already has. */
function markInvalid(row: StepRow, reason: string): void {
  row.valid = false;
  row.invalidReason = row.invalidReason ? `${row.invalidReason}; ${reason}` : reason;
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
