import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { chromiumPath, skipReason } from '@rig/test-support';
import { type Browser, chromium, type Page } from 'playwright-core';
import { expect, it } from 'vitest';
import { html, markdownTable, type StepRow, type Summary } from '../src/report.js';

// The HTML report in a real headless browser (Debian's chromium, installed by .ci/run): it must render its charts
// offline with no console error, and tell a reader who was not at the terminal what the terminal showed: the step
// table, which steps are invalid and why (marked on every chart), the books, the configuration and the machine.
/** The few DOM members the checks read (this package compiles without the DOM library). */
interface DomNode {
  id: string;
  textContent: string | null;
  dataset: Record<string, string | undefined>;
  querySelector(selector: string): DomNode | null;
  querySelectorAll(selector: string): Iterable<DomNode> & { length: number };
}

const skipped = skipReason('load-sweep report-browser.test.ts', ['chromium']);
const executablePath = chromiumPath();

const step = (concurrency: number, errors: Record<string, number>): StepRow => ({
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

/**
 * Writes `summary`'s report.html, opens it in headless chromium with every non-file request aborted (a
 * self-contained report needs none) and waits for its charts. `problems` collects console errors and page errors.
 */
async function openReport(
  summary: Summary,
): Promise<{ browser: Browser; page: Page; problems: string[]; dir: string }> {
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
    await page.route('**/*', (route) => (route.request().url().startsWith('file:') ? route.continue() : route.abort()));
    await page.goto(pathToFileURL(file).href);
    await page.waitForFunction(
      () => (globalThis as unknown as { reportReady?: boolean }).reportReady === true,
      undefined,
      { timeout: 10_000 },
    );
    return { browser, page, problems, dir };
  } catch (error) {
    await browser.close();
    throw error;
  }
}

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
    const { browser, page, problems, dir } = await openReport(summary);
    try {
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

// Hostile text from outside the sweep: a model id and a target URL come from the user or an engine, an invalid
// reason and an error kind may quote what an engine sent. Any of them executing or adding an element is a defect.
const HOSTILE_MODEL = `m</script><script>window.pwned='model'</script><img src=x onerror="window.pwned='img'">`;
const HOSTILE_TARGET = `http://10.0.0.1:8000/?q=<svg onload="window.pwned='target'">&x="y"`;
const HOSTILE_REASON = `client event-loop lag p99 10.2 ms > 10 ms <b onclick="window.pwned='reason'">&amp;</b>`;
const HOSTILE_ERROR = `http_<iframe srcdoc="<script>parent.pwned='error'</script>">`;

it.skipIf(skipped !== undefined)(
  'report.html shows a reader who was not at the terminal the step table, why a step is invalid (marked on every chart), the accounting, configuration and machine; hostile text stays text',
  async () => {
    // The books against the engines' own counts (sweep.ts `applyAccounting`): one step balances, one is off.
    const books = (sent: number, engineAnswered: number) => ({
      source: 'fake-vllm tallies',
      sent,
      outcomes: sent,
      unsettled: 0,
      answered: sent - 3,
      attempts: sent + 1,
      staleRetries: 1,
      engineReceived: sent + 1,
      engineAnswered,
      engineFinished: null,
      engineInFlightAtStart: null,
      engineInFlightAtEnd: null,
      clientAnsweredBetween: null,
      clientInFlightAtStart: null,
      clientInFlightAtEnd: null,
      outcomeDifference: 0,
      answeredDifference: engineAnswered - (sent - 3),
      receivedDifference: 0,
      offBy: Math.abs(engineAnswered - (sent - 3)),
      explanation:
        engineAnswered === sent - 3 ? null : `engines answered ${engineAnswered} whole, the client counted ${sent - 3}`,
    });
    const invalidStep = {
      ...step(10_000, { [HOSTILE_ERROR]: 3 }),
      eventLoopLagP99Ms: 10.2,
      accounting: books(20_000, 19_999),
      valid: false,
      invalidReason: HOSTILE_REASON,
    } as StepRow;
    // `enginesFinished`: a per-step field this report does not know, shown as recorded.
    const validStep = { ...step(500, {}), accounting: books(1000, 997), enginesFinished: 997 } as StepRow;
    const summary: Summary = {
      schema: 'load-sweep/summary@1',
      startedAt: '2026-11-23T16:00:00.000Z',
      finishedAt: '2026-11-23T16:02:07.000Z',
      durationS: 127,
      machine: {
        cpus: 2,
        node: 'v20.20.2',
        platform: 'linux 6.1.0',
        cpuModel: 'Test CPU @ 2.0GHz',
        memoryBytes: 8 * 2 ** 30,
        hostname: 'sweep-host',
      },
      options: {
        steps: [500, 10_000],
        targets: [HOSTILE_TARGET],
        model: HOSTILE_MODEL,
        apiKey: 'sk-do-not-print',
        endpoint: 'completions',
        stream: true,
        mode: 'sdk',
        arrival: 'closed',
        workers: 0,
        sourceIps: ['127.0.0.2', '127.0.0.3'],
        fake: { engines: 20, processes: 2, maxNumSeqs: 256, ttftMs: 500, itlMs: 250, nice: 19 },
      },
      workers: 4,
      target: HOSTILE_TARGET,
      steps: [validStep, invalidStep],
      knee: 500,
      slo: { ttft_p99_ms: 2000, itl_p99_ms: 1000 },
      stoppedEarly: null,
    };
    const { browser, page, problems, dir } = await openReport(summary);
    try {
      const seen = await page.evaluate(() => {
        const document = (globalThis as unknown as { document: DomNode & { body: DomNode } }).document;
        const text = (selector: string) => document.querySelector(selector)?.textContent ?? null;
        const rows = [...document.querySelectorAll('#steps tbody tr')];
        const charts = (
          globalThis as unknown as {
            charts: Array<{
              canvas: DomNode;
              data: {
                labels: unknown[];
                datasets: Array<{ label: string; data: unknown[]; invalidMarker?: boolean; pointStyle?: unknown }>;
              };
            }>;
          }
        ).charts;
        return {
          pwned: (globalThis as unknown as { pwned?: string }).pwned ?? null,
          injected: document.querySelectorAll('img, svg, b, iframe').length,
          headers: [...document.querySelectorAll('#steps thead th')].map((cell) => cell.textContent),
          rows: rows.map((row) => ({
            valid: row.dataset.valid,
            cells: [...row.querySelectorAll('td')].map((cell) => cell.textContent),
            mark: row.querySelector('.invalid-mark')?.textContent ?? null,
            reason: row.querySelector('.invalid-reason')?.textContent ?? null,
          })),
          verdict: text('#verdict'),
          fleet: text('#fleet'),
          targets: [...document.querySelectorAll('#targets li')].map((item) => item.textContent),
          client: text('#client'),
          options: text('#options'),
          machine: text('#machine'),
          books: [...document.querySelectorAll('#books tbody tr')].map((row) => ({
            books: row.dataset.books,
            text: row.textContent,
            off: row.querySelector('.books-off')?.textContent ?? null,
            explanation: row.querySelector('.books-explanation')?.textContent ?? null,
          })),
          accountingHeaders: [...document.querySelectorAll('#accounting thead th')].map((cell) => cell.textContent),
          accounting: [...document.querySelectorAll('#accounting tbody tr')].map((row) =>
            [...row.querySelectorAll('td')].map((cell) => cell.textContent),
          ),
          page: document.body.textContent,
          charts: charts.map((chart) => ({
            id: chart.canvas.id,
            labels: chart.data.labels,
            markers: chart.data.datasets
              .filter((set) => set.invalidMarker)
              .map((set) => ({ label: set.label, marked: set.data.map((value) => value !== null) })),
            pointStyles: chart.data.datasets.filter((set) => !set.invalidMarker).map((set) => set.pointStyle),
            legend: (chart as unknown as { legend: { legendItems: Array<{ text: string }> } }).legend.legendItems.map(
              (item) => item.text,
            ),
          })),
        };
      });
      expect(problems).toEqual([]);
      expect(seen.pwned).toBeNull();
      expect(seen.injected).toBe(0);

      // The table has the terminal's columns and, cell for cell, its rows; the invalid one is marked, with its reason.
      const terminal = markdownTable(summary)
        .split('\n')
        .map((line) => line.split(' | ').map((cell) => cell.replace(/^\| ?| ?\|$/g, '')));
      expect(seen.headers).toEqual(terminal[0]);
      // Cell for cell, but for `valid`, which the report splits into the mark and the reason.
      const verdictColumn = terminal[0]!.indexOf('valid');
      const withoutVerdict = (cells: Array<string | null>) => cells.filter((_, index) => index !== verdictColumn);
      expect(verdictColumn).toBeGreaterThan(0);
      expect(seen.rows.map((row) => withoutVerdict(row.cells))).toEqual(terminal.slice(2).map(withoutVerdict));
      expect(seen.rows[0]!.cells[verdictColumn]).toBe('yes');
      expect(seen.rows.map((row) => row.valid)).toEqual(['true', 'false']);
      expect(seen.rows[0]!.mark).toBeNull();
      expect(seen.rows[1]!.mark).toContain('INVALID');
      expect(seen.rows[1]!.reason).toBe(HOSTILE_REASON);
      expect(seen.verdict).toContain('1 of 2 steps invalid');
      expect(seen.verdict).toContain(`C=10,000: ${HOSTILE_REASON}`);

      // Configuration: the fleet, the target URLs, the client; the API key never.
      expect(seen.fleet).toContain(HOSTILE_MODEL);
      expect(seen.fleet).toContain('set (not shown)');
      expect(seen.targets).toEqual([HOSTILE_TARGET]);
      for (const fact of ['sdk', 'completions (stream)', 'closed loop', '500, 10,000', '127.0.0.2, 127.0.0.3', '4'])
        expect(seen.client).toContain(fact);
      expect(seen.options).toContain(HOSTILE_MODEL.replaceAll('"', '\\"'));
      expect(seen.page).not.toContain('sk-do-not-print');

      // The machine and the run.
      for (const fact of ['2', 'Test CPU @ 2.0GHz', '8.0 GiB', 'v20.20.2', 'linux 6.1.0', 'sweep-host', '127 s'])
        expect(seen.machine).toContain(fact);
      expect(seen.machine).toContain('2026-11-23T16:00:00.000Z');

      // The books: the balanced step says so; the other says by how much and why.
      expect(seen.books.map((row) => row.books)).toEqual(['balance', 'off']);
      expect(seen.books[0]!.off).toBeNull();
      expect(seen.books[0]!.text).toContain('fake-vllm tallies');
      expect(seen.books[1]!.off).toBe('✗ OFF BY 2');
      expect(seen.books[1]!.explanation).toBe('engines answered 19999 whole, the client counted 19997');
      expect(seen.books[1]!.text).toContain('20,001'); // engines received

      // Client outcomes: per step, and a field the report does not know is shown as recorded.
      expect(seen.accountingHeaders).toContain('enginesFinished');
      expect(seen.accounting[0]).toContain('997');
      expect(seen.accounting[1]).toContain(`${HOSTILE_ERROR}:3`);

      // Every chart marks the invalid step and only it: a marker series with a legend entry, a tick label, and on
      // line charts a cross as the step's point in every series.
      expect(seen.charts.map((chart) => chart.id)).toEqual(['throughput', 'latency', 'decomposition', 'errors']);
      for (const chart of seen.charts) {
        expect(chart.markers, chart.id).toEqual([
          { label: '✗ invalid step (reason in the table)', marked: [false, true] },
        ]);
        expect(chart.legend, chart.id).toContain('✗ invalid step (reason in the table)');
        expect(chart.labels, chart.id).toEqual(['500', ['10000', '✗ INVALID']]);
      }
      for (const chart of seen.charts.slice(0, 2))
        for (const style of chart.pointStyles) expect(style, chart.id).toEqual(['circle', 'crossRot']);
      await page.screenshot({ path: join(dir, 'report.png'), fullPage: true });
      console.log(`report-browser: screenshot at ${join(dir, 'report.png')}`);
    } finally {
      await browser.close();
    }
  },
);
