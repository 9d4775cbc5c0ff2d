import { writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import type { StepAccounting } from './accounting.js';
import type { RolloutFleet, RolloutPolicy } from './options.js';
import { reportHtml, withoutSecrets } from './report-html.js';
import type { RolloutFigures } from './rollout-step.js';
import { stepColumns } from './step-columns.js';

export { reportHtml as html } from './report-html.js';

/** One row of summary.json: one concurrency step. Schema documented in the README. */
export interface StepRow {
  /** The ramp: the concurrency (or rate); `rollout-step`: the rollouts fired at once (N). */
  concurrency: number;
  /** `rollout-step` rows only (absent from the ramp's). */
  scenario?: 'rollout-step';
  policy?: RolloutPolicy;
  fleet?: RolloutFleet | 'target';
  /** `rollout-step`: makespan, rollout latency, lower bound, each engine's share, the restart ({@link RolloutFigures}). */
  rollout?: RolloutFigures;
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
  /**
   * The step's books: the client's dispatches and outcomes set against the engines' own counts (fake-vllm tallies,
   * or vLLM's Prometheus counters). `accounting.offBy` > 0 makes the step invalid. Absent in older summaries.
   */
  accounting?: StepAccounting;
  valid: boolean;
  invalidReason: string | null;
}

/** The machine the sweep ran on (client and embedded fleet share it). */
export interface MachineInfo {
  /** Logical cores. */
  cpus: number;
  /** `process.version`. */
  node: string;
  /** `<os.platform()> <os.release()>`. */
  platform: string;
  /** `os.cpus()[0].model`. Absent in summaries written before it was recorded. */
  cpuModel?: string;
  /** `os.totalmem()`, bytes. */
  memoryBytes?: number;
  hostname?: string;
}

/** summary.json. */
export interface Summary {
  schema: 'load-sweep/summary@1';
  /** ISO 8601. */
  startedAt: string;
  /** ISO 8601, when the reports were written (the end of the run). */
  finishedAt?: string;
  /** `finishedAt - startedAt`, seconds. */
  durationS?: number;
  machine: MachineInfo;
  /** The resolved options the sweep ran with ({@link SweepOptions}); the report never shows `apiKey`. */
  options: unknown;
  /** Client worker processes actually started (`options.workers` is 0 when they were sized automatically). */
  workers?: number;
  target: string;
  steps: StepRow[];
  knee: number | null;
  slo: Record<string, number>;
  stoppedEarly: string | null;
}

/** The markdown table printed at the end: the columns of {@link stepColumns}, one row per step. */
export function markdownTable(summary: Summary): string {
  const columns = stepColumns(summary);
  const header = `| ${columns.map((column) => column.header).join(' | ')} |`;
  const rows = summary.steps.map((step) => `| ${columns.map((column) => column.cell(step)).join(' | ')} |`);
  return [header, `|${' --- |'.repeat(columns.length)}`, ...rows].join('\n');
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
  // Rollout steps add their figures (a ramp's CSV is unchanged).
  const rolloutKeys = summary.steps.some((step) => step.rollout)
    ? ([
        'policy',
        'fleet',
        'makespanMs',
        'p50Ms',
        'p99Ms',
        'lowerBoundMs',
        'failedRollouts',
        'speedupVsBaseline',
      ] as const)
    : [];
  const lines = [[...columns, ...rolloutKeys, ...percentileKeys, 'errors'].join(',')];
  for (const step of summary.steps) {
    const errors = Object.entries(step.errors)
      .map(([kind, count]) => `${kind}=${count}`)
      .join(';');
    lines.push(
      [
        ...columns.map((column) => String(step[column])),
        ...rolloutKeys.map((key) => String(step.rollout?.[key] ?? step[key as 'policy'] ?? '')),
        ...percentileKeys.map((key) => String(step.percentiles[key] ?? '')),
        `"${errors}"`,
      ].join(','),
    );
  }
  return `${lines.join('\n')}\n`;
}

/**
 * Fills what only the end of a run knows, or what the run did not record, on the machine that ran it: `finishedAt`,
 * `durationS`, and the machine's CPU model, memory and hostname. Fields already set are kept.
 */
export function completeRunFacts(summary: Summary, now = new Date()): Summary {
  if (summary.finishedAt === undefined) summary.finishedAt = now.toISOString();
  const startedMs = Date.parse(summary.startedAt);
  if (summary.durationS === undefined && Number.isFinite(startedMs))
    summary.durationS = Math.max(0, (Date.parse(summary.finishedAt) - startedMs) / 1000);
  const machine = summary.machine;
  machine.cpuModel ??= os.cpus()[0]?.model ?? 'unknown';
  machine.memoryBytes ??= os.totalmem();
  machine.hostname ??= os.hostname();
  return summary;
}

/**
 * Writes summary.json, summary.csv and report.html into `dir`, at the end of a run on the machine that ran it
 * (see {@link completeRunFacts}). `apiKey` is never written.
 */
export function writeReports(dir: string, summary: Summary): void {
  completeRunFacts(summary);
  writeFileSync(join(dir, 'summary.json'), `${JSON.stringify(summary, withoutSecrets, 2)}\n`);
  writeFileSync(join(dir, 'summary.csv'), csv(summary));
  writeFileSync(join(dir, 'report.html'), reportHtml(summary));
}
