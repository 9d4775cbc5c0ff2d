import { describe, expect, it } from 'vitest';
import { findKnee } from '../src/knee.js';
import { parseSweepArgs, SweepConfigError } from '../src/options.js';
import { parseSlo, percentilesMeetSlo, requestMeetsSlo, sloThresholds } from '../src/slo.js';

describe('the SLO grammar: one definition for --slo, the knee and goodput', () => {
  it('parses every metric and percentile the steps report, and names the bad entry', () => {
    expect(parseSlo('ttft_p99_ms=2000,tpot_p50_ms=100,itl_p99.9_ms=500,e2e_p90_ms=9000')).toEqual({
      ttft_p99_ms: 2000,
      tpot_p50_ms: 100,
      'itl_p99.9_ms': 500,
      e2e_p90_ms: 9000,
    });
    expect(parseSlo({ tpot_p99_ms: 80 }, 'slo')).toEqual({ tpot_p99_ms: 80 });
    for (const bad of [
      'speed=1',
      'ttft_p99_ms=',
      'ttft_p99_ms=-5',
      'ttft_p99_ms=0',
      'ttft_p99_ms=1=2',
      'ttft_p95_ms=1',
      '',
    ])
      expect(() => parseSlo(bad), bad).toThrow(SweepConfigError);
    expect(() => parseSweepArgs(['--slo', 'ttft_p99_ms=abc'])).toThrow(/`--slo` entries like .*got `ttft_p99_ms=abc`/);
    expect(parseSweepArgs(['--slo', 'tpot_p99_ms=100']).options.slo).toEqual({ tpot_p99_ms: 100 });
  });

  it('a step and a request are both held to tpot (the per-request check once ignored it)', () => {
    const slo = parseSweepArgs(['--slo', 'ttft_p99_ms=1000,tpot_p99_ms=100']).options.slo;
    expect(percentilesMeetSlo({ ttft_p99: 500, tpot_p99: 99 }, slo)).toBe(true);
    expect(percentilesMeetSlo({ ttft_p99: 500, tpot_p99: 101 }, slo)).toBe(false);
    expect(percentilesMeetSlo({ ttft_p99: 500 }, slo)).toBe(false); // a figure the step lacks does not pass
    const step = (concurrency: number, tpot: number) => ({
      concurrency,
      valid: true,
      errorRate: 0,
      percentiles: { ttft_p99: 500, tpot_p99: tpot },
    });
    expect(findKnee([step(10, 50), step(20, 150)], slo, 0.05)).toBe(10);
    const thresholds = sloThresholds(slo);
    const request = { ttftMs: 500, maxItlMs: 20, tpotMs: 99, e2eMs: 2000 };
    expect(requestMeetsSlo(request, thresholds)).toBe(true);
    expect(requestMeetsSlo({ ...request, tpotMs: 150 }, thresholds)).toBe(false);
    expect(requestMeetsSlo({ ...request, ttftMs: 1500 }, thresholds)).toBe(false);
    // A figure one request does not have (one token: no tpot) is not judged.
    expect(requestMeetsSlo({ ...request, tpotMs: undefined }, thresholds)).toBe(true);
    expect(requestMeetsSlo({ ...request, e2eMs: 1e9 }, sloThresholds({ e2e_p50_ms: 1000 }))).toBe(false);
    expect(requestMeetsSlo({ ...request, maxItlMs: 300 }, sloThresholds({ itl_p99_ms: 200 }))).toBe(false);
  });
});
