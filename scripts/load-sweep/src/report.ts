import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

/** One row of summary.json: one concurrency step. Schema documented in the README. */
export interface StepRow {
  concurrency: number;
  achievedConcurrency: number;
  durationS: number;
  sent: number;
  completed: number;
  failed: number;
  verified: number;
  errorRate: number;
  requestsPerSecond: number;
  outputTokensPerSecond: number;
  peakOutputTokensPerSecond1s: number;
  goodputPerSecond: number;
  /** `<metric>_<p50|p90|p99|p99.9>` in ms: ttft, itl, tpot, e2e, queueWait, connect, serverQueue, clientAdded, scheduleLag. */
  percentiles: Record<string, number | null>;
  eventLoopLagP99Ms: number;
  /**
   * Embedded fake-vllm only (null otherwise): the worst engine process's event-loop lag p99 over the window. When
   * high, the stand-in fleet was late writing tokens, and that delay shows in TTFT, ITL and client-added latency.
   */
  serverLoopLagP99Ms: number | null;
  clientCpuPercentMax: number;
  connectionsOpened: number;
  connectionsReused: number;
  retries: number;
  staleRetries: number;
  resumes: number;
  /** Open loop: arrivals not sent (in-flight cap reached), and arrivals skipped for being too late. */
  capped: number;
  skippedLate: number;
  errors: Record<string, number>;
  faultsInjected: Record<string, number>;
  valid: boolean;
  invalidReason: string | null;
}

/** summary.json. */
export interface Summary {
  schema: 'load-sweep/summary@1';
  startedAt: string;
  machine: { cpus: number; node: string; platform: string };
  options: unknown;
  target: string;
  steps: StepRow[];
  knee: number | null;
  slo: Record<string, number>;
  stoppedEarly: string | null;
}

const fmt = (value: number | null | undefined, digits = 1) =>
  value === null || value === undefined ? '-' : value.toFixed(digits);

/** The markdown table printed at the end. */
export function markdownTable(summary: Summary): string {
  const header =
    '| C target | C achieved | req/s | out tok/s | TTFT p50/p99 ms | ITL p50/p99 ms | E2E p99 ms | client queue p99 | engine queue p50 | client-added p99 | loop lag p99 | engine lag p99 | CPU max % | sent | ok | failed | errors | valid |';
  const rows = summary.steps.map((step) => {
    const p = step.percentiles;
    const errors =
      Object.entries(step.errors)
        .map(([kind, count]) => `${kind}:${count}`)
        .join(' ') || '-';
    return `| ${step.concurrency} | ${fmt(step.achievedConcurrency, 0)} | ${fmt(step.requestsPerSecond, 0)} | ${fmt(step.outputTokensPerSecond, 0)} | ${fmt(p.ttft_p50, 0)}/${fmt(p.ttft_p99, 0)} | ${fmt(p.itl_p50, 0)}/${fmt(p.itl_p99, 0)} | ${fmt(p.e2e_p99, 0)} | ${fmt(p.queueWait_p99)} | ${fmt(p.serverQueue_p50, 0)} | ${fmt(p.clientAdded_p99)} | ${fmt(step.eventLoopLagP99Ms)} | ${fmt(step.serverLoopLagP99Ms)} | ${fmt(step.clientCpuPercentMax, 0)} | ${step.sent} | ${step.completed} | ${step.failed} | ${errors} | ${step.valid ? 'yes' : `no: ${step.invalidReason}`} |`;
  });
  return [header, `|${' --- |'.repeat(18)}`, ...rows].join('\n');
}

/** summary.csv: one row per step, flat. */
export function csv(summary: Summary): string {
  const percentileKeys = [...new Set(summary.steps.flatMap((step) => Object.keys(step.percentiles)))].sort();
  const columns = [
    'concurrency',
    'achievedConcurrency',
    'durationS',
    'sent',
    'completed',
    'failed',
    'verified',
    'errorRate',
    'requestsPerSecond',
    'outputTokensPerSecond',
    'peakOutputTokensPerSecond1s',
    'goodputPerSecond',
    'eventLoopLagP99Ms',
    'serverLoopLagP99Ms',
    'clientCpuPercentMax',
    'connectionsOpened',
    'connectionsReused',
    'retries',
    'staleRetries',
    'resumes',
    'capped',
    'skippedLate',
    'valid',
  ] as const;
  const lines = [[...columns, ...percentileKeys, 'errors'].join(',')];
  for (const step of summary.steps) {
    const errors = Object.entries(step.errors)
      .map(([kind, count]) => `${kind}=${count}`)
      .join(';');
    lines.push(
      [
        ...columns.map((column) => String(step[column])),
        ...percentileKeys.map((key) => String(step.percentiles[key] ?? '')),
        `"${errors}"`,
      ].join(','),
    );
  }
  return `${lines.join('\n')}\n`;
}

/** A self-contained HTML report: Chart.js inlined, data embedded, opens offline. */
export function html(summary: Summary): string {
  const require = createRequire(import.meta.url);
  // chart.js's `exports` map hides its UMD build: locate it beside the package's main entry.
  const chartJs = readFileSync(join(dirname(require.resolve('chart.js')), 'chart.umd.min.js'), 'utf8');
  const data = JSON.stringify(summary).replaceAll('<', '\\u003c');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Load sweep ${summary.startedAt}</title>
<style>body{font:14px system-ui,sans-serif;margin:24px;max-width:1200px}canvas{max-height:360px}section{margin:28px 0}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}</style>
</head><body>
<h1>Load sweep</h1>
<p id="meta"></p>
<section><h2>Throughput vs concurrency</h2><canvas id="throughput"></canvas></section>
<section><h2>Latency percentiles vs concurrency</h2><canvas id="latency"></canvas></section>
<section><h2>Latency decomposition (p50 of each part, ms)</h2><canvas id="decomposition"></canvas></section>
<section><h2>Errors by kind</h2><canvas id="errors"></canvas></section>
<script>${chartJs}</script>
<script>
// A report is read, not watched: no animation, so what prints or screenshots is the final state.
Chart.defaults.animation = false;
const summary = ${data};
const labels = summary.steps.map((s) => String(s.concurrency));
const p = (key) => summary.steps.map((s) => s.percentiles[key]);
document.getElementById('meta').textContent = 'Target: ' + summary.target + ' | knee: ' + (summary.knee ?? 'none') + ' | SLO: ' + JSON.stringify(summary.slo) + ' | ' + summary.machine.cpus + ' cores, Node ' + summary.machine.node;
window.charts = [];
window.charts.push(new Chart(document.getElementById('throughput'), { type: 'line', data: { labels, datasets: [
  { label: 'requests/s', data: summary.steps.map((s) => s.requestsPerSecond), yAxisID: 'y' },
  { label: 'output tokens/s', data: summary.steps.map((s) => s.outputTokensPerSecond), yAxisID: 'y1' },
  { label: 'goodput (req/s within SLO)', data: summary.steps.map((s) => s.goodputPerSecond), yAxisID: 'y' }] },
  options: { scales: { y: { title: { display: true, text: 'req/s' } }, y1: { position: 'right', title: { display: true, text: 'tokens/s' } } } } }));
window.charts.push(new Chart(document.getElementById('latency'), { type: 'line', data: { labels, datasets: [
  { label: 'TTFT p50', data: p('ttft_p50') }, { label: 'TTFT p99', data: p('ttft_p99') },
  { label: 'ITL p50', data: p('itl_p50') }, { label: 'ITL p99', data: p('itl_p99') },
  { label: 'E2E p50', data: p('e2e_p50') }, { label: 'E2E p99', data: p('e2e_p99') }] },
  options: { scales: { y: { type: 'logarithmic', title: { display: true, text: 'ms' } } } } }));
window.charts.push(new Chart(document.getElementById('decomposition'), { type: 'bar', data: { labels, datasets: [
  { label: 'client queue', data: p('queueWait_p50') }, { label: 'connect', data: p('connect_p50') },
  { label: 'engine queue', data: p('serverQueue_p50') },
  { label: 'engine TTFT after queue', data: summary.steps.map((s) => Math.max(0, (s.percentiles.ttft_p50 ?? 0) - (s.percentiles.clientAdded_p50 ?? 0) - (s.percentiles.serverQueue_p50 ?? 0))) },
  { label: 'client-added', data: p('clientAdded_p50') }] }, options: { scales: { x: { stacked: true }, y: { stacked: true, title: { display: true, text: 'ms' } } } } }));
const kinds = [...new Set(summary.steps.flatMap((s) => Object.keys(s.errors)))];
window.charts.push(new Chart(document.getElementById('errors'), { type: 'bar', data: { labels, datasets: (kinds.length ? kinds : ['none']).map((kind) => ({ label: kind, data: summary.steps.map((s) => s.errors[kind] ?? 0) })) },
  options: { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, title: { display: true, text: 'requests' } } } } }));
window.reportReady = true;
</script>
</body></html>
`;
}

/** Writes summary.json, summary.csv and report.html into `dir`. */
export function writeReports(dir: string, summary: Summary): void {
  writeFileSync(join(dir, 'summary.json'), `${JSON.stringify(summary, null, 2)}\n`);
  writeFileSync(join(dir, 'summary.csv'), csv(summary));
  writeFileSync(join(dir, 'report.html'), html(summary));
}
