import type { StepRow } from './report.js';

/** One column of the step table: the terminal's markdown table and the HTML report both draw from this list. */
export interface StepColumn {
  header: string;
  /** The cell as plain text (the HTML report escapes it). */
  cell(step: StepRow): string;
}

const fmt = (value: number | null | undefined, digits = 1) =>
  value === null || value === undefined ? '-' : value.toFixed(digits);

/** `kind:count kind:count`, or `-` when empty. */
export const countsText = (counts: Record<string, number>): string =>
  Object.entries(counts)
    .map(([kind, count]) => `${kind}:${count}`)
    .join(' ') || '-';

/**
 * The step table's columns, in the order the terminal prints them. The last one (`valid`) reads `yes` or
 * `no: <invalidReason>`.
 */
export const STEP_COLUMNS: readonly StepColumn[] = [
  { header: 'C target', cell: (step) => String(step.concurrency) },
  { header: 'C achieved', cell: (step) => fmt(step.achievedConcurrency, 0) },
  { header: 'req/s', cell: (step) => fmt(step.requestsPerSecond, 0) },
  { header: 'out tok/s', cell: (step) => fmt(step.outputTokensPerSecond, 0) },
  {
    header: 'TTFT p50/p99 ms',
    cell: (step) => `${fmt(step.percentiles.ttft_p50, 0)}/${fmt(step.percentiles.ttft_p99, 0)}`,
  },
  {
    header: 'ITL p50/p99 ms',
    cell: (step) => `${fmt(step.percentiles.itl_p50, 0)}/${fmt(step.percentiles.itl_p99, 0)}`,
  },
  { header: 'E2E p99 ms', cell: (step) => fmt(step.percentiles.e2e_p99, 0) },
  { header: 'client queue p99', cell: (step) => fmt(step.percentiles.queueWait_p99) },
  { header: 'engine queue p50', cell: (step) => fmt(step.percentiles.serverQueue_p50, 0) },
  { header: 'client-added p99', cell: (step) => fmt(step.percentiles.clientAdded_p99) },
  { header: 'loop lag p99', cell: (step) => fmt(step.eventLoopLagP99Ms) },
  { header: 'engine lag p99', cell: (step) => fmt(step.serverLoopLagP99Ms) },
  { header: 'CPU max %', cell: (step) => fmt(step.clientCpuPercentMax, 0) },
  { header: 'sent', cell: (step) => String(step.sent) },
  { header: 'ok', cell: (step) => String(step.completed) },
  { header: 'failed', cell: (step) => String(step.failed) },
  { header: 'errors', cell: (step) => countsText(step.errors) },
  { header: 'valid', cell: (step) => (step.valid ? 'yes' : `no: ${step.invalidReason}`) },
];
