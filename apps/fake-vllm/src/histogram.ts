/** vLLM's bucket bounds for `vllm:time_to_first_token_seconds` (seconds). */
export const TTFT_BUCKETS_S = [
  0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80, 160, 640, 2560,
];
/** vLLM's bucket bounds for `vllm:inter_token_latency_seconds` (seconds). */
export const ITL_BUCKETS_S = [
  0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80,
];

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

  /** Prometheus exposition lines for this histogram. */
  render(name: string, labels: string): string {
    let cumulative = 0;
    let text = '';
    for (let index = 0; index < this.bounds.length; index++) {
      cumulative += this.counts[index]!;
      text += `${name}_bucket{${labels},le="${this.bounds[index]}"} ${cumulative}\n`;
    }
    text += `${name}_bucket{${labels},le="+Inf"} ${this.count}\n`;
    text += `${name}_sum{${labels}} ${this.sum}\n`;
    text += `${name}_count{${labels}} ${this.count}\n`;
    return text;
  }
}
