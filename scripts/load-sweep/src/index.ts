export { METRICS, MetricHistograms, type MetricName } from './histograms.js';
export { findKnee, type KneeInput, meetsSlo } from './knee.js';
export { bar, type LiveState, LiveView, renderLive, renderPlain, type WorkerProgress } from './live.js';
export { parseSweepArgs, SweepConfigError, type SweepOptions, usage } from './options.js';
export { csv, html, markdownTable, type StepRow, type Summary, writeReports } from './report.js';
export { parseSlo, percentilesMeetSlo, requestMeetsSlo, type Slo, sloThresholds } from './slo.js';
export { aggregate, checkTargets, preflight, runSweep, workerCount } from './sweep.js';
export { StepNotMeasuredError, SweepIncompleteError } from './worker-supervision.js';
