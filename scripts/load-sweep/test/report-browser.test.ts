import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { chromiumPath, skipReason } from '@rig/test-support';
import { chromium } from 'playwright-core';
import { expect, it } from 'vitest';
import { html, type Summary } from '../src/report.js';

// The HTML report in a real headless browser (Debian's chromium, installed by .ci/run): it must render its charts
// offline with no console error.
const skipped = skipReason('load-sweep report-browser.test.ts', ['chromium']);
const executablePath = chromiumPath();

const step = (concurrency: number, errors: Record<string, number>) => ({
  concurrency,
  achievedConcurrency: concurrency,
  durationS: 10,
  sent: concurrency * 2,
  completed: concurrency * 2 - 3,
  failed: 3,
  verified: concurrency * 2 - 3,
  errorRate: 0.001,
  requestsPerSecond: concurrency / 5,
  outputTokensPerSecond: concurrency * 3,
  peakOutputTokensPerSecond1s: concurrency * 4,
  goodputPerSecond: concurrency / 6,
  percentiles: {
    ttft_p50: 700,
    ttft_p99: 900,
    itl_p50: 250,
    itl_p99: 310,
    e2e_p50: 4200,
    e2e_p99: 4700,
    queueWait_p50: 0.1,
    connect_p50: 0.4,
    serverQueue_p50: 30,
    clientAdded_p50: 12,
  },
  eventLoopLagP99Ms: 4,
  serverLoopLagP99Ms: 3,
  clientCpuPercentMax: 20,
  connectionsOpened: concurrency,
  connectionsReused: concurrency * 2,
  retries: 1,
  staleRetries: 2,
  resumes: 0,
  capped: 0,
  skippedLate: 0,
  errors,
  faultsInjected: { 'status-503': 1 },
  valid: true,
  invalidReason: null,
});

it.skipIf(skipped !== undefined)(
  'report.html renders four charts in headless chromium, offline, without console errors',
  async () => {
    const summary: Summary = {
      schema: 'load-sweep/summary@1',
      startedAt: '2026-11-23T00:00:00Z',
      machine: { cpus: 2, node: 'v20.20.2', platform: 'linux' },
      options: {},
      target: 'embedded fake-vllm (4 engines)',
      steps: [step(500, {}), step(1000, { http_503: 2, reset: 1 }), step(2000, { timeout_ttfb: 3 })],
      knee: 1000,
      slo: { ttft_p99_ms: 2000 },
      stoppedEarly: null,
    };
    const dir = mkdtempSync(join(tmpdir(), 'report-'));
    const file = join(dir, 'report.html');
    writeFileSync(file, html(summary));
    const browser = await chromium.launch({
      executablePath: executablePath!,
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
    try {
      const page = await browser.newPage();
      const problems: string[] = [];
      page.on('console', (message) => {
        if (message.type() === 'error') problems.push(message.text());
      });
      page.on('pageerror', (error) => problems.push(error.message));
      // Offline: any network request would be a defect of a self-contained report.
      await page.route('**/*', (route) =>
        route.request().url().startsWith('file:') ? route.continue() : route.abort(),
      );
      await page.goto(pathToFileURL(file).href);
      await page.waitForFunction(
        () => (globalThis as unknown as { reportReady?: boolean }).reportReady === true,
        undefined,
        { timeout: 10_000 },
      );
      const charts = await page.evaluate(() =>
        (
          globalThis as unknown as {
            charts: Array<{
              data: { datasets: Array<{ label: string; data: unknown[]; invalidMarker?: boolean }> };
              canvas: { width: number; height: number };
            }>;
          }
        ).charts.map((chart) => ({
          datasets: chart.data.datasets.filter((set) => !set.invalidMarker).length,
          points: chart.data.datasets[0]?.data.length ?? 0,
          series: Object.fromEntries(
            chart.data.datasets.filter((set) => !set.invalidMarker).map((set) => [set.label, set.data]),
          ),
          width: chart.canvas.width,
          height: chart.canvas.height,
        })),
      );
      expect(problems).toEqual([]);
      expect(charts).toHaveLength(4);
      for (const chart of charts) {
        expect(chart.datasets).toBeGreaterThan(0);
        expect(chart.points).toBe(3);
        expect(chart.width).toBeGreaterThan(100);
        expect(chart.height).toBeGreaterThan(50);
      }
      // The decomposition stacks client queue, connect, engine queue, the engine's TTFT after it, client-added.
      expect(charts[2]!.series).toEqual({
        'client queue': [0.1, 0.1, 0.1],
        connect: [0.4, 0.4, 0.4],
        'engine queue': [30, 30, 30],
        'engine TTFT after queue': [658, 658, 658],
        'client-added': [12, 12, 12],
      });
      // The errors chart stacks one dataset per error kind seen.
      expect(charts[3]!.datasets).toBe(3);
      await page.screenshot({ path: join(dir, 'report.png'), fullPage: true });
      console.log(`report-browser: screenshot at ${join(dir, 'report.png')}`);
    } finally {
      await browser.close();
    }
  },
);
