import { describe, expect, it } from 'vitest';
import { ConnectionError, HttpStatusError, StreamInterruptedError, TimeoutError } from '../errors.js';
import { backoffMs, isRetryable, parseRetryAfter, RetryBudget } from './retry-policy.js';

const retry = {
  maxAttempts: 4,
  baseBackoffMs: 100,
  maxBackoffMs: 2000,
  maxRetryAfterMs: 30_000,
  budgetRatio: 0.2,
  minRetriesPerSecond: 10,
  failover: true,
};

describe('retry policy', () => {
  it('retries only what is safe for generation', () => {
    expect(isRetryable(new ConnectionError('reset', 'ECONNRESET'))).toBe(true);
    expect(isRetryable(new TimeoutError('connect', 10))).toBe(true);
    expect(isRetryable(new TimeoutError('ttfb', 10))).toBe(false);
    expect(isRetryable(new HttpStatusError(429, '{}'))).toBe(true);
    expect(isRetryable(new HttpStatusError(503, '{}'))).toBe(true);
    expect(isRetryable(new HttpStatusError(502, 'Bad Gateway'))).toBe(true);
    expect(isRetryable(new HttpStatusError(500, '{"error":{"message":"boom"}}'))).toBe(false);
    expect(isRetryable(new HttpStatusError(400, '{}'))).toBe(false);
    expect(isRetryable(new StreamInterruptedError('cut'))).toBe(false);
  });

  it('parses Retry-After as seconds or an HTTP date', () => {
    expect(parseRetryAfter('2')).toBe(2000);
    expect(parseRetryAfter('0.5')).toBe(500);
    expect(parseRetryAfter(new Date(10_000).toUTCString(), 4000)).toBe(6000);
    expect(parseRetryAfter('soon')).toBeUndefined();
    expect(parseRetryAfter(undefined)).toBeUndefined();
    // The obsolete HTTP-date forms are dates too (RFC 9110 section 5.6.7).
    expect(parseRetryAfter('Thursday, 01-Jan-70 00:00:10 GMT', 4000)).toBe(6000);
    expect(parseRetryAfter('Thu Jan  1 00:00:10 1970', 4000)).toBe(6000);
    // Neither seconds nor a date: undefined, so the normal backoff applies. Node's lenient Date.parse read each of
    // these as a date in the past, that is an immediate retry.
    for (const value of ['-1', '1.', '.5', '5, 10', '1e3', 'in 5 s']) {
      expect(parseRetryAfter(value, 1_000_000_000_000), value).toBeUndefined();
    }
  });

  it('backs off with full jitter under a doubling cap, or as the server asked', () => {
    expect(backoffMs(2, retry, new ConnectionError('x', 'ECONNRESET'), () => 1)).toBe(100);
    expect(backoffMs(4, retry, new ConnectionError('x', 'ECONNRESET'), () => 1)).toBe(400);
    expect(backoffMs(20, retry, new ConnectionError('x', 'ECONNRESET'), () => 1)).toBe(2000);
    expect(backoffMs(2, retry, new ConnectionError('x', 'ECONNRESET'), () => 0)).toBe(0);
    expect(backoffMs(2, retry, new HttpStatusError(503, '', { retryAfterMs: 1234 }))).toBe(1234);
  });

  it('budgets retries to a fraction of requests', () => {
    const budget = new RetryBudget(0.1, 2);
    for (let index = 0; index < 100; index++) budget.recordRequest();
    let allowed = 0;
    for (let index = 0; index < 100; index++) if (budget.tryRetry()) allowed++;
    expect(allowed).toBe(12);
    expect(budget.denied).toBe(88);
  });

  it('counts requests in flight as the base when more are running than were started lately (an RL step)', () => {
    // Nothing started in the window (the step started its rollouts seconds ago), 1,000 still running.
    const budget = new RetryBudget(0.2, 10);
    let allowed = 0;
    for (let index = 0; index < 500; index++) if (budget.tryRetry(1000)) allowed++;
    expect(allowed).toBe(210);
    const idle = new RetryBudget(0.2, 10);
    allowed = 0;
    for (let index = 0; index < 500; index++) if (idle.tryRetry(0)) allowed++;
    expect(allowed).toBe(10);
  });
});
