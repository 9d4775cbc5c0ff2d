import type { EngineRequest, FinishReason } from './engine.js';
import { Histogram, oneTwoFiveBuckets, REQUEST_LATENCY_BUCKETS_S } from './histogram.js';

/** vLLM's finish reasons, the values of `vllm:request_success{finished_reason}` (`vllm/v1/engine/__init__.py`). */
export const FINISHED_REASONS = ['stop', 'length', 'abort', 'error', 'repetition'] as const;

/**
 * What vLLM's Prometheus logger records when a request finishes (`vllm/v1/metrics/loggers.py` record): per
 * finished sequence (vLLM runs each of a request's `n` choices as its own engine request) its finish reason,
 * end-to-end and queue time, prompt and generation token counts; per request its `n` and `max_tokens`.
 */
export class EngineMetrics {
  readonly finishedByReason: Record<(typeof FINISHED_REASONS)[number], number> = {
    stop: 0,
    length: 0,
    abort: 0,
    error: 0,
    repetition: 0,
  };
  readonly e2eHistogram = new Histogram(REQUEST_LATENCY_BUCKETS_S);
  readonly queueHistogram = new Histogram(REQUEST_LATENCY_BUCKETS_S);
  readonly promptTokensHistogram: Histogram;
  readonly generationTokensHistogram: Histogram;
  readonly maxTokensHistogram: Histogram;
  readonly nHistogram = new Histogram([1, 2, 5, 10, 20]);

  constructor(maxModelLen: number) {
    this.promptTokensHistogram = new Histogram(oneTwoFiveBuckets(maxModelLen));
    this.generationTokensHistogram = new Histogram(oneTwoFiveBuckets(maxModelLen));
    this.maxTokensHistogram = new Histogram(oneTwoFiveBuckets(maxModelLen));
  }

  /** Records a request that ended: finished, aborted by the engine, or cancelled by its client (`abort`). */
  recordFinished(request: EngineRequest, n: number, maxTokens: number, cancelled = false): void {
    const e2eS =
      ((request.finishedAtMs >= 0 ? request.finishedAtMs : request.arrivedAtMs) - request.arrivedAtMs) / 1000;
    const queueS = Math.max(0, request.queueMs) / 1000;
    for (const sequence of request.sequences) {
      const reason: FinishReason | 'abort' = cancelled ? 'abort' : (sequence.finishReason ?? 'abort');
      this.finishedByReason[reason]++;
      this.e2eHistogram.observe(e2eS);
      this.queueHistogram.observe(queueS);
      this.promptTokensHistogram.observe(sequence.promptTokenIds.length);
      this.generationTokensHistogram.observe(sequence.tokenIds.length);
    }
    this.nHistogram.observe(n);
    this.maxTokensHistogram.observe(maxTokens);
  }
}
