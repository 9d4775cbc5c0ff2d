import { performance } from 'node:perf_hooks';
import { HttpStatusError, type InferenceError } from '../errors.js';
import type { ResolvedClientOptions } from './options.js';

/**
 * Whether an attempt's error may be re-sent: what its constructor decided (`error.retryable`), in one place for
 * every error. Only failures where the caller received nothing qualify: connection failures before the response,
 * connect timeouts, 429/503, a router's plain-text 5xx, no engine available yet.
 */
export function isRetryable(error: InferenceError): boolean {
  return error.retryable;
}

/**
 * An HTTP-date (RFC 9110 section 5.6.7): IMF-fixdate `Sun, 06 Nov 1994 08:49:37 GMT`, RFC 850 `Sunday, 06-Nov-94
 * 08:49:37 GMT` or asctime `Sun Nov  6 08:49:37 1994`: a day name first, a time of day inside.
 */
const HTTP_DATE = /^(Mon|Tue|Wed|Thu|Fri|Sat|Sun)[a-z]*,? .*\b\d{2}:\d{2}:\d{2}\b/;

/**
 * Parses `Retry-After` (delta seconds, a fraction tolerated, or an HTTP date) into ms, or undefined: then the
 * normal backoff applies. Anything else is undefined too; Node's lenient `Date.parse` used to read "-1", "1.",
 * ".5" and "5, 10" as dates in the past, that is an immediate retry.
 */
export function parseRetryAfter(value: string | string[] | undefined, nowMs = Date.now()): number | undefined {
  const raw = (Array.isArray(value) ? value[0] : value)?.trim();
  if (raw === undefined || raw === '') return undefined;
  if (/^\d+(\.\d+)?$/.test(raw)) return Math.round(Number(raw) * 1000);
  if (!HTTP_DATE.test(raw)) return undefined;
  const date = Date.parse(raw);
  return Number.isNaN(date) ? undefined : Math.max(0, date - nowMs);
}

/**
 * Retry budget (like gRPC's retry throttling, by rate): retries over the last second may be at most
 * `budgetRatio` of the requests of the last second plus `minRetriesPerSecond`. Both are sliding-window estimates
 * (the previous one-second bucket weighted by how much of it still overlaps): a fixed window would reset the request
 * count at each roll and refuse nearly every retry in the first moments of a second, exactly when an engine dies.
 *
 * "The requests of the last second" are those started in it, or those in flight, whichever is more. Started alone
 * fits short requests; an RL step starts all its rollouts at once and runs for minutes, so an engine restarting
 * seconds in found a base of zero and only the per-second floor: 54 of the 80 requests it held failed "Retry
 * budget spent" with `budgetRatio` 1. A fleet that fails everything fast still has few requests in flight.
 */
export class RetryBudget {
  private bucketStartMs = performance.now();
  private requests = 0;
  private retries = 0;
  private previousRequests = 0;
  private previousRetries = 0;
  denied = 0;

  constructor(
    private readonly ratio: number,
    private readonly minPerSecond: number,
  ) {}

  private roll(now: number): number {
    const elapsed = now - this.bucketStartMs;
    if (elapsed >= 2000) {
      this.previousRequests = 0;
      this.previousRetries = 0;
      this.requests = 0;
      this.retries = 0;
      this.bucketStartMs = now;
      return 1;
    }
    if (elapsed >= 1000) {
      this.previousRequests = this.requests;
      this.previousRetries = this.retries;
      this.requests = 0;
      this.retries = 0;
      this.bucketStartMs += 1000;
    }
    return 1 - (now - this.bucketStartMs) / 1000;
  }

  recordRequest(): void {
    this.roll(performance.now());
    this.requests++;
  }

  /** Takes a retry token, or returns false when the budget is spent. `inFlight`: requests not finished now. */
  tryRetry(inFlight = 0): boolean {
    const overlap = this.roll(performance.now());
    const requests = Math.max(this.requests + this.previousRequests * overlap, inFlight);
    const retries = this.retries + this.previousRetries * overlap;
    if (retries >= requests * this.ratio + this.minPerSecond) {
      this.denied++;
      return false;
    }
    this.retries++;
    return true;
  }
}

/** Backoff before attempt `attempt` (2 = first retry): full jitter, or the server's Retry-After. */
export function backoffMs(
  attempt: number,
  retry: ResolvedClientOptions['retry'],
  error: InferenceError,
  random: () => number = Math.random,
): number {
  if (error instanceof HttpStatusError && error.retryAfterMs !== undefined) return error.retryAfterMs;
  const cap = Math.min(retry.maxBackoffMs, retry.baseBackoffMs * 2 ** (attempt - 2));
  return random() * cap;
}
