import type { ChildProcess } from 'node:child_process';
import type { StepRow, Summary } from './report.js';

/**
 * A step that could not be measured: a client worker died (killed, out of memory), did not answer within its
 * deadline, or no request started in the window. The sweep stops there; what was measured before is written.
 */
export class StepNotMeasuredError extends Error {
  override readonly name = 'StepNotMeasuredError';
}

/**
 * Thrown by `runSweep` after it has written summary.json and the report, when a step could not be measured: the
 * finished steps are in `summary` (and on disk), the step that failed says why in its `invalidReason`.
 */
export class SweepIncompleteError extends Error {
  override readonly name = 'SweepIncompleteError';
  constructor(
    message: string,
    readonly summary: Summary,
  ) {
    super(message);
  }
}

/** Longest wait for a worker process to start (import the SDK, open its records file) and say `ready`. */
export const WORKER_START_MS = 60_000;
/**
 * Slack on top of a phase's own length before a worker is given up: the ramp (`rampMs` + this) and the drain
 * (`requestTimeoutMs` + this: every request of the window has ended by its deadline by then, so only a stuck or
 * starved worker is still missing).
 */
export const WORKER_GRACE_MS = 30_000;

/** How a child ended, or undefined while it runs. */
export function exitOf(child: ChildProcess): string | undefined {
  if (child.signalCode !== null) return `signal ${child.signalCode}`;
  if (child.exitCode !== null) return `code ${child.exitCode}`;
  return undefined;
}

/** Why a stopped sweep stopped, for the step that could not measure. */
function stoppedReason(signal: AbortSignal): string {
  return `interrupted (${typeof signal.reason === 'string' ? signal.reason : 'aborted'})`;
}

/** Throws {@link StepNotMeasuredError} when `signal` has stopped the sweep. */
export function throwIfStopped(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new StepNotMeasuredError(stoppedReason(signal));
}

/** Resolves after `ms`, or at once when `signal` aborts. */
export function abortableDelay(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const onAbort = () => {
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * The next message of `type` from a worker; rejects with {@link StepNotMeasuredError} when the worker exits first
 * (or had already), when `deadlineMs` passes, or when `signal` stops the sweep. `index` names the worker.
 */
export function awaitWorkerMessage<T>(
  child: ChildProcess,
  type: string,
  deadlineMs: number,
  index: number,
  signal?: AbortSignal,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const ended = exitOf(child);
    if (ended !== undefined) {
      reject(new StepNotMeasuredError(`client worker ${index} (pid ${child.pid}) had exited (${ended})`));
      return;
    }
    if (signal?.aborted) {
      reject(new StepNotMeasuredError(stoppedReason(signal)));
      return;
    }
    const onAbort = () => {
      done();
      reject(new StepNotMeasuredError(stoppedReason(signal!)));
    };
    const done = () => {
      clearTimeout(timer);
      child.off('message', onMessage);
      child.off('exit', onExit);
      signal?.removeEventListener('abort', onAbort);
    };
    const onMessage = (message: { type: string }) => {
      if (message?.type !== type) return;
      done();
      resolve(message as T);
    };
    const onExit = (code: number | null, signal: NodeJS.Signals | null) => {
      done();
      reject(
        new StepNotMeasuredError(
          `client worker ${index} (pid ${child.pid}) exited (${signal === null ? `code ${code}` : `signal ${signal}`}) while the sweep waited for its ${type}`,
        ),
      );
    };
    const timer = setTimeout(() => {
      done();
      reject(
        new StepNotMeasuredError(`client worker ${index} (pid ${child.pid}) sent no ${type} within ${deadlineMs} ms`),
      );
    }, deadlineMs);
    child.on('message', onMessage);
    child.on('exit', onExit);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * The row of a step that could not be measured: no figures (zeros and nulls), `valid: false`, and why in
 * `invalidReason`, which always starts with "could not measure".
 */
export function unmeasuredRow(concurrency: number, reason: string): StepRow {
  return {
    concurrency,
    achievedConcurrency: 0,
    durationS: 0,
    sent: 0,
    completed: 0,
    failed: 0,
    verified: 0,
    errorRate: 0,
    requestsPerSecond: 0,
    outputTokensPerSecond: 0,
    peakOutputTokensPerSecond1s: 0,
    goodputPerSecond: 0,
    percentiles: {},
    eventLoopLagP99Ms: 0,
    serverLoopLagP99Ms: null,
    clientCpuPercentMax: 0,
    connectionsOpened: 0,
    connectionsReused: 0,
    retries: 0,
    staleRetries: 0,
    resumes: 0,
    capped: 0,
    skippedLate: 0,
    errors: {},
    faultsInjected: {},
    valid: false,
    invalidReason: `could not measure: ${reason}`,
  };
}
