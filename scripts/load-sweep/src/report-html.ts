import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { StepRow, Summary } from './report.js';
import { countsText, stepColumns } from './step-columns.js';

/** A `JSON.stringify` replacer: an `apiKey` (a bearer token for `--target` engines) is written as `(set)`. */
export function withoutSecrets(key: string, value: unknown): unknown {
  return key === 'apiKey' && value !== undefined && value !== null ? '(set)' : value;
}

/** Text made safe inside HTML elements and quoted attributes. */
export function escapeHtml(text: string): string {
  return text
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll('"', '&quot;')
    .replaceAll("'", '&#39;');
}

/**
 * JSON for a `<script>` element. Every `<` is escaped, so no `</script>` or `<!--` inside a model id, URL or reason
 * can end or change the script (HTML parses script text before JavaScript does).
 */
function scriptJson(value: unknown): string {
  return JSON.stringify(value, withoutSecrets).replaceAll('<', '\\u003c');
}

/** The fields of a step row this report knows; any other field (newer sweeps) is shown as it is, in Accounting. */
const KNOWN_STEP_FIELDS = new Set<string>([
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
  'percentiles',
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
  'errors',
  'faultsInjected',
  'accounting',
  'valid',
  'invalidReason',
  // Rollout steps: in their own step table (ROLLOUT_COLUMNS) and in "Rollouts".
  'scenario',
  'policy',
  'fleet',
  'rollout',
]);

/** Any value as short text: numbers with separators, objects as compact `key:value` lists or JSON. */
function valueText(value: unknown): string {
  if (value === null || value === undefined) return '-';
  if (typeof value === 'number') return Number.isInteger(value) ? value.toLocaleString('en-US') : value.toFixed(2);
  if (typeof value === 'boolean') return value ? 'yes' : 'no';
  if (typeof value === 'string') return value;
  if (Array.isArray(value)) return value.map(valueText).join(', ') || '-';
  if (typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>);
    if (entries.every(([, entry]) => typeof entry === 'number')) return countsText(value as Record<string, number>);
    return JSON.stringify(value, withoutSecrets);
  }
  return String(value);
}

const stepLabel = (summary: Summary, step: StepRow) =>
  step.scenario === 'rollout-step'
    ? `N=${step.concurrency.toLocaleString('en-US')} ${step.policy ?? ''}`.trim()
    : `${openLoop(summary) ? 'rate' : 'C'}=${step.concurrency.toLocaleString('en-US')}`;

function openLoop(summary: Summary): boolean {
  const arrival = (summary.options as { arrival?: unknown } | null)?.arrival;
  return arrival !== undefined && arrival !== 'closed';
}

/** `<table>` from a header row and rows of already escaped cells. */
function table(headers: readonly string[], rows: readonly string[], attributes = ''): string {
  return `<table${attributes}><thead><tr>${headers.map((header) => `<th>${escapeHtml(header)}</th>`).join('')}</tr></thead><tbody>${rows.join('')}</tbody></table>`;
}

/** Two-column `<table>` of label and value, values escaped; undefined values are left out. */
function facts(id: string, entries: ReadonlyArray<[string, unknown]>): string {
  const rows = entries
    .filter(([, value]) => value !== undefined)
    .map(([label, value]) => `<tr><th>${escapeHtml(label)}</th><td>${escapeHtml(valueText(value))}</td></tr>`);
  return `<table class="facts" id="${id}"><tbody>${rows.join('')}</tbody></table>`;
}

/** The step table: the terminal's columns, invalid rows marked with their reason in the `valid` column. */
function stepTable(summary: Summary): string {
  const columns = stepColumns(summary);
  const headers = columns.map((column) => column.header);
  if (openLoop(summary)) headers[0] = 'rate target (req/s)';
  const rows = summary.steps.map((step) => {
    const cells = columns.map((column) => {
      if (column.header !== 'valid')
        return `<td${column.header === 'errors' || column.header === 'restart' ? ' class="text"' : ''}>${escapeHtml(column.cell(step))}</td>`;
      return step.valid
        ? `<td class="verdict">${escapeHtml(column.cell(step))}</td>`
        : `<td class="verdict"><strong class="invalid-mark">✗ INVALID</strong> <span class="invalid-reason">${escapeHtml(step.invalidReason ?? 'no reason recorded')}</span></td>`;
    });
    return `<tr data-step="${step.concurrency}" data-valid="${step.valid}"${step.valid ? '' : ' class="invalid"'}>${cells.join('')}</tr>`;
  });
  return table(headers, rows, ' id="steps"');
}

/** A step's books as recorded (`StepAccounting`, read field by field: older and newer summaries differ). */
type Books = Record<string, unknown>;

const signed = (value: unknown) =>
  typeof value !== 'number' ? '-' : value > 0 ? `+${value.toLocaleString('en-US')}` : value.toLocaleString('en-US');

/** The books' columns: the client's counts, the engines' counts, the differences. */
const BOOK_COLUMNS: ReadonlyArray<{ header: string; fields: readonly string[]; cell(books: Books): string }> = [
  { header: 'engine-side source', fields: ['source'], cell: (books) => valueText(books.source) },
  { header: 'client sent', fields: ['sent'], cell: (books) => valueText(books.sent) },
  { header: 'client outcomes (ok + failed)', fields: ['outcomes'], cell: (books) => valueText(books.outcomes) },
  { header: 'unsettled at step end', fields: ['unsettled'], cell: (books) => valueText(books.unsettled) },
  { header: 'client answered whole', fields: ['answered'], cell: (books) => valueText(books.answered) },
  {
    header: 'client attempts (+ stale re-sends) (− failed connects)',
    fields: ['attempts', 'staleRetries', 'connectErrors'],
    cell: (books) =>
      `${valueText(books.attempts)}${typeof books.staleRetries === 'number' && books.staleRetries > 0 ? ` (+${books.staleRetries})` : ''}${typeof books.connectErrors === 'number' && books.connectErrors > 0 ? ` (−${books.connectErrors})` : ''}`,
  },
  { header: 'engines received', fields: ['engineReceived'], cell: (books) => valueText(books.engineReceived) },
  { header: 'engines answered', fields: ['engineAnswered'], cell: (books) => valueText(books.engineAnswered) },
  {
    header: 'engines finished by reason',
    fields: ['engineFinished'],
    cell: (books) => valueText(books.engineFinished),
  },
  {
    header: 'in flight at start / end: engines; client',
    fields: ['engineInFlightAtStart', 'engineInFlightAtEnd', 'clientInFlightAtStart', 'clientInFlightAtEnd'],
    cell: (books) =>
      books.engineInFlightAtStart === null || books.engineInFlightAtStart === undefined
        ? '-'
        : `${valueText(books.engineInFlightAtStart)} / ${valueText(books.engineInFlightAtEnd)}; ${valueText(books.clientInFlightAtStart)} / ${valueText(books.clientInFlightAtEnd)}`,
  },
  {
    header: 'client answered between boundaries',
    fields: ['clientAnsweredBetween'],
    cell: (books) => valueText(books.clientAnsweredBetween),
  },
  {
    header: 'difference: outcomes / answered / received',
    fields: ['outcomeDifference', 'answeredDifference', 'receivedDifference'],
    cell: (books) =>
      `${signed(books.outcomeDifference)} / ${signed(books.answeredDifference)} / ${signed(books.receivedDifference)}`,
  },
];
const KNOWN_BOOK_FIELDS = new Set(['offBy', 'explanation', ...BOOK_COLUMNS.flatMap((column) => column.fields)]);

/**
 * The books of each step (`step.accounting`): what the client sent and counted against what the engines say they
 * received and answered, the differences, and whether they balance; a step off the books is marked with why.
 */
function booksTable(summary: Summary): string {
  const booksOf = (step: StepRow) => {
    const books = (step as unknown as { accounting?: unknown }).accounting;
    return typeof books === 'object' && books !== null ? (books as Books) : undefined;
  };
  if (!summary.steps.some((step) => booksOf(step) !== undefined))
    return '<p id="books" class="note">No step in this summary has books against the engines (a step that could not measure has none, and sweeps before the books kept none).</p>';
  const extra = [
    ...new Set(
      summary.steps.flatMap((step) => Object.keys(booksOf(step) ?? {}).filter((key) => !KNOWN_BOOK_FIELDS.has(key))),
    ),
  ];
  // A column no step has figures for (vLLM's boundaries under fake-vllm tallies, say) is left out.
  const columns = BOOK_COLUMNS.filter((column) =>
    summary.steps.some((step) =>
      column.fields.some((field) => {
        const value = booksOf(step)?.[field];
        return value !== null && value !== undefined;
      }),
    ),
  );
  const headers = ['step', ...columns.map((column) => column.header), ...extra, 'books'];
  const rows = summary.steps.map((step) => {
    const books = booksOf(step);
    if (books === undefined)
      return `<tr data-step="${step.concurrency}" data-books="none"><td>${escapeHtml(stepLabel(summary, step))}</td><td colspan="${headers.length - 1}">not recorded</td></tr>`;
    const offBy = typeof books.offBy === 'number' ? books.offBy : undefined;
    const balanced = offBy === 0;
    const verdict = balanced
      ? '<td class="verdict">balance</td>'
      : `<td class="verdict"><strong class="books-off">✗ OFF BY ${escapeHtml(valueText(offBy))}</strong> <span class="books-explanation">${escapeHtml(valueText(books.explanation))}</span></td>`;
    return `<tr data-step="${step.concurrency}" data-books="${balanced ? 'balance' : 'off'}"${balanced ? '' : ' class="invalid"'}><td>${escapeHtml(stepLabel(summary, step))}</td>${[
      ...columns.map((column) => column.cell(books)),
      ...extra.map((key) => valueText(books[key])),
    ]
      .map((text) => `<td>${escapeHtml(text)}</td>`)
      .join('')}${verdict}</tr>`;
  });
  return table(headers, rows, ' id="books"');
}

/**
 * Per step, what the client counted and what it can be checked against: sent vs ok + failed, Σ errors vs failed,
 * faults the engines injected vs what the SDK recovered; plus any per-step field this report does not know yet
 * (e.g. reconciliation against the engines' own counters), shown as recorded.
 */
function accountingTable(summary: Summary): string {
  const extra = [
    ...new Set(summary.steps.flatMap((step) => Object.keys(step).filter((key) => !KNOWN_STEP_FIELDS.has(key)))),
  ];
  const headers = [
    'step',
    'sent',
    'ok',
    'failed',
    'sent − ok − failed',
    'verified',
    'Σ errors',
    'errors by kind',
    'faults injected',
    'recovered (retries / stale / resumes)',
    'capped',
    'skipped late',
    ...extra,
  ];
  const rows = summary.steps.map((step) => {
    const errorSum = Object.values(step.errors).reduce((total, count) => total + count, 0);
    const unaccounted = step.sent - step.completed - step.failed;
    const cell = (text: string, className?: string) =>
      `<td${className ? ` class="${className}"` : ''}>${escapeHtml(text)}</td>`;
    const record = step as unknown as Record<string, unknown>;
    return `<tr data-step="${step.concurrency}">${[
      cell(stepLabel(summary, step)),
      cell(valueText(step.sent)),
      cell(valueText(step.completed)),
      cell(valueText(step.failed)),
      cell(valueText(unaccounted), unaccounted !== 0 ? 'off' : undefined),
      cell(valueText(step.verified)),
      cell(valueText(errorSum), errorSum !== step.failed ? 'off' : undefined),
      cell(countsText(step.errors), 'text'),
      cell(countsText(step.faultsInjected), 'text'),
      cell(`${step.retries} / ${step.staleRetries} / ${step.resumes}`),
      cell(valueText(step.capped)),
      cell(valueText(step.skippedLate)),
      ...extra.map((key) => cell(valueText(record[key]))),
    ].join('')}</tr>`;
  });
  return table(headers, rows, ' id="accounting"');
}

/**
 * `--scenario rollout-step`: per step and policy, what the step table has no room for: each engine's answers (and by
 * whose count), the SDK's caps at the end, the restart, and how the lower bound was computed.
 */
function rolloutTable(summary: Summary): string {
  const rows = summary.steps.filter((step) => step.rollout);
  if (rows.length === 0) return '';
  const seconds = (ms: number | null | undefined) =>
    ms === null || ms === undefined ? '-' : `${(ms / 1000).toFixed(2)} s`;
  const body = rows.map((step) => {
    const figures = step.rollout!;
    const restart = figures.restart
      ? `${figures.restart.engine} at ${seconds(figures.restart.atMs)}, after ${figures.restart.afterAnswered} answers, down ${figures.restart.downMs} ms, ${figures.restart.dropped} dropped`
      : '-';
    return `<tr data-step="${step.concurrency}" data-policy="${escapeHtml(step.policy ?? '')}">${[
      stepLabel(summary, step),
      figures.fleet,
      seconds(figures.makespanMs),
      figures.lowerBoundMs === null ? 'unknown' : seconds(figures.lowerBoundMs),
      `${countsText(figures.answeredByEngine)} (${figures.answeredByEngineSource})`,
      countsText(figures.finalCaps),
      restart,
      figures.prefixCacheHitRate === null ? '-' : `${(100 * figures.prefixCacheHitRate).toFixed(1)}%`,
    ]
      .map((text) => `<td class="text">${escapeHtml(text)}</td>`)
      .join('')}</tr>`;
  });
  const note = rows[0]!.rollout!.lowerBoundNote;
  return `<section id="rollouts-section"><h2>Rollouts</h2><p class="note">Each step fired its rollouts at once and ended with the last one (the makespan). Lower bound: ${escapeHtml(note)}.</p><div class="scroll">${table(
    [
      'step',
      'fleet',
      'makespan',
      'lower bound',
      'requests answered by engine',
      'SDK cap per engine at the end',
      'restart',
      'prefix-cache hit rate',
    ],
    body,
    ' id="rollouts"',
  )}</div></section>`;
}

const mib = (bytes: number | undefined) =>
  bytes === undefined ? undefined : `${(bytes / 2 ** 30).toFixed(1)} GiB (${bytes.toLocaleString('en-US')} bytes)`;

const lengthText = (length: unknown): string | undefined => {
  if (length === null || typeof length !== 'object') return length === undefined ? undefined : valueText(length);
  const shape = length as Record<string, unknown>;
  if (shape.kind === 'fixed') return `${valueText(shape.value)} tokens`;
  if (shape.kind === 'uniform') return `uniform ${valueText(shape.min)}..${valueText(shape.max)} tokens`;
  if (shape.kind === 'normal') return `normal mean ${valueText(shape.mean)}, stddev ${valueText(shape.stddev)} tokens`;
  if (shape.kind === 'lognormal')
    return `lognormal median ${valueText(shape.median)}, sigma ${valueText(shape.sigma)}, at most ${valueText(shape.max)} tokens`;
  if (shape.kind === 'pareto')
    return `pareto scale ${valueText(shape.scale)}, alpha ${valueText(shape.alpha)}, at most ${valueText(shape.max)} tokens`;
  return valueText(length);
};

/** The fleet and the client as configured, then every option as resolved (nothing hidden but the API key). */
function configuration(summary: Summary): string {
  const options = (typeof summary.options === 'object' && summary.options !== null ? summary.options : {}) as Record<
    string,
    unknown
  >;
  const targets = Array.isArray(options.targets) ? (options.targets as unknown[]).map(String) : [];
  const fake = (typeof options.fake === 'object' && options.fake !== null ? options.fake : {}) as Record<
    string,
    unknown
  >;
  const ms = (value: unknown) => (typeof value === 'number' ? `${value} ms` : undefined);
  const fleet: Array<[string, unknown]> =
    targets.length > 0
      ? [
          ['engines', `${targets.length} --target engine(s)`],
          ['model', options.model ?? '(not set)'],
          ['API key', options.apiKey === undefined || options.apiKey === null ? 'not set' : 'set (not shown)'],
        ]
      : [
          ['engines', 'embedded fake-vllm'],
          ['fake engines', fake.engines],
          ['fake processes', fake.processes],
          ['max running sequences per engine', fake.maxNumSeqs],
          ['fake TTFT', ms(fake.ttftMs)],
          ['fake ITL', ms(fake.itlMs)],
          ['nice', fake.nice],
          ['faults', options.faults ?? 'none'],
        ];
  const workers =
    summary.workers !== undefined
      ? summary.workers
      : typeof options.workers === 'number' && options.workers > 0
        ? options.workers
        : options.workers === undefined
          ? undefined
          : 'sized automatically (count not recorded)';
  const rollout = options.scenario === 'rollout-step';
  const client: Array<[string, unknown]> = [
    ['scenario', rollout ? 'rollout-step (each step fires its rollouts at once)' : options.scenario],
    ['policies', rollout ? options.policies : undefined],
    ['fleet', rollout && targets.length === 0 ? options.fleet : undefined],
    ['mode', options.mode],
    [
      'endpoint',
      options.endpoint === undefined ? undefined : `${options.endpoint}${options.stream ? ' (stream)' : ''}`,
    ],
    ['resume cut streams', options.resume],
    [
      'load model',
      options.arrival === undefined || rollout
        ? undefined
        : openLoop(summary)
          ? `open loop, ${options.arrival} arrivals`
          : 'closed loop',
    ],
    ['steps', options.steps],
    ['client worker processes', workers],
    [
      'ramp / warmup / measure',
      options.rampMs === undefined || rollout
        ? undefined
        : `${ms(options.rampMs)} / ${ms(options.warmupMs)} / ${ms(options.measureMs)}`,
    ],
    ['prompt length', lengthText(options.promptTokens)],
    ['output length', lengthText(options.outputTokens)],
    ['turns per session', options.sessionTurns],
    [
      'source IPs',
      Array.isArray(options.sourceIps) && options.sourceIps.length === 0 ? 'default route' : options.sourceIps,
    ],
    ['SLO', summary.slo],
    ['max error rate', options.maxErrorRate],
    ['seed', options.seed],
  ];
  if (openLoop(summary))
    client.push(
      ['gamma shape', options.arrival === 'gamma' ? options.gammaShape : undefined],
      ['max in flight', options.maxConcurrency],
      ['max catch-up', ms(options.maxCatchUpMs)],
    );
  const targetList =
    targets.length > 0
      ? `<h3>Target URLs</h3><ul id="targets">${targets.map((target) => `<li><code>${escapeHtml(target)}</code></li>`).join('')}</ul>`
      : '';
  return `<section id="configuration"><h2>Configuration</h2>
<h3>Fleet</h3>${facts('fleet', fleet)}${targetList}
<h3>Client</h3>${facts('client', client)}
<details><summary>Every option as resolved</summary><pre id="options">${escapeHtml(JSON.stringify(options, withoutSecrets, 2))}</pre></details>
</section>`;
}

function duration(seconds: number | undefined): string | undefined {
  if (seconds === undefined) return undefined;
  const minutes = Math.floor(seconds / 60);
  return minutes > 0
    ? `${seconds.toFixed(0)} s (${minutes} min ${Math.round(seconds % 60)} s)`
    : `${seconds.toFixed(1)} s`;
}

function machine(summary: Summary): string {
  const info = summary.machine;
  return `<section id="machine-section"><h2>Machine and run</h2>${facts('machine', [
    ['started', summary.startedAt],
    ['finished', summary.finishedAt],
    ['duration', duration(summary.durationS)],
    ['cores', info.cpus],
    ['CPU', info.cpuModel],
    ['memory', mib(info.memoryBytes)],
    ['Node', info.node],
    ['OS', info.platform],
    ['hostname', info.hostname],
  ])}<p class="note">The client and an embedded fleet share this machine's cores.</p></section>`;
}

/** A self-contained HTML report: Chart.js inlined, data embedded, every text escaped, opens offline. */
export function reportHtml(summary: Summary): string {
  const require = createRequire(import.meta.url);
  // chart.js's `exports` map hides its UMD build: locate it beside the package's main entry.
  const chartJs = readFileSync(join(dirname(require.resolve('chart.js')), 'chart.umd.min.js'), 'utf8');
  const invalid = summary.steps.filter((step) => !step.valid);
  const verdict =
    invalid.length === 0
      ? `<p id="verdict" class="ok">All ${summary.steps.length} steps valid.</p>`
      : `<div id="verdict" class="bad"><strong>${invalid.length} of ${summary.steps.length} steps invalid</strong>: their figures are not a measure of the engines, for the reason given on each. Marked ✗ in the table and on every chart.<ul>${invalid
          .map(
            (step) =>
              `<li>${escapeHtml(stepLabel(summary, step))}: <span class="invalid-reason">${escapeHtml(step.invalidReason ?? 'no reason recorded')}</span></li>`,
          )
          .join('')}</ul></div>`;
  const headline: Array<[string, unknown]> = [
    ['target', summary.target],
    ['knee (highest valid step meeting the SLO)', summary.knee ?? 'none'],
    ['SLO', summary.slo],
    ['stopped early', summary.stoppedEarly ?? undefined],
    ['started', summary.startedAt],
    ['duration', duration(summary.durationS)],
  ];
  const chartData = {
    openLoop: openLoop(summary),
    steps: summary.steps.map((step) => ({
      concurrency: step.concurrency,
      // A rollout step runs once per policy: its label names both.
      label:
        step.scenario === 'rollout-step' ? `${step.concurrency} ${step.policy ?? ''}`.trim() : String(step.concurrency),
      valid: step.valid,
      invalidReason: step.invalidReason,
      requestsPerSecond: step.requestsPerSecond,
      outputTokensPerSecond: step.outputTokensPerSecond,
      goodputPerSecond: step.goodputPerSecond,
      percentiles: step.percentiles,
      errors: step.errors,
    })),
  };
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Load sweep ${escapeHtml(summary.startedAt)}</title>
<style>
body{font:14px system-ui,sans-serif;margin:24px;max-width:1400px}div.chart{position:relative;height:360px}section{margin:28px 0}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right;vertical-align:top}
td.text,td.verdict{min-width:10em;max-width:28em;overflow-wrap:anywhere}#steps,#books,#accounting{font-size:12px}
table.facts th{text-align:left;font-weight:normal;color:#555}table.facts td{text-align:left}
tr.invalid{background:#fde8e8}.invalid-mark,.books-off{color:#c00}.books-explanation{color:#900}.invalid-reason{color:#900}td.verdict{text-align:left}
td.off{background:#c00;color:#fff;font-weight:bold}#verdict.bad{border:2px solid #c00;background:#fde8e8;padding:8px 12px}
#verdict.ok{color:#070}.note{color:#555}pre{white-space:pre-wrap;word-break:break-all}.scroll{overflow-x:auto}
</style>
</head><body>
<h1>Load sweep</h1>
${facts('meta', headline)}
${verdict}
<section id="steps-section"><h2>Steps</h2><p class="note">The table the terminal prints. A step is invalid when its figures cannot be trusted as a measure of the engines (e.g. the client was the bottleneck); the reason is given on its row.</p><div class="scroll">${stepTable(summary)}</div></section>
${rolloutTable(summary)}
<section><h2>Throughput vs ${openLoop(summary) ? 'offered rate' : 'concurrency'}</h2><div class="chart"><canvas id="throughput"></canvas></div></section>
<section><h2>Latency percentiles vs ${openLoop(summary) ? 'offered rate' : 'concurrency'}</h2><div class="chart"><canvas id="latency"></canvas></div></section>
<section><h2>Latency decomposition (p50 of each part, ms)</h2><div class="chart"><canvas id="decomposition"></canvas></div></section>
<section><h2>Errors by kind</h2><div class="chart"><canvas id="errors"></canvas></div></section>
<section id="accounting-section"><h2>Accounting</h2>
<h3>Books: the client against the engines</h3><p class="note">Per step, the requests the client dispatched in the measure window and the outcomes it counted, set against what the engines counted on their side (embedded fake-vllm: its per-window tallies, exact; <code>--target</code> vLLM: its Prometheus counters diffed across the step, exact up to the requests in flight at the two boundaries). A step whose books do not balance is invalid and says by how much.</p><div class="scroll">${booksTable(summary)}</div>
<h3>Client outcomes</h3><p class="note">Where the window's requests went, as the client counted them. A red cell does not add up.</p><div class="scroll">${accountingTable(summary)}</div></section>
${configuration(summary)}
${machine(summary)}
<script>${chartJs}</script>
<script>
// A report is read, not watched: no animation, so what prints or screenshots is the final state.
Chart.defaults.animation = false;
// Each canvas fills a box of fixed height: with the aspect ratio kept, a resize (printing, a full-page screenshot)
// shrank the charts to a few pixels.
Chart.defaults.maintainAspectRatio = false;
const summary = ${scriptJson(chartData)};
const RED = '#c00';
const invalid = summary.steps.map((s) => !s.valid);
// Multi-line tick labels: an invalid step reads "10000 / ✗ INVALID" under every chart.
const labels = summary.steps.map((s) => (s.valid ? s.label : [s.label, '✗ INVALID']));
const p = (key) => summary.steps.map((s) => s.percentiles[key] ?? null);
const x = { ticks: { color: (context) => (invalid[context.index] ? RED : '#666') } };
// A translucent band behind each invalid step.
const invalidBand = { id: 'invalidBand', beforeDatasetsDraw(chart) {
  const scale = chart.scales.x, area = chart.chartArea, ctx = chart.ctx;
  const half = labels.length > 1 ? Math.abs(scale.getPixelForValue(1) - scale.getPixelForValue(0)) / 2 : area.right - area.left;
  ctx.save(); ctx.fillStyle = 'rgba(204, 0, 0, 0.12)';
  invalid.forEach((bad, index) => {
    if (!bad) return;
    const left = Math.max(area.left, scale.getPixelForValue(index) - half), right = Math.min(area.right, scale.getPixelForValue(index) + half);
    ctx.fillRect(left, area.top, right - left, area.bottom - area.top);
  });
  ctx.restore();
} };
// Line series: an invalid step's point is a large red cross.
const marked = (dataset) => ({ ...dataset,
  pointStyle: invalid.map((bad) => (bad ? 'crossRot' : 'circle')),
  pointRadius: invalid.map((bad) => (bad ? 9 : 3)),
  pointBorderWidth: invalid.map((bad) => (bad ? 3 : 1)),
  pointBorderColor: (context) => (invalid[context.dataIndex] ? RED : context.dataset.borderColor) });
// The legend entry, and a marker at the top of each invalid step (its own stack, so stacked bars do not carry it).
const marker = (top, extra) => ({ label: '✗ invalid step (reason in the table)', type: 'line', invalidMarker: true,
  data: invalid.map((bad, index) => (bad ? top(index) : null)), showLine: false, stack: 'invalid-marker',
  pointStyle: 'crossRot', pointRadius: 12, pointBorderWidth: 3, borderColor: RED, backgroundColor: RED, ...extra });
const highest = (series) => (index) => Math.max(0, ...series.map((values) => values[index] ?? 0));
// Series colours are set here, red left out for the invalid marks (Chart.js's own palette turns itself off as soon
// as one dataset, the marker, has a colour).
const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#9467bd', '#8c564b', '#17becf', '#bcbd22', '#7f7f7f', '#e377c2'];
const chart = (id, config) => {
  config.data.datasets.filter((set) => !set.invalidMarker).forEach((set, index) => {
    set.borderColor ??= PALETTE[index % PALETTE.length];
    set.backgroundColor ??= set.borderColor + (config.type === 'bar' ? 'cc' : '');
  });
  return new Chart(document.getElementById(id), { ...config, plugins: [invalidBand] });
};
window.charts = [];
const throughput = [summary.steps.map((s) => s.requestsPerSecond), summary.steps.map((s) => s.goodputPerSecond)];
window.charts.push(chart('throughput', { type: 'line', data: { labels, datasets: [
  marked({ label: 'requests/s', data: throughput[0], yAxisID: 'y' }),
  marked({ label: 'output tokens/s', data: summary.steps.map((s) => s.outputTokensPerSecond), yAxisID: 'y1' }),
  marked({ label: 'goodput (req/s within SLO)', data: throughput[1], yAxisID: 'y' }),
  marker(highest(throughput), { yAxisID: 'y' })] },
  options: { scales: { x, y: { title: { display: true, text: 'req/s' } }, y1: { position: 'right', title: { display: true, text: 'tokens/s' } } } } }));
const latency = ['ttft_p50', 'ttft_p99', 'itl_p50', 'itl_p99', 'e2e_p50', 'e2e_p99'].map(p);
window.charts.push(chart('latency', { type: 'line', data: { labels, datasets: [
  ...['TTFT p50', 'TTFT p99', 'ITL p50', 'ITL p99', 'E2E p50', 'E2E p99'].map((label, index) => marked({ label, data: latency[index] })),
  // A log axis has no 0: a step without latencies gets its marker at 1 ms.
  marker((index) => Math.max(1, highest(latency)(index)))] },
  options: { scales: { x, y: { type: 'logarithmic', title: { display: true, text: 'ms' } } } } }));
const engineAfterQueue = summary.steps.map((s) => Math.max(0, (s.percentiles.ttft_p50 ?? 0) - (s.percentiles.clientAdded_p50 ?? 0) - (s.percentiles.serverQueue_p50 ?? 0)));
const parts = [p('queueWait_p50'), p('connect_p50'), p('serverQueue_p50'), engineAfterQueue, p('clientAdded_p50')];
const stackTop = (series) => (index) => series.reduce((total, values) => total + (values[index] ?? 0), 0);
window.charts.push(chart('decomposition', { type: 'bar', data: { labels, datasets: [
  ...['client queue', 'connect', 'engine queue', 'engine TTFT after queue', 'client-added'].map((label, index) => ({ label, data: parts[index] })),
  marker(stackTop(parts))] },
  options: { scales: { x: { ...x, stacked: true }, y: { stacked: true, title: { display: true, text: 'ms' } } } } }));
const kinds = [...new Set(summary.steps.flatMap((s) => Object.keys(s.errors)))];
const errorSeries = (kinds.length ? kinds : ['none']).map((kind) => summary.steps.map((s) => s.errors[kind] ?? 0));
window.charts.push(chart('errors', { type: 'bar', data: { labels, datasets: [
  ...(kinds.length ? kinds : ['none']).map((kind, index) => ({ label: kind, data: errorSeries[index] })),
  marker(stackTop(errorSeries))] },
  options: { scales: { x: { ...x, stacked: true }, y: { stacked: true, beginAtZero: true, title: { display: true, text: 'requests' } } } } }));
window.reportReady = true;
</script>
</body></html>
`;
}
