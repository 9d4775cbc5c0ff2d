import * as hdr from 'hdr-histogram-js';

/** Latency metrics recorded per step, in microseconds. */
export const METRICS = [
  'ttft',
  'itl',
  'tpot',
  'e2e',
  'queueWait',
  'connect',
  'serverQueue',
  'clientAdded',
  'scheduleLag',
] as const;
export type MetricName = (typeof METRICS)[number];

/** One hdr histogram per metric; merges exactly across worker processes (encoded as compressed base64). */
export class MetricHistograms {
  readonly histograms: Record<MetricName, hdr.Histogram>;

  constructor() {
    this.histograms = Object.fromEntries(
      METRICS.map((name) => [
        name,
        hdr.build({
          lowestDiscernibleValue: 1,
          highestTrackableValue: 3_600_000_000,
          numberOfSignificantValueDigits: 3,
          useWebAssembly: false,
        }),
      ]),
    ) as Record<MetricName, hdr.Histogram>;
  }

  /** Records a duration given in milliseconds. Negative values (clock skew) clamp to 0. */
  recordMs(metric: MetricName, valueMs: number): void {
    if (!Number.isFinite(valueMs)) return;
    this.histograms[metric].recordValue(Math.max(1, Math.round(valueMs * 1000)));
  }

  encode(): Record<MetricName, string> {
    return Object.fromEntries(
      METRICS.map((name) => [name, hdr.encodeIntoCompressedBase64(this.histograms[name])]),
    ) as Record<MetricName, string>;
  }

  /** Adds histograms encoded by {@link encode} (from another process). */
  mergeEncoded(encoded: Record<MetricName, string>): void {
    for (const name of METRICS) this.histograms[name].add(hdr.decodeFromCompressedBase64(encoded[name], 32, false));
  }

  count(metric: MetricName): number {
    return this.histograms[metric].totalCount;
  }

  /** Percentile in ms, or null when nothing was recorded. */
  percentileMs(metric: MetricName, percentile: number): number | null {
    const histogram = this.histograms[metric];
    if (histogram.totalCount === 0) return null;
    return histogram.getValueAtPercentile(percentile) / 1000;
  }

  destroy(): void {
    for (const name of METRICS) this.histograms[name].destroy();
  }
}
