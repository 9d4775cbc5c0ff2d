import { describe, expect, it } from 'vitest';
import { MetricHistograms } from '../src/histograms.js';
import { findKnee } from '../src/knee.js';
import { parseSweepArgs } from '../src/options.js';
import { preflight, workerCount } from '../src/sweep.js';
import { csv, html, markdownTable, type Summary } from '../src/report.js';

describe('histogram merge', () => {
  it('merging encoded per-worker histograms equals recording everything in one', () => {
    const whole = new MetricHistograms();
    const parts = [new MetricHistograms(), new MetricHistograms(), new MetricHistograms()];
    for (let index = 0; index < 30_000; index++) {
      const value = ((index * 7919) % 5000) + 0.5;
      whole.recordMs('ttft', value);
      parts[index % 3]!.recordMs('ttft', value);
    }
    const merged = new MetricHistograms();
    for (const part of parts) merged.mergeEncoded(part.encode());
    expect(merged.count('ttft')).toBe(30_000);
    for (const percentile of [50, 90, 99, 99.9])
      expect(merged.percentileMs('ttft', percentile)).toBe(whole.percentileMs('ttft', percentile));
    expect(merged.percentileMs('itl', 50)).toBeNull();
  });
});

describe('knee finder', () => {
  const step = (concurrency: number, ttftP99: number, valid = true, errorRate = 0) => ({
    concurrency,
    valid,
    errorRate,
    percentiles: { ttft_p99: ttftP99 },
  });
  it('picks the highest concurrency meeting the SLO, skipping invalid or erroring steps', () => {
    const steps = [
      step(500, 100),
      step(1000, 900),
      step(2000, 1900, false),
      step(5000, 1500, true, 0.2),
      step(10000, 5000),
    ];
    expect(findKnee(steps, { ttft_p99_ms: 1000 }, 0.05)).toBe(1000);
    expect(findKnee(steps, { ttft_p99_ms: 50 }, 0.05)).toBeNull();
  });
});

describe('options', () => {
  it('parses flags and names the bad one', () => {
    const { options } = parseSweepArgs([
      '--steps',
      '10,20',
      '--output-tokens',
      'uniform:4:8',
      '--source-ips',
      'auto:3',
      '--no-stream',
      '--slo',
      'ttft_p99_ms=500',
    ]);
    expect(options.steps).toEqual([10, 20]);
    expect(options.outputTokens).toEqual({ kind: 'uniform', min: 4, max: 8 });
    expect(options.sourceIps).toEqual(['127.0.0.2', '127.0.0.3', '127.0.0.4']);
    expect(options.stream).toBe(false);
    expect(options.slo).toEqual({ ttft_p99_ms: 500 });
    expect(() => parseSweepArgs(['--endpoint', 'embeddings'])).toThrow(/--endpoint/);
    expect(() => parseSweepArgs(['--slo', 'speed=1'])).toThrow(/--slo/);
    expect(() => parseSweepArgs(['--steps', '0'])).toThrow(/--steps/);
    expect(() => parseSweepArgs(['--target', 'http://x', '--faults', 'chaos'])).toThrow(/--faults/);
    expect(() => parseSweepArgs(['--fake-nice', '20'])).toThrow(/--fake-nice/);
    expect(parseSweepArgs([]).options.fake).toMatchObject({ engines: 20, maxNumSeqs: 256, nice: 19 });
  });
});

describe('worker sizing', () => {
  const sized = (flags: string[], cores: number, fileLimit: number) =>
    workerCount(parseSweepArgs(flags).options, cores, fileLimit);

  it('uses one worker per 2,500 slots of the peak, at most two per core, but always enough for the file limit', () => {
    expect(sized(['--steps', '50,500'], 2, 20_000)).toBe(1);
    expect(sized([], 2, 20_000)).toBe(4);
    expect(sized(['--steps', '40000'], 2, 20_000)).toBe(4);
    expect(sized(['--steps', '40000'], 16, 20_000)).toBe(16);
    expect(sized(['--steps', '10000'], 2, 1_024)).toBe(13);
    expect(sized(['--steps', '10000', '--workers', '3'], 2, 20_000)).toBe(3);
    expect(() => preflight(parseSweepArgs(['--steps', '10000']).options, 1, 1_024)).toThrow(/--workers 13/);
  });
});

describe('report schema', () => {
  const summary: Summary = {
    schema: 'load-sweep/summary@1',
    startedAt: '2026-01-01T00:00:00Z',
    machine: { cpus: 2, node: 'v20', platform: 'linux' },
    options: {},
    target: 'test',
    steps: [
      {
        concurrency: 10,
        achievedConcurrency: 9.8,
        durationS: 1,
        sent: 5,
        completed: 4,
        failed: 1,
        verified: 4,
        errorRate: 0.2,
        requestsPerSecond: 4,
        outputTokensPerSecond: 64,
        peakOutputTokensPerSecond1s: 70,
        goodputPerSecond: 4,
        percentiles: { ttft_p50: 10, ttft_p99: 20 },
        eventLoopLagP99Ms: 1,
        clientCpuPercentMax: 5,
        connectionsOpened: 10,
        connectionsReused: 2,
        retries: 1,
        staleRetries: 0,
        resumes: 0,
        capped: 0,
        skippedLate: 0,
        errors: { http_503: 1 },
        faultsInjected: {},
        valid: true,
        invalidReason: null,
      },
    ],
    knee: 10,
    slo: { ttft_p99_ms: 100 },
    stoppedEarly: null,
  };
  it('renders the table, CSV and a self-contained HTML page', () => {
    expect(markdownTable(summary)).toContain('| 10 | 10 |');
    const lines = csv(summary).trim().split('\n');
    expect(lines).toHaveLength(2);
    expect(lines[0]!.split(',')).toContain('ttft_p99');
    const page = html(summary);
    expect(page).toContain('new Chart(');
    expect(page).not.toMatch(/<script[^>]+src=/); // nothing fetched: opens offline
    expect(page.length).toBeGreaterThan(100_000); // Chart.js is inlined
  });
});
