import type { StepRow, Summary } from './report.js';

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

const seconds = (ms: number | null | undefined) => (ms === null || ms === undefined ? '-' : (ms / 1000).toFixed(2));

/** Each engine's share of the answers, `45% 55%` in the engines' order. */
function sharesText(answered: Record<string, number> | undefined): string {
  const counts = Object.values(answered ?? {});
  const total = counts.reduce((sum, count) => sum + count, 0);
  return total === 0 ? '-' : counts.map((count) => `${((100 * count) / total).toFixed(0)}%`).join(' ');
}

/**
 * The step table of `--scenario rollout-step`: one row per step and policy, the makespan against its lower bound
 * first. The last one (`valid`) reads as in {@link STEP_COLUMNS}.
 */
export const ROLLOUT_COLUMNS: readonly StepColumn[] = [
  {
    header: 'rollouts',
    cell: (step) => `${step.concurrency}${(step.rollout?.turns ?? 1) > 1 ? ` x ${step.rollout!.turns} turns` : ''}`,
  },
  { header: 'policy', cell: (step) => step.policy ?? '-' },
  { header: 'fleet', cell: (step) => step.fleet ?? '-' },
  { header: 'makespan s', cell: (step) => seconds(step.rollout?.makespanMs) },
  {
    header: 'vs baseline',
    cell: (step) =>
      step.rollout?.speedupVsBaseline === null || step.rollout?.speedupVsBaseline === undefined
        ? '-'
        : `${step.rollout.speedupVsBaseline.toFixed(2)}x`,
  },
  {
    header: 'lower bound s',
    cell: (step) =>
      step.rollout ? (step.rollout.lowerBoundMs === null ? 'unknown' : seconds(step.rollout.lowerBoundMs)) : '-',
  },
  { header: 'makespan / bound', cell: (step) => fmt(step.rollout?.makespanOverBound, 2) },
  {
    header: 'rollout p50/p99 s',
    cell: (step) => `${seconds(step.rollout?.p50Ms)}/${seconds(step.rollout?.p99Ms)}`,
  },
  {
    header: 'TTFT p50/p99 ms',
    cell: (step) => `${fmt(step.percentiles.ttft_p50, 0)}/${fmt(step.percentiles.ttft_p99, 0)}`,
  },
  { header: 'client queue p99 ms', cell: (step) => fmt(step.percentiles.queueWait_p99, 0) },
  { header: "engines' shares", cell: (step) => sharesText(step.rollout?.answeredByEngine) },
  {
    header: 'restart',
    cell: (step) =>
      step.rollout?.restart
        ? `at ${seconds(step.rollout.restart.atMs)} s, ${step.rollout.restart.dropped} dropped`
        : step.fleet === 'restart'
          ? 'none'
          : '-',
  },
  {
    header: 'prefix hits',
    cell: (step) =>
      step.rollout?.prefixCacheHitRate === null || step.rollout?.prefixCacheHitRate === undefined
        ? '-'
        : `${(100 * step.rollout.prefixCacheHitRate).toFixed(0)}%`,
  },
  { header: 'failed rollouts', cell: (step) => String(step.rollout?.failedRollouts ?? '-') },
  { header: 'sent', cell: (step) => String(step.sent) },
  { header: 'ok', cell: (step) => String(step.completed) },
  { header: 'failed', cell: (step) => String(step.failed) },
  { header: 'errors', cell: (step) => countsText(step.errors) },
  { header: 'valid', cell: (step) => (step.valid ? 'yes' : `no: ${step.invalidReason}`) },
];

/** The columns of a summary's step table: {@link ROLLOUT_COLUMNS} when its steps are rollout steps. */
export function stepColumns(summary: Pick<Summary, 'steps'>): readonly StepColumn[] {
  return summary.steps.some((step) => step.scenario === 'rollout-step') ? ROLLOUT_COLUMNS : STEP_COLUMNS;
}
