import { SweepConfigError } from './errors.js';

/**
 * The one definition of the SLO grammar: `<metric>_p<percentile>_ms=<limit>`, comma-separated, e.g.
 * `ttft_p99_ms=2000,tpot_p50_ms=100`. Used to parse `--slo`, to judge a step (the knee) and a request (goodput).
 */
export const SLO_METRICS = ['ttft', 'itl', 'tpot', 'e2e'] as const;
/** Percentiles an SLO may name (the ones every step reports). */
export const SLO_PERCENTILES = ['50', '90', '99', '99.9'] as const;

/** A latency metric an SLO can bound. */
export type SloMetric = (typeof SLO_METRICS)[number];
/** SLO thresholds by key (`ttft_p99_ms`), in ms, as written in summary.json. */
export type Slo = Record<string, number>;

/** One parsed SLO entry. */
export interface SloThreshold {
  metric: SloMetric;
  /** `50`, `90`, `99` or `99.9`. */
  percentile: (typeof SLO_PERCENTILES)[number];
  limitMs: number;
}

const KEY = /^(ttft|itl|tpot|e2e)_p(50|90|99|99\.9)_ms$/;

/** The default SLO: TTFT p99 2 s, ITL p99 1 s. */
export const DEFAULT_SLO: Readonly<Slo> = { ttft_p99_ms: 2000, itl_p99_ms: 1000 };

function grammarError(label: string, got: string): SweepConfigError {
  return new SweepConfigError(
    `Expected \`${label}\` entries like ttft_p99_ms=2000 (metrics ${SLO_METRICS.join(', ')}; p${SLO_PERCENTILES.join('/p')}; a limit in ms > 0), got \`${got}\``,
  );
}

/** Parses `--slo` text (or a config file's object of the same keys); throws {@link SweepConfigError} naming the entry. */
export function parseSlo(input: unknown, label = '--slo'): Slo {
  const entries: Array<[string, unknown]> =
    typeof input === 'string'
      ? input.split(',').map((pair) => {
          const [key = '', value, ...rest] = pair.split('=');
          return [key.trim(), rest.length > 0 || value === undefined || value.trim() === '' ? Number.NaN : value];
        })
      : typeof input === 'object' && input !== null && !Array.isArray(input)
        ? Object.entries(input)
        : [[String(input), Number.NaN]];
  const slo: Slo = {};
  for (const [key, raw] of entries) {
    const limit = Number(raw);
    if (!KEY.test(key) || !Number.isFinite(limit) || limit <= 0) throw grammarError(label, `${key}=${String(raw)}`);
    slo[key] = limit;
  }
  if (Object.keys(slo).length === 0) throw grammarError(label, String(input));
  return slo;
}

/** The thresholds of an SLO, parsed. */
export function sloThresholds(slo: Slo): SloThreshold[] {
  return Object.entries(slo).map(([key, limitMs]) => {
    const match = KEY.exec(key);
    if (!match) throw grammarError('slo', key);
    return { metric: match[1] as SloMetric, percentile: match[2] as SloThreshold['percentile'], limitMs };
  });
}

/** Whether a step's percentiles (`percentiles['ttft_p99']`) meet every threshold; a missing figure does not. */
export function percentilesMeetSlo(percentiles: Readonly<Record<string, number | null>>, slo: Slo): boolean {
  for (const { metric, percentile, limitMs } of sloThresholds(slo)) {
    const value = percentiles[`${metric}_p${percentile}`];
    if (value === null || value === undefined || value > limitMs) return false;
  }
  return true;
}

/** What one request measured, for goodput: each figure the SLO names must be within its limit. */
export interface RequestLatency {
  ttftMs: number | undefined;
  /** The longest gap between two tokens (undefined: one token or not streamed). */
  maxItlMs: number | undefined;
  /** (e2e - ttft) / (tokens - 1), undefined for one token. */
  tpotMs: number | undefined;
  e2eMs: number;
}

/**
 * Whether one request meets the SLO (it counts toward goodput). A single request has no percentiles: each of its own
 * figures is held to the limit, whatever percentile the SLO names; a figure the request does not have is not judged.
 * Takes {@link sloThresholds} parsed once, as it runs for every request.
 */
export function requestMeetsSlo(request: RequestLatency, thresholds: readonly SloThreshold[]): boolean {
  for (const { metric, limitMs } of thresholds) {
    const value =
      metric === 'ttft'
        ? request.ttftMs
        : metric === 'itl'
          ? request.maxItlMs
          : metric === 'tpot'
            ? request.tpotMs
            : request.e2eMs;
    if (value !== undefined && value > limitMs) return false;
  }
  return true;
}
