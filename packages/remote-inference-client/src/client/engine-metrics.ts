import { performance } from 'node:perf_hooks';
import { isInferenceError } from '../errors.js';
import type { EngineEntry, Scheduler } from '../limits/admission.js';
import type { EngineLoadSample, ResolvedAdaptiveCapOptions } from '../limits/engine-capacity.js';
import { bookkeepingGet, isAttemptFailure, type SendAttempt } from '../transport/attempt.js';

/**
 * The series the adaptive cap reads, named as vLLM's `PrometheusStatLogger` registers them
 * (`vllm/v1/metrics/loggers.py`: gauges `vllm:num_requests_running`, `vllm:num_requests_waiting`,
 * `vllm:kv_cache_usage_perc`; the counter `vllm:prompt_tokens`, exposed by prometheus_client as `_total`).
 */
const RUNNING = 'vllm:num_requests_running';
const WAITING = 'vllm:num_requests_waiting';
const KV_CACHE_USAGE = 'vllm:kv_cache_usage_perc';
const PROMPT_TOKENS = 'vllm:prompt_tokens_total';

/**
 * The values of every sample of `name` in Prometheus text, one per label set (a data-parallel endpoint has one per
 * engine). Scans for the name at line starts only: `# HELP`/`# TYPE` lines and longer names sharing the prefix
 * (`vllm:num_requests_waiting_by_reason`) are skipped; label values may hold spaces, quotes and braces.
 */
function sampleValues(text: string, name: string): number[] {
  const values: number[] = [];
  let from = 0;
  for (;;) {
    const at = text.indexOf(name, from);
    if (at < 0) return values;
    from = at + name.length;
    if (at > 0 && text.charCodeAt(at - 1) !== 10) continue;
    let cursor = from;
    const next = text[cursor];
    if (next === '{') {
      cursor++;
      let quoted = false;
      for (; cursor < text.length; cursor++) {
        const char = text[cursor];
        if (quoted) {
          if (char === '\\') cursor++;
          else if (char === '"') quoted = false;
        } else if (char === '"') quoted = true;
        else if (char === '}' || char === '\n') break;
      }
      if (text[cursor] !== '}') continue;
      cursor++;
    } else if (next !== ' ' && next !== '\t') {
      continue;
    }
    let end = text.indexOf('\n', cursor);
    if (end < 0) end = text.length;
    const value = Number.parseFloat(text.slice(cursor, end).trim().split(/\s+/)[0] ?? '');
    if (Number.isFinite(value)) values.push(value);
  }
}

/**
 * Reads an engine's load from its `/metrics` body: running and waiting summed over the endpoint's engines, KV-cache
 * usage of the fullest. Undefined when the body holds no `vllm:num_requests_running` (not a vLLM server).
 */
export function parseEngineLoad(body: string): EngineLoadSample | undefined {
  const running = sampleValues(body, RUNNING);
  if (running.length === 0) return undefined;
  const sum = (values: number[]) => values.reduce((total, value) => total + value, 0);
  const kv = sampleValues(body, KV_CACHE_USAGE);
  const counter = sampleValues(body, PROMPT_TOKENS);
  return {
    running: sum(running),
    waiting: sum(sampleValues(body, WAITING)),
    kvCacheUsage: kv.length === 0 ? undefined : Math.max(...kv),
    counter: counter.length === 0 ? undefined : sum(counter),
  };
}

/**
 * Polls `GET /metrics` on every engine that has requests in flight or waiting, every `intervalMs` (every
 * `learningIntervalMs` while one of their caps is still learning), and feeds the
 * gauges to its learned cap. One poll per engine at a time; each bounded by `timeoutMs` and `maxBodyBytes`. An
 * engine that refuses the connection counts as restarting (its cap starts over); one that answers without vLLM's
 * gauges keeps the fixed cap. The timer does not keep the process alive.
 */
export class EngineLoadPoller {
  private readonly polling = new Set<EngineEntry>();
  private readonly polledAtMs = new WeakMap<EngineEntry, number>();
  private timer: NodeJS.Timeout;
  /** The timer ticks every `learningIntervalMs` (a learning cap binds), else every `intervalMs`. */
  private fast = false;
  private closed = false;
  /** Polls sent and failed, for stats and tests. */
  readonly counters = { polls: 0, failures: 0 };

  constructor(
    private readonly scheduler: Scheduler,
    private readonly send: SendAttempt,
    private readonly options: ResolvedAdaptiveCapOptions,
    private readonly headers: Record<string, string>,
    private readonly connectTimeoutMs: number,
  ) {
    this.timer = this.next(options.intervalMs);
    // A learning cap that starts to bind (a cold burst) is polled at once, not at the next slow tick.
    scheduler.onLearningCapReached = () => this.kick();
  }

  private next(delayMs: number): NodeJS.Timeout {
    const timer = setTimeout(() => {
      if (this.closed) return;
      this.fast = this.round();
      this.timer = this.next(this.fast ? this.options.learningIntervalMs : this.options.intervalMs);
    }, delayMs);
    timer.unref();
    return timer;
  }

  private kick(): void {
    if (this.fast || this.closed) return;
    this.fast = true;
    clearTimeout(this.timer);
    this.timer = this.next(0);
  }

  /**
   * Polls each busy engine that is due: every `intervalMs`, or every tick while its cap is learning and there is
   * something to learn (see `binding`). Returns whether one such engine is left, to tick fast. An idle engine is
   * not polled, and one never run full stays `learning` without fast polls.
   */
  private round(): boolean {
    const busy = this.scheduler.queuedCount > 0;
    const now = performance.now();
    let fast = false;
    for (const entry of this.scheduler.list()) {
      if (!entry.capacity) continue;
      if (entry.outstanding === 0 && !busy) continue; // an idle client learns nothing and costs nothing
      // Something to learn: the learning cap binds, or more of ours are in flight than the engine was last seen
      // running (after a doubling past the engine's slots, only a reading shows the queue that formed there).
      const capacity = entry.capacity;
      const binding =
        capacity.state === 'learning' &&
        (entry.outstanding >= entry.maxConcurrency || entry.outstanding > (capacity.last?.running ?? 0));
      if (binding) fast = true;
      // Half a fast tick of slack, so a steady engine polled on a fast tick is not skipped on the next slow one.
      const due =
        binding ||
        now - (this.polledAtMs.get(entry) ?? Number.NEGATIVE_INFINITY) >=
          this.options.intervalMs - this.options.learningIntervalMs / 2;
      if (!due || this.polling.has(entry)) continue;
      this.polledAtMs.set(entry, now);
      this.polling.add(entry);
      void this.poll(entry).finally(() => this.polling.delete(entry));
    }
    return fast;
  }

  private async poll(entry: EngineEntry): Promise<void> {
    const capacity = entry.capacity!;
    const { timeoutMs, maxBodyBytes } = this.options;
    this.counters.polls++;
    const outstandingBefore = entry.outstanding;
    try {
      const result = await this.send(
        entry.endpoint,
        bookkeepingGet(entry.endpoint, '/metrics', this.headers, timeoutMs, this.connectTimeoutMs, maxBodyBytes),
        undefined,
      );
      if (result.status !== 200 && result.status !== 404) {
        // A 5xx or a 429 (a proxy, an overloaded server) says nothing about the gauges: like a slow answer, it
        // keeps what was learned. It used to switch the engine to the fixed cap (512), and a queue of hundreds was
        // bound to a 6-slot engine at once.
        this.counters.failures++;
        return;
      }
      const sample = result.status === 200 && result.body ? parseEngineLoad(result.body.toString('latin1')) : undefined;
      // The engine counted somewhere between send and answer: the larger of the two counts of ours. Requests that
      // finished in between would otherwise read as another client's share and shrink the capacity.
      if (sample) capacity.observe(sample, Math.max(outstandingBefore, entry.outstanding));
      else capacity.noMetrics(); // a 404, or a 200 without vLLM's gauges: another server
    } catch (failure) {
      this.counters.failures++;
      // The transport rejects with an AttemptFailure; a `sendAttempt` seam may throw the typed error itself.
      const error = isAttemptFailure(failure) ? failure.error : isInferenceError(failure) ? failure : undefined;
      // A refused or reset connection: the engine is down or restarting. A slow answer says nothing.
      if (error?.code === 'ERR_CONNECTION') capacity.unreachable();
      else if (error?.code === 'ERR_STREAM_PARSE') capacity.noMetrics(); // over maxBodyBytes
    }
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
  }
}
