import { describe, expect, it } from 'vitest';
import { MetricHistograms } from '../src/histograms.js';
import { findKnee } from '../src/knee.js';
import { bar, type LiveState, LiveView, renderLive, renderPlain } from '../src/live.js';
import { parseSweepArgs, SweepConfigError } from '../src/options.js';
import { csv, html, markdownTable, type Summary } from '../src/report.js';
import { preflight, workerCount } from '../src/sweep.js';

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
    expect(() => parseSweepArgs(['--resume', '--endpoint', 'chat'])).toThrow(/--resume/);
    expect(parseSweepArgs(['--resume']).options.resume).toBe(true);
    // The embedded fleet runs under SCHED_IDLE by default on Linux; a number is a nice level.
    expect(parseSweepArgs([]).options.fake).toMatchObject({ engines: 20, maxNumSeqs: 256, nice: 'idle' });
    expect(parseSweepArgs(['--fake-nice', '19']).options.fake.nice).toBe(19);
    expect(parseSweepArgs(['--fake-nice', 'idle']).options.fake.nice).toBe('idle');
    expect(() => parseSweepArgs(['--fake-nice', 'low'])).toThrow(/--fake-nice/);
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
    expect(() => preflight(parseSweepArgs(['--steps', '10000']).options, 1, 1_024)).toThrow(SweepConfigError);
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
        serverLoopLagP99Ms: null,
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

describe('live view', () => {
  const state: LiveState = {
    stepIndex: 3,
    steps: 5,
    target: 5000,
    openLoop: false,
    phase: 'measure',
    phaseElapsedS: 6.2,
    phaseLengthS: 10,
    sweepElapsedS: 72.4,
    fraction: 0.71,
    inFlight: 5000,
    completed: 12_345,
    failed: 2,
    retries: 7,
    requestsPerSecond: 1139.4,
    tokensPerSecond: 18_220,
    lagP99Ms: 6.61,
    cpuPercentMax: 18.2,
  };
  /** A terminal or a log file: whatever is written, kept. */
  const sink = (isTTY: boolean, columns?: number) => {
    const out = { isTTY, columns, text: '', write: (chunk: string) => (out.text += chunk) };
    return out;
  };

  it('renders a progress bar and the current step figures', () => {
    expect(bar(0.5, 10)).toBe('[#####-----]  50%');
    expect(bar(2, 4)).toBe('[####] 100%');
    expect(bar(Number.NaN, 4)).toBe('[----]   0%');
    expect(renderLive(state)).toEqual([
      '[#################-------]  71% step 4/5 C=5,000 measuring 6/10 s  elapsed 1:12',
      '  in flight 5,000 | 1,139 req/s 18,220 tok/s | ok 12,345 failed 2 retries 7 | loop lag p99 6.6 ms CPU 18%',
    ]);
    expect(renderPlain({ ...state, openLoop: true, phase: 'drain', phaseLengthS: 0, lagP99Ms: undefined })).toBe(
      '[1:12] 71% step 4/5 rate=5000/s draining 6 s: in flight 5,000 | 1,139 req/s 18,220 tok/s | ok 12,345 failed 2 retries 7 | loop lag p99 - CPU 18%',
    );
  });

  it('redraws two lines in place on a terminal, keeping log lines above them; cuts lines to the width', () => {
    const out = sink(true, 60);
    const view = new LiveView(out, true);
    view.update(state);
    view.log('step C=5000: done');
    view.update({ ...state, phaseElapsedS: 7 });
    view.clear();
    const erase = '\x1b[1A\x1b[2K\x1b[1A\x1b[2K';
    const [first, second] = renderLive(state).map((line) => line.slice(0, 59));
    const [third, fourth] = renderLive({ ...state, phaseElapsedS: 7 }).map((line) => line.slice(0, 59));
    expect(out.text).toBe(`${first}\n${second}\n${erase}step C=5000: done\n${third}\n${fourth}\n${erase}`);
  });

  it('prints plain lines, at most one progress line per interval, when not interactive', () => {
    const out = sink(false);
    const view = new LiveView(out, false, 5);
    view.update({ ...state, sweepElapsedS: 10 });
    view.update({ ...state, sweepElapsedS: 12 });
    view.log('step C=5000: done');
    view.update({ ...state, sweepElapsedS: 15.5 });
    const lines = out.text.trim().split('\n');
    expect(lines).toHaveLength(3);
    expect(lines[0]).toMatch(/^\[0:10\] 71% step 4\/5 C=5000 measuring 6\/10 s: in flight 5,000/);
    expect(lines[1]).toBe('step C=5000: done');
    expect(lines[2]).toMatch(/^\[0:15\]/);
    expect(out.text).not.toContain('\x1b');
  });
});
