/** vLLM's bucket bounds for `vllm:time_to_first_token_seconds` (seconds). */
export const TTFT_BUCKETS_S = [
  0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80, 160, 640, 2560,
];
/** vLLM's bucket bounds for `vllm:inter_token_latency_seconds` (seconds). */
export const ITL_BUCKETS_S = [
  0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80,
];

/**
 * vLLM's bucket bounds for `vllm:e2e_request_latency_seconds`, `vllm:request_queue_time_seconds` and the other
 * request-phase histograms (seconds; `request_latency_buckets` in `vllm/v1/metrics/loggers.py`).
 */
export const REQUEST_LATENCY_BUCKETS_S = [
  0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120, 240, 480, 960, 1920, 7680,
];

/** vLLM's `build_1_2_5_buckets(max)`: 1, 2, 5, 10, 20, 50, ... up to `max` (token-count histograms). */
export function oneTwoFiveBuckets(max: number): number[] {
  const buckets: number[] = [];
  for (let scale = 1; ; scale *= 10) {
    for (const mantissa of [1, 2, 5]) {
      if (mantissa * scale > max) return buckets;
      buckets.push(mantissa * scale);
    }
  }
}

/**
 * A bound as Python's prometheus_client writes it (`floatToGoString`): buckets are floats, so `1` is `1.0`,
 * and from 1e6 on Go's exponent form (`1e+06`).
 */
export function prometheusFloat(value: number): string {
  if (value === Number.POSITIVE_INFINITY) return '+Inf';
  if (value >= 1e6) {
    const [mantissa = '', exponent = '0'] = value.toExponential().split('e');
    const digits = exponent.replace(/^[+-]/, '');
    return `${mantissa}e${exponent.startsWith('-') ? '-' : '+'}${digits.padStart(2, '0')}`;
  }
  return Number.isInteger(value) ? `${value}.0` : String(value);
}

/** A Prometheus-style cumulative histogram with fixed bounds. */
export class Histogram {
  readonly counts: number[];
  sum = 0;
  count = 0;

  constructor(readonly bounds: readonly number[]) {
    this.counts = new Array<number>(bounds.length + 1).fill(0);
  }

  /** Records `weight` observations of `value`. */
  observe(value: number, weight = 1): void {
    let index = 0;
    while (index < this.bounds.length && value > this.bounds[index]!) index++;
    this.counts[index]! += weight;
    this.sum += value * weight;
    this.count += weight;
  }

  /** Adds another histogram with the same bounds (for aggregation across engines and processes). */
  merge(other: { counts: readonly number[]; sum: number; count: number }): void {
    for (let index = 0; index < this.counts.length; index++) this.counts[index]! += other.counts[index] ?? 0;
    this.sum += other.sum;
    this.count += other.count;
  }

  /** Prometheus exposition lines for this histogram, values written as prometheus_client writes them. */
  render(name: string, labels: string): string {
    let cumulative = 0;
    let text = '';
    for (let index = 0; index < this.bounds.length; index++) {
      cumulative += this.counts[index]!;
      text += `${name}_bucket{${labels},le="${prometheusFloat(this.bounds[index]!)}"} ${prometheusFloat(cumulative)}\n`;
    }
    text += `${name}_bucket{${labels},le="+Inf"} ${prometheusFloat(this.count)}\n`;
    text += `${name}_count{${labels}} ${prometheusFloat(this.count)}\n`;
    text += `${name}_sum{${labels}} ${prometheusFloat(this.sum)}\n`;
    return text;
  }
}
