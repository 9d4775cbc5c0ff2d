import type { SweepOptions } from './options.js';

/** A gamma(shape, 1) draw. */
export function gammaSample(shape: number, random: () => number): number {
  // Marsaglia and Tsang; shape < 1 boosted by U^(1/shape).
  if (shape < 1) return gammaSample(shape + 1, random) * random() ** (1 / shape);
  const d = shape - 1 / 3;
  const c = 1 / Math.sqrt(9 * d);
  for (;;) {
    let x: number;
    let v: number;
    do {
      x = Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
      v = 1 + c * x;
    } while (v <= 0);
    v = v * v * v;
    const u = random();
    if (u < 1 - 0.0331 * x ** 4 || Math.log(u) < 0.5 * x * x + d * (1 - v + Math.log(v))) return d * v;
  }
}

/** Time to the next arrival at `rate` per second, in ms, for the configured distribution (mean 1000 / rate). */
export function interArrivalMs(
  kind: SweepOptions['arrival'],
  rate: number,
  shape: number,
  random: () => number,
): number {
  const mean = 1000 / rate;
  if (kind === 'poisson') return -Math.log(1 - random()) * mean;
  if (kind === 'gamma') return gammaSample(shape, random) * (mean / shape);
  return mean;
}
